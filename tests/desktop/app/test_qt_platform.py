"""Before Qt starts, `familiar app` checks that Qt's X11 plugin can load; where it cannot, one line says which
packages to install and how to run anyway, instead of Qt's abort (status 134)."""

from __future__ import annotations

import ctypes
import os
import subprocess
import sys
from pathlib import Path

import pytest

from desktop.app.qt_platform import missing_libraries, uses_xcb, window_problem, xcb_plugin

ROOT = Path(__file__).resolve().parents[3]
# What was missing on the minimal Debian 12 system where `familiar app` aborted (issue 19).
ABSENT = ("libxcb-icccm.so.4", "libxcb-keysyms.so.1")
REAL_CDLL = ctypes.CDLL

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Qt uses xcb only on Linux")


def load_without_icccm_and_keysyms(name: str) -> object:
    """ctypes.CDLL as on that system: the two libraries, and the plugin that links against them, fail to load
    with the dynamic loader's message; everything else loads for real."""
    for absent in ABSENT:
        if name.endswith(absent) or name.endswith("libqxcb.so"):
            raise OSError(f"{absent}: cannot open shared object file: No such file or directory")
    return REAL_CDLL(name)


@pytest.mark.parametrize(
    ("environ", "xcb"),
    [
        ({"DISPLAY": ":0"}, True),
        ({"DISPLAY": ":0", "QT_QPA_PLATFORM": "xcb"}, True),
        ({"DISPLAY": ":0", "QT_QPA_PLATFORM": "offscreen"}, False),
        ({"QT_QPA_PLATFORM": "wayland;xcb", "WAYLAND_DISPLAY": "wayland-0"}, False),
        ({"DISPLAY": ":0", "XDG_SESSION_TYPE": "wayland", "WAYLAND_DISPLAY": "wayland-0"}, False),
        ({"DISPLAY": ":0", "XDG_SESSION_TYPE": "x11", "WAYLAND_DISPLAY": "wayland-0"}, True),
    ],
)
def test_the_check_applies_only_where_qt_will_use_xcb(environ: dict[str, str], xcb: bool) -> None:
    assert uses_xcb(environ) is xcb


def test_other_platforms_are_left_to_qt() -> None:
    assert window_problem({"QT_QPA_PLATFORM": "offscreen"}) is None
    assert window_problem({"DISPLAY": ":0", "QT_QPA_PLATFORM": "offscreen"}, load_without_icccm_and_keysyms) is None


def test_no_display_is_one_line_naming_display_and_how_to_run_anyway() -> None:
    problem = window_problem({})
    assert problem is not None and "\n" not in problem
    assert "DISPLAY is not set" in problem and "QT_QPA_PLATFORM=offscreen" in problem


def test_missing_libraries_are_named_with_their_debian_and_fedora_packages() -> None:
    plugin = xcb_plugin()
    assert plugin is not None and plugin.is_file()
    missing, error = missing_libraries(plugin, load_without_icccm_and_keysyms)
    assert missing == list(ABSENT)
    assert error is not None and "libxcb-icccm.so.4" in error
    problem = window_problem({"DISPLAY": ":0"}, load_without_icccm_and_keysyms)
    assert problem is not None and "\n" not in problem
    assert "sudo apt install libxcb-icccm4 libxcb-keysyms1 (Debian/Ubuntu)" in problem
    assert "sudo dnf install xcb-util-wm xcb-util-keysyms (Fedora)" in problem
    assert "QT_QPA_PLATFORM=offscreen" in problem and "QT_QPA_PLATFORM=wayland" in problem


def test_familiar_app_exits_in_one_line_where_the_xcb_libraries_are_missing(tmp_path: Path) -> None:
    """The real command, in a process whose dynamic loading fails as on that system: status 2, one line on
    stderr naming the packages, and Qt never started (no abort, no "qt.qpa" lines)."""
    script = (
        "import ctypes, sys\n"
        "from tests.desktop.app.test_qt_platform import load_without_icccm_and_keysyms\n"
        "ctypes.CDLL = load_without_icccm_and_keysyms\n"
        "from desktop.cli.main import main\n"
        "status = main(['--data-dir', sys.argv[1], 'app'])\n"
        "assert not [m for m in sys.modules if m.startswith('PySide6.Qt')], 'Qt was started'\n"
        "sys.exit(status)\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("QT_QPA_PLATFORM", "WAYLAND_DISPLAY")}
    env["DISPLAY"] = ":0"
    result = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path / "library")],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=120,
    )
    assert result.returncode == 2, result.stderr
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("familiar: error: Qt's X11 platform plugin (xcb) needs system libraries")
    assert "libxcb-icccm4 libxcb-keysyms1" in lines[0] and "xcb-util-wm xcb-util-keysyms" in lines[0]
    assert not (tmp_path / "library").exists()  # nothing was opened
