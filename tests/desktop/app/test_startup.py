"""The window appears without torch: importing the GUI imports no torch (the model loads in the background),
and `familiar app --smoke-test OUT.png` opens the window offscreen, waits for the model and saves a picture."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from PIL import Image

GUI_MODULES = ("desktop.app.launch", "desktop.app.main_window", "desktop.cli.app", "desktop.cli.main")


def test_importing_the_gui_does_not_import_torch() -> None:
    imports = "; ".join(f"import {m}" for m in GUI_MODULES)
    check = "import sys; bad = [m for m in ('torch', 'transformers') if m in sys.modules]; assert not bad, bad"
    result = subprocess.run([sys.executable, "-c", f"{imports}; {check}"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_the_app_command_does_not_import_qt() -> None:
    check = (
        "import sys, desktop.cli.main; bad = [m for m in sys.modules if m.startswith('PySide6')]; assert not bad, bad"
    )
    result = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_smoke_mode_saves_a_screenshot_once_the_model_is_loaded(tmp_path: Path) -> None:
    shot = tmp_path / "shot.png"
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen"}
    cli = [sys.executable, "-m", "desktop.cli.main", "--data-dir", str(tmp_path / "library"), "app"]
    result = subprocess.run([*cli, "--smoke-test", str(shot)], capture_output=True, text=True, env=env, timeout=180)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"saved {shot}" in result.stdout
    with Image.open(shot) as image:
        assert image.size[0] >= 800 and image.size[1] >= 600
        assert len(set(image.convert("L").resize((64, 64)).tobytes())) > 10  # not a blank picture
    assert (tmp_path / "library" / "library.db").is_file()


def test_many_qt_calls_do_not_use_up_none() -> None:
    """PySide6-Essentials 6.12.0 on Python 3.11 dropped a reference to None on every void call until CPython
    aborted ("none_dealloc"); the pin is 6.11.3, which does not. This guards against moving the pin back."""
    loop = (
        "import os; os.environ['QT_QPA_PLATFORM'] = 'offscreen'; import desktop.app\n"
        "from PySide6.QtWidgets import QApplication, QLabel\n"
        "app = QApplication([]); label = QLabel()\n"
        "for i in range(50_000): label.setText(str(i))\n"
        "print(label.text())"
    )
    result = subprocess.run([sys.executable, "-c", loop], capture_output=True, text=True)
    assert result.returncode == 0 and result.stdout.strip() == "49999", result.stderr[-2000:]
