"""The training view: phase, progress, ETA and a live loss curve; cancel and resume; a finished run's
scores and one sample picture; the concept's run history (all read back from the library)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QComboBox,
    QFrame,
    QHBoxLayout,
    QLabel,
    QListWidget,
    QProgressBar,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from desktop.app.engine_host import EngineHost
from desktop.app.history import describe_run, describe_scores, epoch_losses, resumable_run
from desktop.app.loss_curve import LossCurve
from desktop.app.settings import AppSettings
from desktop.app.tasks import Report
from desktop.app.training import TrainingController
from desktop.app.widgets import fitted_pixmap, heading
from engine.progress import Notice, Progress
from store.library import Library
from store.models import GeneratedImage as StoredImage
from store.models import Run

if TYPE_CHECKING:
    from engine.inference.assistant import Assistant

SAMPLE_SIDE = 192


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
        """Show `name`'s latest run as the library has it (an interrupted run offers Resume)."""
        running = self.controller.running
        if running and self.controller.concept == name:
            self._buttons()
            return
        self.notice.hide()
        self.runs.clear()
        self.scores.clear()
        self.sample.clear()
        self.sample.setText("No sample yet")
        self.curve.set_points([])
        self.bar.reset()
        self.eta.clear()
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
        self._buttons()

    def _add_notice(self, text: str) -> None:
        shown = self.notice.text() if not self.notice.isHidden() else ""
        self.notice.setText(f"{shown}\n{text[:1].upper()}{text[1:]}".strip())
        self.notice.show()

    def _show_run(self, run: Run, step: int) -> None:
        """A stored run: its per-epoch curve, progress, status, warnings from its log, scores and sample."""
        for note in dict.fromkeys(line.message for line in self.library.runs.log_lines(run.id) if line.warning):
            self._add_notice(note)
        losses = epoch_losses(self.library, run)
        total = run.total_steps or 0
        self.curve.set_points(losses, total, [step for step, _ in losses], per_epoch=True)
        self.bar.setRange(0, max(total, 1))
        self.bar.setValue(step)
        self.phase.setText(f"Run {run.id}: {run.status}" + (f" ({run.message})" if run.message else ""))
        if run.status == "done":
            self.scores.setText("Scores on held-out photos: " + (describe_scores(run.metrics) or "none"))
            samples = [i for i in self.library.gallery.list(run.concept) if i.params.get("run") == run.id]
            if samples:
                self.sample.setPixmap(fitted_pixmap(samples[0].path, SAMPLE_SIDE))
                self.sample.setToolTip(samples[0].prompt)

    def _buttons(self) -> None:
        name = self.concept.currentText()
        running = self.controller.running
        self.start_button.setEnabled(bool(name) and not running)
        self.resume_button.setEnabled(bool(name) and not running and resumable_run(self.library, name) is not None)
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
        self.scores.clear()
        self.sample.clear()
        self.sample.setText("A sample is drawn when training ends")
        self.phase.setText("Starting\u2026")
        self.eta.clear()
        self._buttons()

    def _status(self, message: str | Notice) -> None:
        if isinstance(message, Notice):  # a warning to keep in view, e.g. a remote kNN fallback
            self._add_notice(message.text)
            return
        self.phase.setText(message[:1].upper() + message[1:])

    def _progress(self, update: Progress) -> None:
        step, total = update.step, update.total
        if not self.curve.points:  # the run's first update: it is in the library now
            self.runs.clear()
            self.runs.addItems([describe_run(run) for run in self.library.runs.list(self.controller.concept or "")])
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
            self._draw_sample(run)
        else:
            self.phase.setText(f"Run {run.id} {run.status}; Resume continues from its last checkpoint.")
        self.changed.emit()

    def _failed(self, message: str) -> None:
        self.phase.setText(f"Training failed: {message}")
        self._buttons()
        self.changed.emit()

    def _draw_sample(self, run: Run) -> None:
        """One picture of the new concept, kept in the gallery and tied to the run."""
        params = {"run": run.id, "via": "training sample"}

        def job(library: Library, assistant: Assistant, attached: dict[str, int], _report: Report) -> StoredImage:
            from desktop.services.conversation import attach_current
            from desktop.services.drawing import draw_into_gallery

            attach_current(library, assistant, [run.concept], attached)
            return draw_into_gallery(library, assistant, f"A photo of <{run.concept}>.", params=params)

        self.sample.setText("Drawing a sample\u2026")
        self.engine.submit(job, done=lambda _image: self._sample_done(run), failed=self._sample_failed)

    def _sample_done(self, run: Run) -> None:
        if self.concept.currentText() == run.concept and not self.controller.running:
            self.show_concept(run.concept)
        self.changed.emit()

    def _sample_failed(self, message: str) -> None:
        self.sample.setText("No sample")
        self.sample.setToolTip(message)
