"""Start the app: `run_app` builds the QApplication and the main window; with `smoke_test` it runs
offscreen, waits until the model has loaded and nothing is running, saves a screenshot and exits."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from PySide6.QtCore import QTimer
from PySide6.QtWidgets import QApplication

from desktop.app.main_window import AppContext, MainWindow
from desktop.app.settings import folder_override, library_folder, load_settings, settings_path

POLL_MS = 100


def make_window(data_dir: str | None = None) -> MainWindow:
    """The main window for `--data-dir` (or the usual folder), with the saved settings."""
    path = settings_path()
    settings = load_settings(path)
    context = AppContext(
        data_dir=library_folder(data_dir, settings),
        settings_path=path,
        settings=settings,
        folder_override=folder_override(data_dir),
    )
    return MainWindow(context)


def smoke_shot(window: MainWindow, target: Path, timeout_s: float) -> dict[str, int]:
    """Once the window is idle (or after `timeout_s`), save a screenshot to `target` and quit the app:
    status 0 when the model loaded, 1 when it failed or time ran out (in the returned dict, once it is set)."""
    result = {"status": 1}
    deadline = time.monotonic() + timeout_s
    timer = QTimer(window)

    def poll() -> None:
        timed_out = time.monotonic() > deadline
        if not (window.idle() or timed_out):
            return
        timer.stop()
        QApplication.processEvents()
        target.parent.mkdir(parents=True, exist_ok=True)
        saved = window.grab().save(str(target))
        ok = saved and window.engine.state == "ready" and not timed_out
        print(
            f"familiar app: {'saved' if saved else 'could not save'} {target}"
            + ("" if ok else f" (model {window.engine.state}{', timed out' if timed_out else ''})")
        )
        result["status"] = 0 if ok else 1
        window.close()
        QApplication.instance().exit(result["status"])

    timer.timeout.connect(poll)
    timer.start(POLL_MS)
    return result


def run_app(data_dir: str | None = None, smoke_test: Path | None = None, timeout_s: float = 120.0) -> int:
    if smoke_test is not None:
        os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    app = QApplication.instance() or QApplication(sys.argv[:1])
    app.setApplicationName("Familiar")
    window = make_window(data_dir)
    window.show()
    if smoke_test is None:
        return app.exec()
    result = smoke_shot(window, smoke_test, timeout_s)
    app.exec()
    return result["status"]
