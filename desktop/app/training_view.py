"""The training view: an estimate (steps, time, memory on the named device) before starting; phase, progress, ETA
and a live loss curve; a sample picture and recognition check before training and at every checkpoint; cancel and
resume; a finished run's verdict (raw numbers one click away), every step's loss and its checks; the concept's run
history, live while a run goes (all read back from the library)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QPixmap
from PySide6.QtWidgets import (
    QComboBox,
    QFrame,
    QHBoxLayout,
    QLabel,
    QListWidget,
    QProgressBar,
    QPushButton,
    QScrollArea,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from desktop.app.engine_host import EngineHost
from desktop.app.history import describe_run, resumable_run, run_losses
from desktop.app.loss_curve import LossCurve
from desktop.app.settings import AppSettings
from desktop.app.tasks import Report
from desktop.app.training import TrainingController
from desktop.app.widgets import heading
from desktop.services.verdict import verdict
from engine.progress import Notice, Progress
from store.library import Library
from store.models import Run, RunCheck

if TYPE_CHECKING:
    from desktop.services.estimate import TrainingEstimate
    from engine.inference.assistant import Assistant

SAMPLE_SIDE = 160
CHECK_SIDE = 56


def sample_pixmap(path: Path, side: int) -> QPixmap:
    """A sample picture scaled to `side`: small pictures (the demo's are 32x32) grow in sharp pixels."""
    pixmap = QPixmap(str(path))
    if pixmap.isNull():
        return pixmap
    small = max(pixmap.width(), pixmap.height()) < side
    how = Qt.TransformationMode.FastTransformation if small else Qt.TransformationMode.SmoothTransformation
    return pixmap.scaled(side, side, Qt.AspectRatioMode.KeepAspectRatio, how)


def check_caption(check: RunCheck) -> str:
    """e.g. "before · 1/2 yes · 1/1 no" or "step 12 · 2/2 yes": what the model answered at that check."""
    metrics = check.metrics
    parts = ["before" if check.step == 0 else f"step {check.step}"]
    for key, count_key, word in (
        ("recognition_positive", "held_out_photos", "yes"),
        ("recognition_negative", "held_out_negatives", "no"),
    ):
        value, count = metrics.get(key), metrics.get(count_key)
        if isinstance(value, int | float) and isinstance(count, int) and count:
            parts.append(f"{round(value * count)}/{count} {word}")
    return " \u00b7 ".join(parts)


class CheckStrip(QWidget):
    """The run's checks side by side: each sample picture with what the model answered, oldest first."""

    def __init__(self) -> None:
        super().__init__()
        self.row = QHBoxLayout(self)
        self.row.setContentsMargins(0, 0, 0, 0)
        self.row.addStretch(1)
        self.checks: list[RunCheck] = []

    def clear(self) -> None:
        self.checks = []
        while self.row.count() > 1:
            item = self.row.takeAt(0)
            if item is not None and item.widget() is not None:
                item.widget().deleteLater()

    def add(self, check: RunCheck) -> None:
        self.checks.append(check)
        cell = QWidget()
        column = QVBoxLayout(cell)
        column.setContentsMargins(2, 2, 2, 2)
        picture = QLabel()
        picture.setFixedSize(CHECK_SIDE, CHECK_SIDE)
        picture.setAlignment(Qt.AlignmentFlag.AlignCenter)
        picture.setStyleSheet("background: #f0f0f0; color: #777;")
        if check.path is not None:
            picture.setPixmap(sample_pixmap(check.path, CHECK_SIDE))
        else:
            picture.setText("no picture")
        caption = QLabel(check_caption(check))
        caption.setStyleSheet("color: #444; font-size: 10px;")
        column.addWidget(picture, alignment=Qt.AlignmentFlag.AlignHCenter)
        column.addWidget(caption, alignment=Qt.AlignmentFlag.AlignHCenter)
        self.row.insertWidget(self.row.count() - 1, cell)


def format_eta(seconds: float | None) -> str:
    if seconds is None:
        return ""
    seconds = round(seconds)
    return f"about {seconds // 60} min {seconds % 60:02d} s left" if seconds >= 60 else f"about {seconds} s left"


class TrainingView(QWidget):
    """Train the chosen concept; `changed` fires when a run ends (cards and gallery then refresh)."""

    changed = Signal()

    def __init__(
        self,
        library: Library,
        controller: TrainingController,
        engine: EngineHost,
        settings: Callable[[], AppSettings],
    ) -> None:
        super().__init__()
        self.library = library
        self.controller = controller
        self.engine = engine
        self.settings = settings
        layout = QVBoxLayout(self)
        layout.addWidget(heading("Training"))
        top = QHBoxLayout()
        top.addWidget(QLabel("Concept"))
        self.concept = QComboBox()
        self.concept.setMinimumWidth(160)
        self.concept.currentTextChanged.connect(self.show_concept)
        top.addWidget(self.concept)
        top.addStretch(1)
        self.start_button = QPushButton("Train")
        self.start_button.clicked.connect(lambda: self.start(self.concept.currentText()))
        self.resume_button = QPushButton("Resume")
        self.resume_button.clicked.connect(lambda: self.start(self.concept.currentText(), resume=True))
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setToolTip("Stop after this step; a checkpoint is saved and Resume continues from it")
        self.cancel_button.clicked.connect(self.cancel)
        for button in (self.start_button, self.resume_button, self.cancel_button):
            top.addWidget(button)
        layout.addLayout(top)
        self.estimate = QLabel()
        self.estimate.setWordWrap(True)
        self.estimate.setStyleSheet("color: #444;")
        layout.addWidget(self.estimate)
        self.estimated: TrainingEstimate | None = None
        self.estimated_for = ""
        self.live: Run | None = None
        """The running run's record, once it is in the library; its line in the run list follows each step."""

        self.notice = QLabel()
        self.notice.setWordWrap(True)
        self.notice.setObjectName("notice")
        self.notice.setStyleSheet("#notice { background: #fff4cc; border: 1px solid #e0c050; padding: 6px; }")
        layout.addWidget(self.notice)
        self.phase = QLabel()
        layout.addWidget(self.phase)
        bar_row = QHBoxLayout()
        self.bar = QProgressBar()
        self.bar.setFormat("%v / %m steps")
        bar_row.addWidget(self.bar, 1)
        self.eta = QLabel()
        self.eta.setMinimumWidth(150)
        bar_row.addWidget(self.eta)
        layout.addLayout(bar_row)
        self.curve = LossCurve()
        layout.addWidget(self.curve, 1)
        self.strip = CheckStrip()
        strip_scroll = QScrollArea()
        strip_scroll.setWidgetResizable(True)
        strip_scroll.setWidget(self.strip)
        strip_scroll.setFixedHeight(CHECK_SIDE + 34)
        strip_scroll.setFrameShape(QFrame.Shape.NoFrame)
        strip_scroll.setToolTip("A sample picture and the recognition check before training and at each checkpoint")
        layout.addWidget(strip_scroll)

        results = QHBoxLayout()
        self.sample = QLabel()
        self.sample.setFixedSize(SAMPLE_SIDE, SAMPLE_SIDE)
        self.sample.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.sample.setWordWrap(True)
        self.sample.setStyleSheet("background: #f0f0f0; color: #777;")
        results.addWidget(self.sample)
        column = QVBoxLayout()
        self.scores = QLabel()
        self.scores.setWordWrap(True)
        column.addWidget(self.scores)
        self.numbers_button = QToolButton()
        self.numbers_button.setText("Numbers")
        self.numbers_button.setCheckable(True)
        self.numbers_button.setToolTip("The raw scores behind the verdict")
        self.numbers = QLabel()
        self.numbers.setWordWrap(True)
        self.numbers.setStyleSheet("color: #555;")
        self.numbers_button.toggled.connect(self.numbers.setVisible)
        self.numbers.hide()
        self.numbers_button.hide()
        column.addWidget(self.numbers_button, alignment=Qt.AlignmentFlag.AlignLeft)
        column.addWidget(self.numbers)
        self.runs = QListWidget()
        self.runs.setMaximumHeight(110)
        column.addWidget(QLabel("Runs of this concept"))
        column.addWidget(self.runs)
        results.addLayout(column, 1)
        frame = QFrame()
        frame.setLayout(results)
        layout.addWidget(frame)

        controller.started.connect(self._started)
        controller.progress.connect(self._progress)
        controller.status.connect(self._status)
        controller.checked.connect(self._checked)
        controller.finished.connect(self._finished)
        controller.failed.connect(self._failed)
        self.refresh()

    def refresh(self) -> None:
        """Re-read the concept list, keeping the selection."""
        current = self.concept.currentText()
        names = [c.name for c in self.library.concepts.list()]
        self.concept.blockSignals(True)
        self.concept.clear()
        self.concept.addItems(names)
        if current in names:
            self.concept.setCurrentText(current)
        self.concept.blockSignals(False)
        self.show_concept(self.concept.currentText())

    def select(self, name: str) -> None:
        self.concept.setCurrentText(name)
        self.show_concept(name)

    def start(self, name: str, resume: bool = False) -> None:
        if name and self.controller.start(name, self.settings(), resume=resume):
            self.select(name)

    def cancel(self) -> None:
        self.controller.cancel()
        self.phase.setText("Stopping after this step and saving a checkpoint\u2026")
        self.cancel_button.setEnabled(False)

    def show_concept(self, name: str) -> None:
        """Show `name`'s latest run as the library has it (an interrupted run offers Resume) and an estimate."""
        running = self.controller.running
        if running and self.controller.concept == name:
            self._buttons()
            return
        self.notice.hide()
        self.runs.clear()
        self._clear_results()
        self.sample.setText("No sample yet")
        self.curve.set_points([])
        self.bar.reset()
        self.eta.clear()
        self.estimate.clear()
        self.estimated = None
        self.phase.setText("Choose a concept and press Train." if name else "Add a concept first.")
        if not name:
            self._buttons()
            return
        runs = self.library.runs.list(name)
        self.runs.addItems([describe_run(run) for run in runs])
        stopped = resumable_run(self.library, name)
        if stopped is not None:
            self.notice.setText(stopped.describe())
            self.notice.show()
            self._show_run(stopped.run, stopped.step)
        elif runs:
            self._show_run(runs[0], runs[0].step)
        if not running:
            self._estimate(name)
        self._buttons()

    def _estimate(self, name: str) -> None:
        """Ask the model's thread for the estimate of training `name` with the current settings."""
        if self.engine.state not in ("ready", "loading"):
            return
        options = self.controller.options(self.settings())

        def job(library: Library, assistant: Assistant, _attached: dict[str, int], _report: Report) -> object:
            from desktop.services.estimate import estimate_training

            return estimate_training(library, name, options, assistant)

        self.estimate.setText("Estimating the run\u2026")
        self.engine.submit(job, done=lambda result: self._estimated(name, result), failed=self._estimate_failed)

    def _estimated(self, name: str, result: TrainingEstimate) -> None:
        if self.concept.currentText() != name:
            return
        self.estimated = result
        self.estimated_for = name
        self.estimate.setText(result.describe())
        self.estimate.setStyleSheet("color: #9b1c1c;" if not result.fits else "color: #444;")
        self._buttons()

    def _estimate_failed(self, message: str) -> None:
        self.estimate.setText(f"No estimate: {message}")

    def _add_notice(self, text: str) -> None:
        shown = self.notice.text() if not self.notice.isHidden() else ""
        self.notice.setText(f"{shown}\n{text[:1].upper()}{text[1:]}".strip())
        self.notice.show()

    def _clear_results(self) -> None:
        self.scores.clear()
        self.numbers.clear()
        self.numbers.hide()
        self.numbers_button.setChecked(False)
        self.numbers_button.hide()
        self.sample.clear()
        self.sample.setToolTip("")
        self.strip.clear()

    def _show_run(self, run: Run, step: int) -> None:
        """A stored run: its loss curve (every step's), progress, status, warnings from its log, its checks, and
        a finished run's verdict with the chosen checkpoint's sample."""
        for note in dict.fromkeys(line.message for line in self.library.runs.log_lines(run.id) if line.warning):
            self._add_notice(note)
        losses, per_step = run_losses(self.library, run)
        total = run.total_steps or 0
        self.curve.set_points(losses, total, [step for step, _ in losses], per_epoch=not per_step)
        self.bar.setRange(0, max(total, 1))
        self.bar.setValue(step)
        self.phase.setText(f"Run {run.id}: {run.status}" + (f" ({run.message})" if run.message else ""))
        checks = self.library.runs.checks(run.id)
        for check in checks:
            self.strip.add(check)
        if run.status == "done":
            self._show_verdict(run)
            chosen = [c for c in checks if c.step == run.metrics.get("best_step") and c.path is not None]
            if chosen:
                self._show_sample(chosen[0], "the chosen checkpoint")
        elif checks:
            self._show_sample(checks[-1], "the latest check")

    def _show_verdict(self, run: Run) -> None:
        photos = len(self.library.concepts.photos(run.concept))
        judged = verdict(run.concept, run.metrics, photo_count=photos)
        step = run.metrics.get("best_step")
        chosen = f" (the checkpoint at step {step} was chosen)" if isinstance(step, int) else ""
        self.scores.setText(f"Run {run.id}{chosen}: " + " ".join(judged.lines()))
        self.numbers.setText(judged.numbers)
        self.numbers_button.setVisible(bool(judged.numbers))

    def _show_sample(self, check: RunCheck, which: str) -> None:
        if check.path is None:
            return
        self.sample.setPixmap(sample_pixmap(check.path, SAMPLE_SIDE))
        what = "before training" if check.step == 0 else f"at step {check.step}"
        self.sample.setToolTip(f"A photo of <{self.concept.currentText()}>, drawn {what} ({which})")

    def _buttons(self) -> None:
        name = self.concept.currentText()
        running = self.controller.running
        fits = self.estimated is None or self.estimated.fits
        self.start_button.setEnabled(bool(name) and not running and fits)
        self.resume_button.setEnabled(
            bool(name) and not running and fits and resumable_run(self.library, name) is not None
        )
        self.cancel_button.setEnabled(running and self.controller.concept == name)

    def _started(self, name: str) -> None:
        self.concept.blockSignals(True)
        self.concept.setCurrentText(name)
        self.concept.blockSignals(False)
        self.notice.hide()
        self.curve.set_points([])
        self.bar.reset()
        self.runs.clear()
        self.runs.addItems([describe_run(run) for run in self.library.runs.list(name)])
        self._clear_results()
        self.live = None
        if self.estimated_for != name:  # started from elsewhere (the wizard, a card) before an estimate for it
            self.estimate.clear()
        self.sample.setText("A sample is drawn before the first step and at each checkpoint")
        self.phase.setText("Starting\u2026")
        self.eta.clear()
        self._buttons()

    def _status(self, message: str | Notice) -> None:
        if isinstance(message, Notice):  # a warning to keep in view, e.g. a remote kNN fallback
            self._add_notice(message.text)
            return
        self.phase.setText(message[:1].upper() + message[1:])

    def _checked(self, check: RunCheck) -> None:
        """A check the running run just kept: into the strip, and its picture shown large."""
        if self.concept.currentText() != self.controller.concept:
            return
        self.strip.add(check)
        self._show_sample(check, "the latest check")

    def _live_runs(self) -> None:
        """The run list read again; the running run's line then follows every step (`_progress`)."""
        runs = self.library.runs.list(self.controller.concept or "")
        self.live = next((run for run in runs if run.status == "running"), None)
        self.runs.clear()
        self.runs.addItems([describe_run(run) for run in runs])

    def _progress(self, update: Progress) -> None:
        step, total = update.step, update.total
        if self.concept.currentText() == self.controller.concept:
            if self.live is None:  # the run's first update: it is in the library now
                self._live_runs()
            if self.live is not None and self.runs.count():
                message = f"epoch {update.epoch + 1}, loss {update.loss:.3f}" if update.loss is not None else ""
                live = replace(self.live, step=step, total_steps=total, message=message or self.live.message)
                self.runs.item(0).setText(describe_run(live))
        self.bar.setRange(0, total)
        self.bar.setValue(step)
        self.eta.setText(format_eta(update.eta_seconds))
        if self.cancel_button.isEnabled():
            epoch = f": epoch {update.epoch + 1}" if update.epoch is not None else ""
            self.phase.setText(f"{update.phase.capitalize()}{epoch}")
        if update.loss is not None:
            self.curve.add(step, update.loss, total)

    def _finished(self, run: Run) -> None:
        self.select(run.concept)
        if run.status == "done":
            self.phase.setText(f"Run {run.id} finished: the best checkpoint is now <{run.concept}>'s active version.")
        else:
            self.phase.setText(f"Run {run.id} {run.status}; Resume continues from its last checkpoint.")
        self.changed.emit()

    def _failed(self, message: str) -> None:
        self.phase.setText(f"Training failed: {message}")
        self._buttons()
        self.changed.emit()
