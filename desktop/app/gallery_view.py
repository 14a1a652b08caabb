"""Every picture Familiar drew, newest first, with its prompt and seed; save, copy or delete the chosen one
(Delete, undone with Ctrl+Z), from the buttons or a right click."""

from __future__ import annotations

import shutil
from pathlib import Path

from PySide6.QtCore import QPoint, QSize, Qt, Signal
from PySide6.QtGui import QAction, QGuiApplication, QIcon, QImage, QKeySequence
from PySide6.QtWidgets import (
    QFileDialog,
    QHBoxLayout,
    QLabel,
    QListView,
    QListWidget,
    QListWidgetItem,
    QMenu,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from desktop.app.undo import UndoHistory
from desktop.app.widgets import fitted_pixmap, heading
from store.library import Library
from store.models import GeneratedImage

THUMB = 128
PREVIEW = 384
CAPTION = 20


class GalleryView(QWidget):
    """Thumbnails on the left, the chosen picture and its details on the right. `changed` fires after a
    picture is deleted."""

    changed = Signal()

    def __init__(self, library: Library, history: UndoHistory) -> None:
        super().__init__()
        self.library = library
        self.history = history
        self.images: list[GeneratedImage] = []
        layout = QVBoxLayout(self)
        layout.addWidget(heading("Gallery"))
        body = QHBoxLayout()
        self.grid = QListWidget()
        self.grid.setViewMode(QListView.ViewMode.IconMode)
        self.grid.setIconSize(QSize(THUMB, THUMB))
        self.grid.setGridSize(QSize(THUMB + 24, THUMB + 40))
        self.grid.setWordWrap(False)
        self.grid.setResizeMode(QListView.ResizeMode.Adjust)
        self.grid.setMovement(QListView.Movement.Static)
        self.grid.currentRowChanged.connect(self.show_image)
        self.grid.setContextMenuPolicy(Qt.ContextMenuPolicy.CustomContextMenu)
        self.grid.customContextMenuRequested.connect(self._show_menu)
        body.addWidget(self.grid, 1)
        side = QVBoxLayout()
        self.preview = QLabel("Pictures you ask for in the chat appear here.")
        self.preview.setFixedSize(PREVIEW, PREVIEW)
        self.preview.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.preview.setWordWrap(True)
        self.preview.setStyleSheet("background: #f0f0f0; color: #777;")
        side.addWidget(self.preview)
        self.details = QLabel()
        self.details.setTextFormat(Qt.TextFormat.PlainText)
        self.details.setWordWrap(True)
        self.details.setMaximumWidth(PREVIEW)
        self.details.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        side.addWidget(self.details)
        buttons = QHBoxLayout()
        self.save_button = QPushButton("Save\u2026")
        self.save_button.clicked.connect(self._ask_save)
        self.copy_button = QPushButton("Copy")
        self.copy_button.clicked.connect(self.copy)
        self.delete_button = QPushButton("Delete")
        self.delete_button.setToolTip("Delete this picture (Del); Ctrl+Z brings it back")
        self.delete_button.clicked.connect(self.delete_current)
        buttons.addWidget(self.save_button)
        buttons.addWidget(self.copy_button)
        buttons.addWidget(self.delete_button)
        buttons.addStretch(1)
        side.addLayout(buttons)
        side.addStretch(1)
        body.addLayout(side)
        layout.addLayout(body, 1)
        self.delete_action = QAction("Delete", self)
        self.delete_action.setShortcut(QKeySequence(QKeySequence.StandardKey.Delete))
        self.delete_action.setShortcutContext(Qt.ShortcutContext.WidgetWithChildrenShortcut)
        self.delete_action.triggered.connect(self.delete_current)
        self.addAction(self.delete_action)
        self.refresh()

    def refresh(self) -> None:
        self.images = self.library.gallery.list()
        self.grid.clear()
        for image in self.images:
            item = QListWidgetItem(QIcon(fitted_pixmap(image.thumbnail, THUMB)), _short(image.prompt))
            item.setToolTip(image.prompt)
            self.grid.addItem(item)
        if self.images:
            self.grid.setCurrentRow(0)
        else:
            self.show_image(-1)

    def current(self) -> GeneratedImage | None:
        row = self.grid.currentRow()
        return self.images[row] if 0 <= row < len(self.images) else None

    def show_image(self, row: int) -> None:
        image = self.images[row] if 0 <= row < len(self.images) else None
        for button in (self.save_button, self.copy_button, self.delete_button):
            button.setEnabled(image is not None)
        if image is None:
            self.preview.setText("Pictures you ask for in the chat appear here.")
            self.details.clear()
            return
        self.preview.setPixmap(fitted_pixmap(image.path, PREVIEW))
        made = image.created_at.replace("T", " ")[:16]
        warning = image.params.get("warning") or "demo model"
        demo = f"\nMade by the {warning}." if image.params.get("demo") else ""
        self.details.setText(f"{image.prompt}\nseed {image.seed} \u00b7 {made} UTC{demo}")

    def menu(self) -> QMenu:
        """The chosen picture's menu: Save, Copy, Delete."""
        menu = QMenu(self)
        menu.addAction("Save\u2026", self._ask_save)
        menu.addAction("Copy", self.copy)
        menu.addSeparator()
        menu.addAction(self.delete_action)
        return menu

    def _show_menu(self, where: QPoint) -> None:
        if self.current() is not None:
            self.menu().popup(self.grid.viewport().mapToGlobal(where))

    def delete_current(self) -> None:
        """Delete the chosen picture; Ctrl+Z adds it back (same picture, prompt, seed and concepts)."""
        if (image := self.current()) is None:
            return
        data = image.path.read_bytes()
        row = self.grid.currentRow()
        self.library.gallery.remove(image.id)

        def undo() -> None:
            self.library.gallery.add(
                data, prompt=image.prompt, seed=image.seed, version_ids=image.version_ids, params=image.params
            )

        self.history.push(f"Delete the picture \u201c{_short(image.prompt)}\u201d", undo)
        self.refresh()
        if self.images:
            self.grid.setCurrentRow(min(row, len(self.images) - 1))
        self.changed.emit()

    def copy(self) -> None:
        if (image := self.current()) is not None:
            QGuiApplication.clipboard().setImage(QImage(str(image.path)))

    def save_to(self, target: Path) -> None:
        if (image := self.current()) is not None:
            shutil.copyfile(image.path, target)

    def _ask_save(self) -> None:
        if (image := self.current()) is None:
            return
        target, _ = QFileDialog.getSaveFileName(
            self, "Save picture", str(Path.home() / f"familiar-{image.seed}.png"), "PNG (*.png)"
        )
        if target:
            self.save_to(Path(target))


def _short(prompt: str) -> str:
    return prompt if len(prompt) <= CAPTION else prompt[: CAPTION - 1] + "\u2026"
