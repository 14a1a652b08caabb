"""Runs `desktop.personalize.train_concept` on its own worker thread and relays its callbacks as signals."""

from __future__ import annotations

import threading
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from PySide6.QtCore import QObject, Signal

from desktop.app.settings import AppSettings
from desktop.app.tasks import Report, Runner
from store.library import Library

if TYPE_CHECKING:
    from desktop.personalize import TrainOptions


class TrainingController(QObject):
    """One training run at a time. `progress` carries the trainer's Progress, `status` its phase lines,
    `finished` the library's Run record (done or cancelled), `failed` a message."""

    started = Signal(str)
    progress = Signal(object)
    status = Signal(str)
    finished = Signal(object)
    failed = Signal(str)

    def __init__(self, data_dir: Path, overrides: Mapping[str, Any], parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.data_dir = data_dir
        self.overrides = dict(overrides)
        self.runner = Runner(1, self)
        self.concept: str | None = None
        self._cancel = threading.Event()

    @property
    def running(self) -> bool:
        return self.runner.busy

    def start(self, name: str, settings: AppSettings, resume: bool = False) -> bool:
        """Start (or resume) training `name`; False when a run is already going."""
        if self.running:
            return False
        self.concept = name
        self._cancel.clear()
        self.runner.submit(
            lambda report: self._train(name, settings, resume, report),
            done=self._done,
            failed=self._failed,
            progress=self._relay,
        )
        self.started.emit(name)
        return True

    def cancel(self) -> None:
        """Stop at the next step; the trainer saves a checkpoint first, so Resume continues from there."""
        self._cancel.set()

    def options(self, settings: AppSettings) -> TrainOptions:
        """The run's options: model, device and index from the settings, then the injected overrides."""
        from desktop.personalize import TrainOptions

        chosen = {
            "model": settings.model,
            "device": settings.device,
            "index": settings.index_folder or None,
            "embedder_weights": settings.embedder_weights or None,
        }
        return TrainOptions(**{**chosen, **self.overrides})

    def _train(self, name: str, settings: AppSettings, resume: bool, report: Report) -> Any:
        from desktop.personalize import train_concept

        options = self.options(settings)
        with Library.open(self.data_dir) as library:
            return train_concept(
                library,
                name,
                options,
                progress=lambda update: report(update),
                cancelled=self._cancel.is_set,
                status=lambda message: report(message),
                resume=resume,
            )

    def _relay(self, update: object) -> None:
        if isinstance(update, str):
            self.status.emit(update)
        else:
            self.progress.emit(update)

    def _done(self, run: object) -> None:
        self.concept = None
        self.finished.emit(run)

    def _failed(self, message: str) -> None:
        self.concept = None
        self.failed.emit(message)
