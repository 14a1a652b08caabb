"""What Ctrl+Z takes back: the window's recent library changes (remove, rename, delete a picture), newest last."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from PySide6.QtCore import QObject, Signal

from store.errors import StoreError

MAX_STEPS = 50


@dataclass(frozen=True)
class Step:
    """A change that was made: `text` says what ("Remove <bo>"), `undo` takes it back."""

    text: str
    undo: Callable[[], None]


class UndoHistory(QObject):
    """A stack of `Step`s. `undone(text)` fires after a step is taken back, `failed(message)` when it
    cannot be (the library changed since: e.g. the name was taken again, the trash was emptied)."""

    changed = Signal()
    undone = Signal(str)
    failed = Signal(str)

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._steps: list[Step] = []

    def push(self, text: str, undo: Callable[[], None]) -> None:
        self._steps = [*self._steps[-(MAX_STEPS - 1) :], Step(text, undo)]
        self.changed.emit()

    @property
    def next_text(self) -> str | None:
        """What Ctrl+Z would take back, or None."""
        return self._steps[-1].text if self._steps else None

    def undo(self) -> bool:
        """Take back the newest step; False when there is none or it could not be taken back."""
        if not self._steps:
            return False
        step = self._steps.pop()
        self.changed.emit()
        try:
            step.undo()
        except StoreError as exc:
            self.failed.emit(f"Could not undo \u201c{step.text}\u201d: {exc}")
            return False
        self.undone.emit(step.text)
        return True
