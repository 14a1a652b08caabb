"""Desktop tests run Qt offscreen, and the app's settings file lives in a temporary folder per test.

GUI tests get `open_window` (a main window on a temporary library with the demo model loaded on the CPU
and quick training options) and `drop_files` (a file-manager drag and drop)."""

from __future__ import annotations

import gc
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

GUI_WAIT_MS = 90_000
QUICK_TRAINING = {
    "epochs": 1,
    "augment": False,
    "recognition_per_photo": 1,
    "generation_per_photo": 1,
    "qa_repeats": 1,
    "negatives": 2,
    "describe_photos": False,
    "bundled_index": False,
    "device": "cpu",
}


@pytest.fixture(autouse=True)
def private_settings(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The GUI's settings.json goes to a fresh folder, never the user's config folder."""
    folder = tmp_path_factory.mktemp("config")
    monkeypatch.setenv("FAMILIAR_CONFIG", str(folder))
    return folder


@pytest.fixture()
def open_window(qtbot: Any, tmp_path: Path) -> Iterator[Callable[..., Any]]:
    """`open_window(**training_overrides)`: a shown MainWindow on `tmp_path/library`, model loaded.

    Teardown stops every window's work and destroys it on this (the GUI) thread: left to Python's cyclic
    garbage collector, a window could be destroyed on whichever worker thread the collector ran in."""
    import shiboken6

    from desktop.app.main_window import AppContext, MainWindow
    from desktop.app.settings import AppSettings

    windows: list[MainWindow] = []

    def make(**overrides: object) -> MainWindow:
        context = AppContext(
            data_dir=tmp_path / "library",
            settings_path=tmp_path / "settings.json",
            settings=AppSettings(device="cpu"),
            train_overrides={**QUICK_TRAINING, **overrides},
        )
        window = MainWindow(context)
        windows.append(window)
        window.show()
        qtbot.waitUntil(lambda: window.engine.state == "ready", timeout=GUI_WAIT_MS)
        return window

    yield make
    for window in windows:
        if shiboken6.isValid(window):
            window.training.cancel()
            window.training.runner.wait()
            window.close()
            shiboken6.delete(window)
    gc.collect()


@pytest.fixture()
def drop_files() -> Callable[[Any, list[Path]], None]:
    """`drop_files(widget, paths)`: drag the files onto the widget and drop them."""
    from PySide6.QtCore import QMimeData, QPoint, QPointF, Qt, QUrl
    from PySide6.QtGui import QDragEnterEvent, QDropEvent
    from PySide6.QtWidgets import QApplication

    def drop(target: Any, paths: list[Path]) -> None:
        mime = QMimeData()
        mime.setUrls([QUrl.fromLocalFile(str(p)) for p in paths])
        buttons, modifiers = Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier
        enter = QDragEnterEvent(QPoint(5, 5), Qt.DropAction.CopyAction, mime, buttons, modifiers)
        QApplication.sendEvent(target, enter)
        assert enter.isAccepted()
        QApplication.sendEvent(target, QDropEvent(QPointF(5, 5), Qt.DropAction.CopyAction, mime, buttons, modifiers))

    return drop
