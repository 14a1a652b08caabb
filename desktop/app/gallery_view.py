"""Every picture Familiar drew, newest first, with its prompt and seed; save or copy the chosen one."""

from __future__ import annotations

import shutil
from pathlib import Path

from PySide6.QtCore import QSize, Qt
from PySide6.QtGui import QGuiApplication, QIcon, QImage
from PySide6.QtWidgets import (
    QFileDialog,
    QHBoxLayout,
    QLabel,
    QListView,
    QListWidget,
    QListWidgetItem,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from desktop.app.widgets import fitted_pixmap, heading
from store.library import Library
from store.models import GeneratedImage

THUMB = 128
PREVIEW = 384
CAPTION = 20


class GalleryView(QWidget):
    """Thumbnails on the left, the chosen picture and its details on the right."""

    def __init__(self, library: Library) -> None:
        super().__init__()
        self.library = library
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
        buttons.addWidget(self.save_button)
        buttons.addWidget(self.copy_button)
        buttons.addStretch(1)
        side.addLayout(buttons)
        side.addStretch(1)
        body.addLayout(side)
        layout.addLayout(body, 1)
        self.refresh()

    def refresh(self) -> None:
        self.images = self.library.gallery.list()
        self.grid.clear()
        for image in self.images:
            caption = image.prompt if len(image.prompt) <= CAPTION else image.prompt[: CAPTION - 1] + "\u2026"
            item = QListWidgetItem(QIcon(fitted_pixmap(image.thumbnail, THUMB)), caption)
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
        self.save_button.setEnabled(image is not None)
        self.copy_button.setEnabled(image is not None)
        if image is None:
            self.preview.setText("Pictures you ask for in the chat appear here.")
            self.details.clear()
            return
        self.preview.setPixmap(fitted_pixmap(image.path, PREVIEW))
        made = image.created_at.replace("T", " ")[:16]
        warning = image.params.get("warning") or "demo model"
        demo = f"\nMade by the {warning}." if image.params.get("demo") else ""
        self.details.setText(f"{image.prompt}\nseed {image.seed} \u00b7 {made} UTC{demo}")

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
