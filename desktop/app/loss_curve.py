"""A live loss curve drawn with QPainter: raw losses faint, their moving average bold, epochs marked."""

from __future__ import annotations

from PySide6.QtCore import QPointF, QRectF, Qt
from PySide6.QtGui import QColor, QPainter, QPainterPath, QPen
from PySide6.QtWidgets import QSizePolicy, QWidget

SMOOTHING = 0.8


class LossCurve(QWidget):
    """Plots (step, loss) points: live, one per optimizer step (`add`), drawn raw and smoothed; or, for a
    run read back from the library, one mean per epoch (`set_points(..., per_epoch=True)`)."""

    def __init__(self) -> None:
        super().__init__()
        self.points: list[tuple[int, float]] = []
        self.epoch_steps: list[int] = []
        self.total_steps = 0
        self.per_epoch = False
        self.setMinimumHeight(180)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)

    def set_points(
        self,
        points: list[tuple[int, float]],
        total_steps: int = 0,
        epoch_steps: list[int] | None = None,
        per_epoch: bool = False,
    ) -> None:
        self.points = list(points)
        self.total_steps = total_steps
        self.epoch_steps = list(epoch_steps or [])
        self.per_epoch = per_epoch
        self.update()

    def add(self, step: int, loss: float, total_steps: int) -> None:
        self.points.append((step, loss))
        self.total_steps = total_steps
        self.update()

    def smoothed(self) -> list[tuple[int, float]]:
        """Exponential moving average of the losses (the bold line)."""
        out: list[tuple[int, float]] = []
        average = None
        for step, loss in self.points:
            average = loss if average is None else SMOOTHING * average + (1 - SMOOTHING) * loss
            out.append((step, average))
        return out

    def paintEvent(self, _event: object) -> None:
        painter = QPainter(self)
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        painter.fillRect(self.rect(), QColor("#ffffff"))
        metrics = painter.fontMetrics()
        left, bottom = metrics.horizontalAdvance("00.00") + 12, metrics.height() + 10
        plot = QRectF(left, 10, self.width() - left - 12, self.height() - bottom - 10)
        painter.setPen(QPen(QColor("#c0c0c0"), 1))
        painter.drawRect(plot)
        if not self.points:
            painter.setPen(QColor("#808080"))
            painter.drawText(plot, Qt.AlignmentFlag.AlignCenter, "The loss appears here as training runs")
            return
        losses = [loss for _, loss in self.points]
        low, high = min(losses), max(losses)
        if high - low < 1e-6:
            low, high = low - 0.5, high + 0.5
        last_step = max(self.total_steps, self.points[-1][0], 1)

        def at(step: float, loss: float) -> QPointF:
            return QPointF(
                plot.left() + plot.width() * step / last_step,
                plot.bottom() - plot.height() * (loss - low) / (high - low),
            )

        painter.setPen(QPen(QColor("#e8e8e8"), 1, Qt.PenStyle.DashLine))
        for step in self.epoch_steps:
            x = at(step, low).x()
            painter.drawLine(QPointF(x, plot.top()), QPointF(x, plot.bottom()))
        painter.setPen(QColor("#404040"))
        painter.drawText(
            QRectF(0, plot.top() - 2, left - 6, metrics.height()), Qt.AlignmentFlag.AlignRight, f"{high:.2f}"
        )
        painter.drawText(
            QRectF(0, plot.bottom() - metrics.height() + 2, left - 6, metrics.height()),
            Qt.AlignmentFlag.AlignRight,
            f"{low:.2f}",
        )
        painter.drawText(
            QRectF(plot.left(), plot.bottom() + 4, plot.width(), metrics.height()),
            Qt.AlignmentFlag.AlignHCenter,
            f"step (of {last_step})   "
            + ("mean loss of each epoch" if self.per_epoch else "light: loss of each step, bold: moving average"),
        )
        bold = QPen(QColor("#1f5fbf"), 2)
        lines = [(self.points, bold)] if self.per_epoch else [(self.points, QPen(QColor("#a8c4e8"), 1))]
        if not self.per_epoch:
            lines.append((self.smoothed(), bold))
        for points, pen in lines:
            path = QPainterPath(at(*points[0]))
            for step, loss in points[1:]:
                path.lineTo(at(step, loss))
            painter.setPen(pen)
            painter.drawPath(path)
        if self.per_epoch or len(self.points) == 1:
            painter.setPen(bold)
            for step, loss in self.points:
                painter.drawEllipse(at(step, loss), 3, 3)
