"""Long work off the GUI thread: plain functions run on a private thread pool, and their progress
callback, result and error come back to the GUI thread as Qt signals (queued connections)."""

from __future__ import annotations

import sys
import traceback
from collections.abc import Callable
from typing import Any

from PySide6.QtCore import QObject, QRunnable, QThreadPool, Signal

from engine.errors import EngineError
from store.errors import StoreError

Report = Callable[[Any], None]
Work = Callable[[Report], Any]


def user_message(exc: BaseException) -> str:
    """One line for the user: the project's own errors say what to do; anything else is named."""
    if isinstance(exc, EngineError | StoreError):
        return str(exc)
    traceback.print_exception(exc, file=sys.stderr)
    return f"unexpected error: {type(exc).__name__}: {exc}"


class _Signals(QObject):
    progress = Signal(object)
    done = Signal(object)
    failed = Signal(str)


class _Task(QRunnable):
    def __init__(self, work: Work, signals: _Signals) -> None:
        super().__init__()
        self.setAutoDelete(False)
        self._work = work
        self.signals = signals

    def run(self) -> None:
        try:
            result = self._work(self.signals.progress.emit)
        except BaseException as exc:  # every failure must reach the GUI, or it would wait forever
            self.signals.failed.emit(user_message(exc))
        else:
            self.signals.done.emit(result)


class Runner(QObject):
    """A pool of `threads` worker threads; `idle` fires (on the GUI thread) when the last task ends."""

    idle = Signal()

    def __init__(self, threads: int, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._pool = QThreadPool(self)
        self._pool.setMaxThreadCount(threads)
        self._live: set[_Task] = set()

    @property
    def busy(self) -> bool:
        return bool(self._live)

    def submit(
        self,
        work: Work,
        done: Callable[[Any], None] | None = None,
        failed: Callable[[str], None] | None = None,
        progress: Callable[[Any], None] | None = None,
    ) -> None:
        """Run `work(report)` on the pool; `report(x)` in the worker calls `progress(x)` here."""
        signals = _Signals(self)
        task = _Task(work, signals)
        if progress is not None:
            signals.progress.connect(progress)
        signals.done.connect(lambda result: self._finish(task, done, result))
        signals.failed.connect(lambda message: self._finish(task, failed, message))
        self._live.add(task)
        self._pool.start(task)

    def _finish(self, task: _Task, handler: Callable[[Any], None] | None, value: Any) -> None:
        self._live.discard(task)
        task.signals.deleteLater()
        if handler is not None:
            handler(value)
        if not self._live:
            self.idle.emit()

    def wait(self, timeout_ms: int = -1) -> bool:
        """Block until every started task has returned (their signals are delivered later)."""
        return self._pool.waitForDone(timeout_ms)
