"""A one-line prompt editor where typing `<` offers the library's concept names (QCompleter popup)."""

from __future__ import annotations

import re

from PySide6.QtCore import QStringListModel, Qt
from PySide6.QtGui import QKeyEvent
from PySide6.QtWidgets import QCompleter, QLineEdit

PARTIAL_MENTION = re.compile(r"<([\w-]*)$")
POPUP_KEYS = {Qt.Key.Key_Enter, Qt.Key.Key_Return, Qt.Key.Key_Tab, Qt.Key.Key_Backtab, Qt.Key.Key_Escape}


class MentionEdit(QLineEdit):
    """Completes `<partial` to `<name>` from `set_names`; the rest of the text is left alone."""

    def __init__(self) -> None:
        super().__init__()
        self.names = QStringListModel([], self)
        self.completer = QCompleter(self.names, self)
        self.completer.setWidget(self)
        self.completer.setCaseSensitivity(Qt.CaseSensitivity.CaseInsensitive)
        self.completer.setCompletionMode(QCompleter.CompletionMode.PopupCompletion)
        self.completer.activated.connect(self.insert_completion)
        self.textEdited.connect(self._offer)

    def set_names(self, names: list[str]) -> None:
        self.names.setStringList(names)

    def partial(self) -> re.Match[str] | None:
        """The `<partial` mention just before the cursor, if any."""
        return PARTIAL_MENTION.search(self.text()[: self.cursorPosition()])

    def _offer(self, _text: str) -> None:
        match = self.partial()
        if match is None or not self.names.stringList():
            self.completer.popup().hide()
            return
        self.completer.setCompletionPrefix(match.group(1))
        if self.completer.completionCount() == 0:
            self.completer.popup().hide()
            return
        self.completer.popup().setCurrentIndex(self.completer.completionModel().index(0, 0))
        rect = self.cursorRect()
        rect.setWidth(160)
        self.completer.complete(rect)

    def insert_completion(self, name: str) -> None:
        """Replace the `<partial` before the cursor with `<name> `."""
        match = self.partial()
        if match is None:
            return
        cursor = self.cursorPosition()
        text = self.text()
        self.setText(f"{text[: match.start()]}<{name}> {text[cursor:]}")
        self.setCursorPosition(match.start() + len(name) + 3)

    def keyPressEvent(self, event: QKeyEvent) -> None:
        if self.completer.popup().isVisible() and event.key() in POPUP_KEYS:
            event.ignore()  # the completer's popup handles these
            return
        super().keyPressEvent(event)
