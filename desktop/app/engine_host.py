"""The loaded model, owned by one worker thread: loading, chat turns, drawing, instant concepts and training
run there in order, so no two of them ever use the model at once.

Engine modules are imported inside the jobs (in the worker), never at import time, so the window shows
before torch is imported. Jobs queue on a single thread: a turn asked for while the model is still
loading simply waits behind the load. A training run holds the thread for minutes, so while one is queued
or running (`training`), views refuse new model work with `busy_reason()` instead of queueing it."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from PySide6.QtCore import QObject, Signal

from desktop.app.settings import AppSettings
from desktop.app.tasks import Report, Runner

if TYPE_CHECKING:
    from engine.inference.assistant import Assistant
    from engine.progress import Progress
    from store.library import Library

HOW_TO_SET_A_MODEL = (
    "To use a real model, open Settings and press \u201cGet a model\u2026\u201d (it shows the download's size and "
    "licence first), or choose a Chameleon-family model folder you already have and press \u201cCheck and load\u201d."
)


@dataclass(frozen=True)
class ModelInfo:
    """What the status bar and the demo banner need to know about the loaded model."""

    source: str
    device: str
    is_demo: bool
    quantized: bool
    notice: str | None
    demo_aligner: str | None = None
    """The Aligner shipped for the demo model, when this is the demo and the file is there."""


class EngineHost(QObject):
    """Loads the model in the background and runs jobs that need it, one at a time."""

    status = Signal(str)
    ready = Signal(object)
    failed = Signal(str)

    def __init__(self, data_dir: Path, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.data_dir = data_dir
        self.runner = Runner(1, self)
        self.state = "idle"
        self.info: ModelInfo | None = None
        self.cancel_event = threading.Event()
        self.training: str | None = None
        """The concept a training run on this model is for, from when it is submitted until it ends."""
        self.cache: dict[Any, Any] = {}
        """Things jobs keep for the loaded model (e.g. Aligners); emptied when another model loads."""
        self._assistant: Assistant | None = None
        self._attached: dict[str, int] = {}

    def load(self, settings: AppSettings) -> None:
        """Load (or reload) the model that `settings` names."""
        self.state = "loading"
        self.info = None
        after = f" after the training run of <{self.training}> ends" if self.training else ""
        self.status.emit(f"Loading {'the demo model' if settings.model == 'demo' else settings.model}{after}\u2026")
        self.runner.submit(
            lambda report: self._load(settings, report), done=self._loaded, failed=self._failed, progress=self._status
        )

    def _load(self, settings: AppSettings, report: Report) -> ModelInfo:
        from engine.aligner.model import demo_aligner_path
        from engine.inference.assistant import Assistant
        from engine.model.loading import load_model

        self._assistant = None
        self._attached.clear()
        self.cache.clear()
        loaded = load_model(settings.model, device=settings.device, quantize=settings.quantize, progress=report)
        self._assistant = Assistant(loaded)
        demo_aligner = demo_aligner_path()
        return ModelInfo(
            source=loaded.source,
            device=str(loaded.device),
            is_demo=loaded.is_demo,
            quantized=loaded.quantized,
            notice=self._assistant.notice,
            demo_aligner=str(demo_aligner) if loaded.is_demo and demo_aligner.is_file() else None,
        )

    def busy_reason(self) -> str | None:
        """Why new model work would have to wait for minutes (a training run), or None."""
        if self.training is None:
            return None
        return (
            f"The model is busy training <{self.training}>: try again when the run finishes, or cancel it in the "
            "Training view."
        )

    def aligner_for(self, settings: AppSettings) -> tuple[str | None, str]:
        """The Aligner file instant concepts would use with the loaded model, or None and why there is none.

        The settings' Aligner file wins; the demo model has its own. Whether a file was made for this base
        model is checked when it is used (the check needs torch)."""
        if self.info is None:
            return None, "Instant concepts need the model: it is not loaded yet."
        if settings.aligner:
            if Path(settings.aligner).expanduser().is_file():
                return str(Path(settings.aligner).expanduser()), ""
            return None, f"The Aligner file {settings.aligner} (Settings) does not exist."
        if self.info.demo_aligner is not None:
            return self.info.demo_aligner, ""
        return None, (
            "Instant concepts need an Aligner trained for this model: train one with `familiar aligner train` "
            "and choose its file in Settings."
        )

    def _status(self, update: Progress) -> None:
        self.status.emit(f"{update.phase.capitalize()}\u2026")

    def _loaded(self, info: ModelInfo) -> None:
        self.state = "ready"
        self.info = info
        self.status.emit(f"Model ready: {'demo model' if info.is_demo else info.source} on {info.device}")
        self.ready.emit(info)

    def _failed(self, message: str) -> None:
        self.state = "failed"
        self.status.emit(f"The model could not be loaded: {message}")
        self.failed.emit(message)

    def submit(
        self,
        job: Callable[[Library, Assistant, dict[str, int], Report], Any],
        done: Callable[[Any], None],
        failed: Callable[[str], None],
        progress: Callable[[Any], None] | None = None,
    ) -> None:
        """Run `job(library, assistant, attached, report)` on the model's thread, with a Library opened
        there (a Library holds one SQLite connection and must stay in its thread)."""
        self.cancel_event.clear()
        self.runner.submit(lambda report: self._run(job, report), done=done, failed=failed, progress=progress)

    def _run(self, job: Callable[[Library, Assistant, dict[str, int], Report], Any], report: Report) -> Any:
        from engine.errors import EngineError
        from store.library import Library

        if self._assistant is None:
            raise EngineError("the model is not loaded; check the model folder in Settings")
        with Library.open(self.data_dir) as library:
            return job(library, self._assistant, self._attached, report)

    def cancel(self) -> None:
        """Ask the running chat or drawing to stop at its next step (training has its own cancel)."""
        self.cancel_event.set()
