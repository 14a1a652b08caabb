"""Edit a concept: remove photos (✕), add photos (dropped or picked), change its kind and facts; Save applies
it all in one change of the library (any refused photo and nothing changes), Cancel drops it."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QPixmap
from PySide6.QtWidgets import (
    QComboBox,
    QFileDialog,
    QFormLayout,
    QFrame,
    QHBoxLayout,
    QLabel,
    QPlainTextEdit,
    QPushButton,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from desktop.app.tasks import Report, Runner
from desktop.app.widgets import heading, square_pixmap
from desktop.app.wizard import PHOTO_SIDE, PhotoStrip
from store.errors import InvalidValueError
from store.library import Library
from store.validation import KINDS, check_facts, check_photo_count, photo_count_warning


class EditorTile(QFrame):
    """A photo in the editor (one the concept has, by sha256, or a new file, by path) with a remove button."""

    removed = Signal(object)

    def __init__(self, key: str | Path, pixmap: QPixmap, label: str) -> None:
        super().__init__()
        self.key = key
        layout = QVBoxLayout(self)
        layout.setContentsMargins(2, 2, 2, 2)
        image = QLabel()
        image.setPixmap(pixmap)
        image.setToolTip(label)
        layout.addWidget(image)
        row = QHBoxLayout()
        name = QLabel(label)
        name.setStyleSheet("font-size: 10px; color: #555;")
        name.setMaximumWidth(PHOTO_SIDE - 26)
        row.addWidget(name, 1)
        self.remove = QToolButton()
        self.remove.setText("\u2715")
        self.remove.setToolTip("Remove this photo")
        self.remove.clicked.connect(lambda: self.removed.emit(key))
        row.addWidget(self.remove)
        layout.addLayout(row)


class ConceptEditor(QWidget):
    """The edit page for one concept (`open(name)`); `saved(name)` fires once the library has the changes."""

    saved = Signal(str)
    cancelled = Signal()

    def __init__(self, library: Library, runner: Runner) -> None:
        super().__init__()
        self.library = library
        self.runner = runner
        self.name = ""
        self.kept: list[str] = []  # sha256 of the concept's photos that stay
        self.removed: list[str] = []
        self.added: list[Path] = []
        self.busy = False
        layout = QVBoxLayout(self)
        self.title = heading("Edit")
        layout.addWidget(self.title)
        self.drop = PhotoStrip("Add photos\u2026", self._pick)
        self.drop.dropped.connect(self.add_files)
        self.count, self.tiles = self.drop.count, self.drop.tiles
        self.count.setWordWrap(True)
        layout.addWidget(self.drop)
        form = QFormLayout()
        self.kind = QComboBox()
        self.kind.addItems(KINDS)
        form.addRow("Kind", self.kind)
        self.facts = QPlainTextEdit()
        self.facts.setFixedHeight(96)
        form.addRow("Facts", self.facts)
        layout.addLayout(form)
        self.error = QLabel()
        self.error.setWordWrap(True)
        self.error.setTextFormat(Qt.TextFormat.PlainText)
        self.error.setStyleSheet("color: #9b1c1c;")
        layout.addWidget(self.error)
        buttons = QHBoxLayout()
        self.cancel = QPushButton("Cancel")
        self.cancel.clicked.connect(self.cancelled.emit)
        buttons.addWidget(self.cancel)
        buttons.addStretch(1)
        self.save = QPushButton("Save")
        self.save.setDefault(True)
        self.save.clicked.connect(self.apply)
        buttons.addWidget(self.save)
        layout.addLayout(buttons)
        layout.addStretch(1)

    def open(self, name: str) -> None:
        """Show `name`'s photos, kind and facts, with nothing changed yet."""
        concept = self.library.concepts.get(name)
        self.name = concept.name
        self.title.setText(f"Edit <{concept.name}>")
        self.kept, self.removed, self.added = [], [], []
        while (item := self.tiles.takeAt(0)) is not None:
            if widget := item.widget():
                widget.deleteLater()
        for photo in self.library.concepts.photos(concept.name):
            self.kept.append(photo.sha256)
            label = photo.original_name or photo.sha256[:12]
            self._tile(photo.sha256, square_pixmap(photo.thumbnail, PHOTO_SIDE), label)
        self.kind.setCurrentText(concept.kind)
        self.facts.setPlainText(concept.facts)
        self.error.clear()
        self._update()

    def add_files(self, paths: list[Path]) -> None:
        """New photos, checked by the store when Save is pressed."""
        for path in map(Path, paths):
            if path not in self.added:
                self.added.append(path)
                self._tile(path, square_pixmap(path, PHOTO_SIDE), f"new: {path.name}")
        self._update()

    def remove_photo(self, key: str | Path) -> None:
        if isinstance(key, Path):
            self.added = [p for p in self.added if p != key]
        elif key in self.kept:
            self.kept.remove(key)
            self.removed.append(key)
        for index in range(self.tiles.count()):
            tile = self.tiles.itemAt(index).widget()
            if isinstance(tile, EditorTile) and tile.key == key:
                self.tiles.takeAt(index)
                tile.deleteLater()
                break
        self._update()

    def photo_problem(self) -> str | None:
        """Why the photos as they stand cannot be saved, or None."""
        try:
            check_photo_count(len(self.kept) + len(self.added))
        except InvalidValueError as exc:
            return str(exc)
        return None

    def _tile(self, key: str | Path, pixmap: QPixmap, label: str) -> None:
        tile = EditorTile(key, pixmap, label)
        tile.removed.connect(self.remove_photo)
        self.tiles.addWidget(tile)

    def _update(self) -> None:
        total = len(self.kept) + len(self.added)
        changes = []
        if self.added:
            changes.append(f"{len(self.added)} to add")
        if self.removed:
            changes.append(f"{len(self.removed)} to remove")
        text = f"{total} photo{'s' if total != 1 else ''}" + (f" ({', '.join(changes)})" if changes else "")
        advice = self.photo_problem() or photo_count_warning(total)
        self.count.setText(
            f"{text}. Drop photos here to add them." + (f"\n{advice[0].upper()}{advice[1:]}." if advice else "")
        )
        self.count.setStyleSheet("color: #a15c00;" if advice else "")
        self.save.setEnabled(self.photo_problem() is None and not self.busy)

    def _pick(self) -> None:
        files, _ = QFileDialog.getOpenFileNames(
            self, "Add photos", str(Path.home()), "Photos (*.jpg *.jpeg *.png *.webp *.heic);;All files (*)"
        )
        self.add_files([Path(f) for f in files])

    def apply(self) -> None:
        """Save the changes in the background, all or nothing."""
        try:
            facts = check_facts(self.facts.toPlainText())
        except InvalidValueError as exc:
            self.error.setText(str(exc))
            return
        name, kind, added, removed = self.name, self.kind.currentText(), list(self.added), list(self.removed)
        root = self.library.root

        def work(_report: Report) -> str:
            with Library.open(root) as library:
                return library.concepts.edit(name, add=added, remove=removed, kind=kind, facts=facts).name

        self.busy = True
        self.error.setText("Saving\u2026")
        self._update()
        self.runner.submit(work, done=self._saved, failed=self._failed)

    def _saved(self, name: str) -> None:
        self.busy = False
        self.error.clear()
        self._update()
        self.saved.emit(name)

    def _failed(self, message: str) -> None:
        self.busy = False
        self.error.setText(f"Nothing was changed: {message}")
        self._update()
