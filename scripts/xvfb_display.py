"""A private Xvfb X server for real-window checks: the screenshots (`screenshots.py --real-window`), the built
app (`build_app.py`) and the tests (tests/desktop/app/test_real_window.py). Needs `Xvfb` and `xwininfo`
(Debian/Ubuntu: `apt install xvfb x11-utils`)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Iterator, Mapping
from contextlib import contextmanager

TOOLS = ("Xvfb", "xwininfo")
SCREEN = (1280, 900)
NOT_XCB = ("QT_QPA_PLATFORM", "WAYLAND_DISPLAY", "XDG_SESSION_TYPE")


def missing_tools() -> list[str]:
    return [tool for tool in TOOLS if shutil.which(tool) is None]


@contextmanager
def xvfb(size: tuple[int, int] = SCREEN) -> Iterator[str]:
    """Start Xvfb on a free display number (Xvfb picks it: -displayfd) and yield its name, e.g. ":3"."""
    read, write = os.pipe()
    server = subprocess.Popen(
        ["Xvfb", "-displayfd", str(write), "-screen", "0", f"{size[0]}x{size[1]}x24", "-nolisten", "tcp"],
        pass_fds=(write,),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    os.close(write)
    with os.fdopen(read) as pipe:
        number = pipe.readline().strip()  # written once the server accepts connections; "" if it died
    try:
        if not number:
            raise RuntimeError(f"Xvfb did not start (status {server.wait()})")
        yield f":{number}"
    finally:
        server.terminate()
        server.wait(timeout=30)


def x_env(display: str, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """`base` (this environment) on `display`, without what would steer Qt away from X11 (xcb)."""
    env = {k: v for k, v in (os.environ if base is None else base).items() if k not in NOT_XCB}
    return {**env, "DISPLAY": display}


def map_state(display: str, window: str) -> str:
    """xwininfo's "Map State" of `window` (an id such as 0x400007): IsViewable once it is on screen."""
    info = subprocess.run(["xwininfo", "-id", window], capture_output=True, text=True, env=x_env(display), timeout=30)
    found = re.search(r"Map State: (\w+)", info.stdout)
    return found.group(1) if found else info.stderr.strip()


def viewable_windows(display: str, title: str) -> list[str]:
    """Ids of the root window's children called `title` that are mapped and viewable."""
    tree = subprocess.run(
        ["xwininfo", "-root", "-children"], capture_output=True, text=True, env=x_env(display), timeout=30
    ).stdout
    found = re.findall(rf'^\s*(0x[0-9a-f]+) "{re.escape(title)}"', tree, flags=re.MULTILINE)
    return [window for window in found if map_state(display, window) == "IsViewable"]
