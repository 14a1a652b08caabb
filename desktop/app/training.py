"""Runs `desktop.services.personalize.train_concept` on the engine's model thread, with the model the app already
loaded, and relays its callbacks as signals.

Training switches that model to train mode and attaches the concept being trained, so it must never overlap a
chat turn or a drawing: it runs as one job on the engine's single thread (behind whatever is already queued),
and while it is queued or running the engine's `training` names the concept, so the views refuse new model
work with a message instead of queueing it behind a run of several minutes."""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from PySide6.QtCore import QObject, Signal

from desktop.app.engine_host import EngineHost
from desktop.app.settings import AppSettings
from desktop.app.tasks import Report, Runner
from engine.progress import Progress
from store.library import Library
from store.models import RunCheck

if TYPE_CHECKING:
    from desktop.services.personalize import TrainOptions
    from engine.inference.assistant import Assistant


class TrainingController(QObject):
    """One training run at a time. `progress` carries the trainer's `engine.progress.Progress` events, `status`
    its phase lines (a `str`) and warnings to keep in view (an `engine.progress.Notice`, e.g. a remote kNN fallback),
    `checked` each check the run keeps (a `store.models.RunCheck`: scores and sample picture, before training and at
    every checkpoint), `finished` the library's Run record (done or cancelled), `failed` a message."""

    started = Signal(str)
    progress = Signal(object)
    status = Signal(object)
    checked = Signal(object)
    finished = Signal(object)
    failed = Signal(str)

    def __init__(self, engine: EngineHost, overrides: Mapping[str, Any], parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.engine = engine
        self.overrides = dict(overrides)
        self.concept: str | None = None
        self._cancel = threading.Event()

    @property
    def runner(self) -> Runner:
        """The engine's runner: training is one of its jobs."""
        return self.engine.runner

    @property
    def running(self) -> bool:
        """A run is queued on the model's thread or running there."""
        return self.concept is not None

    def start(self, name: str, settings: AppSettings, resume: bool = False) -> bool:
        """Start (or resume) training `name`; False when a run is already going."""
        if self.running:
            return False
        self.concept = name
        self.engine.training = name
        self._cancel.clear()
        options = self.options(settings)

        def job(library: Library, assistant: Assistant, attached: dict[str, int], report: Report) -> Any:
            return self._train(library, assistant, attached, report, name, options, resume)

        self.engine.submit(job, done=self._done, failed=self._failed, progress=self._relay)
        self.started.emit(name)
        return True

    def cancel(self) -> None:
        """Stop at the next step; the trainer saves a checkpoint first, so Resume continues from there."""
        self._cancel.set()

    def options(self, settings: AppSettings) -> TrainOptions:
        """The run's options: model, device, index and the remote kNN service (only when the user turned it on)
        from the settings, then the injected overrides."""
        from desktop.services.personalize import TrainOptions

        chosen = {
            "model": settings.model,
            "device": settings.device,
            "index": settings.index_folder or None,
            "embedder_weights": settings.embedder_weights or None,
            "remote_knn_url": settings.remote_knn_service,
        }
        return TrainOptions(**{**chosen, **self.overrides})

    def _train(
        self,
        library: Library,
        assistant: Assistant,
        attached: dict[str, int],
        report: Report,
        name: str,
        options: TrainOptions,
        resume: bool,
    ) -> Any:
        from desktop.services.estimate import won_t_fit
        from desktop.services.personalize import train_concept
        from engine.errors import InsufficientMemoryError

        attached.clear()  # train_concept detaches every concept; chat re-attaches the ones it mentions
        try:
            return train_concept(
                library,
                name,
                options,
                progress=lambda update: report(update),
                cancelled=self._cancel.is_set,
                status=lambda message: report(message),
                resume=resume,
                assistant=assistant,
                checked=lambda check: report(check),
            )
        except InsufficientMemoryError as exc:
            raise InsufficientMemoryError(won_t_fit(str(exc), str(assistant.loaded.device))) from exc
        finally:
            attached.clear()

    def _relay(self, update: object) -> None:
        if isinstance(update, Progress):
            self.progress.emit(update)
        elif isinstance(update, RunCheck):
            self.checked.emit(update)
        else:
            self.status.emit(update)

    def _ended(self) -> None:
        self.concept = None
        self.engine.training = None

    def _done(self, run: object) -> None:
        self._ended()
        self.finished.emit(run)

    def _failed(self, message: str) -> None:
        self._ended()
        self.failed.emit(message)
