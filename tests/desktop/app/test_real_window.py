"""The app on a real X server (Xvfb), the way a Linux desktop runs it, not Qt's offscreen platform.

`familiar app` must map a window on the display with a populated library (demo model); and every view, shown
in turn on that display, is grabbed from the X server's own pixels (not Qt's rendering of the widget) and must
show something. Skipped where Xvfb or xwininfo is missing (`apt install xvfb x11-utils`; `.ci/run` installs them
and the libraries Qt's xcb plugin needs)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image, ImageStat

from tests.scripts import load_script

ROOT = Path(__file__).resolve().parents[3]
VIEWS = ("Library", "Add concept", "Edit concept", "Chat", "Training", "Gallery", "Settings")
MIN_STD = 4.0  # grey-level standard deviation below which a grab counts as blank

pytestmark = [pytest.mark.xvfb, pytest.mark.slow]


xvfb_display = load_script("xvfb_display")
x_env = xvfb_display.x_env


@pytest.fixture
def x_display() -> Iterator[str]:
    """A fresh Xvfb server on a free display number; its name, e.g. ":3"."""
    missing = xvfb_display.missing_tools()
    if missing:
        pytest.skip(f"{' and '.join(missing)} not installed (Debian/Ubuntu: apt install xvfb x11-utils)")
    with xvfb_display.xvfb() as display:
        yield display


def familiar(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "desktop.cli.main", *args]
    result = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def make_photos(folder: Path, count: int, hue: int) -> list[Path]:
    """Distinct small photos: a coloured square on a gradient, moved a little in each."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        image = Image.linear_gradient("L").resize((256, 256)).convert("RGB")
        image.paste((hue, 200 - 50 * i, 90 + 40 * i), (50 + 15 * i, 60, 190 + 15 * i, 200))
        paths.append(folder / f"photo{i}.png")
        image.save(paths[-1])
    return paths


@pytest.fixture
def populated_library(tmp_path: Path) -> Path:
    """A library made with the real CLI on the demo model: <bo> with instant tokens, <mimi> untrained."""
    library = tmp_path / "library"
    bo = [str(p) for p in make_photos(tmp_path / "bo", 3, 200)]
    mimi = [str(p) for p in make_photos(tmp_path / "mimi", 3, 40)]
    familiar("--data-dir", str(library), "concept", "add", "bo", *bo, "--kind", "pet", "--instant")
    familiar("--data-dir", str(library), "concept", "add", "mimi", *mimi, "--kind", "pet", "--facts", "class: cat")
    return library


def grey_std(image: Image.Image) -> float:
    return float(ImageStat.Stat(image.convert("L")).stddev[0])


def grab_screen(display: str, target: Path) -> None:
    """The X server's whole screen, read by a separate Qt client on the display (xcb's GetImage on the root)."""
    script = (
        "import sys; from PySide6.QtGui import QGuiApplication; app = QGuiApplication(sys.argv[:1]); "
        "sys.exit(0 if app.primaryScreen().grabWindow(0).save(sys.argv[1]) else 1)"
    )
    env = {**x_env(display), "QT_QPA_PLATFORM": "xcb"}
    subprocess.run([sys.executable, "-c", script, str(target)], env=env, timeout=60, check=True)


def test_familiar_app_maps_a_real_window(x_display: str, populated_library: Path, tmp_path: Path) -> None:
    cmd = [sys.executable, "-m", "desktop.cli.main", "--data-dir", str(populated_library), "app"]
    log = (tmp_path / "app.log").open("w+")
    app = subprocess.Popen(cmd, env=x_env(x_display), cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 120
        viewable: list[str] = []
        while not viewable and time.monotonic() < deadline and app.poll() is None:
            time.sleep(0.5)
            viewable = xvfb_display.viewable_windows(x_display, "Familiar")
        log.seek(0)
        assert viewable, f"no Familiar window mapped (status {app.poll()}): {log.read()[-2000:]}"
        time.sleep(3)  # let the demo model load and the cards paint
        grab_screen(x_display, tmp_path / "screen.png")
        assert app.poll() is None, "the app exited on its own"
    finally:
        app.terminate()
        app.wait(timeout=30)
        log.close()
    with Image.open(tmp_path / "screen.png") as screen:
        assert screen.size == xvfb_display.SCREEN
        assert grey_std(screen.crop((0, 0, 1120, 780))) > MIN_STD  # the window's pixels, not the black root


def shoot_views(data_dir: str, out: str) -> None:
    """Run in a process on an X display: open the main window on `data_dir`, draw a picture in the chat, then
    show each view (the editor on <bo>) and grab it from the screen into `out/<view>.png`; `out/report.json` says
    whether the window was exposed and mapped (xwininfo) on each."""
    from PySide6.QtCore import QEventLoop
    from PySide6.QtWidgets import QApplication

    from desktop.app.main_window import AppContext, MainWindow
    from desktop.app.settings import AppSettings

    def wait_until(condition: object, timeout_s: float = 240.0) -> None:
        deadline = time.monotonic() + timeout_s
        while not condition():  # type: ignore[operator]
            assert time.monotonic() < deadline, "the window did not get there in time"
            QApplication.processEvents(QEventLoop.ProcessEventsFlag.AllEvents, 50)

    app = QApplication(sys.argv[:1])
    folder = Path(out)
    context = AppContext(Path(data_dir), folder / "settings.json", AppSettings(device="cpu"))
    window = MainWindow(context)
    window.show()
    wait_until(lambda: window.engine.state == "ready" and window.idle())
    chat = window.chat_view
    chat.mode.setCurrentIndex(chat.mode.findData("draw"))
    chat.edit.setText("A photo of <bo> on grass.")
    chat.send()
    wait_until(lambda: not chat.busy)
    report: dict[str, object] = {"platform": app.platformName()}
    window.editor.open("bo")
    for view in VIEWS:
        window.show_page(view)
        settled = time.monotonic() + 0.5
        wait_until(lambda until=settled: time.monotonic() > until)
        frame = window.frameGeometry()
        grab = window.screen().grabWindow(0, frame.x(), frame.y(), frame.width(), frame.height())
        grab.save(str(folder / f"{view}.png"))
        state = xvfb_display.map_state(os.environ["DISPLAY"], hex(int(window.winId())))
        report[view] = {"exposed": window.windowHandle().isExposed(), "map_state": state}
    (folder / "report.json").write_text(json.dumps(report))
    window.close()


def test_every_view_shows_on_a_real_window(x_display: str, populated_library: Path, tmp_path: Path) -> None:
    out = tmp_path / "views"
    out.mkdir()
    script = "import sys; from tests.desktop.app.test_real_window import shoot_views; shoot_views(*sys.argv[1:])"
    result = subprocess.run(
        [sys.executable, "-c", script, str(populated_library), str(out)],
        capture_output=True,
        text=True,
        env=x_env(x_display),
        cwd=ROOT,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((out / "report.json").read_text())
    assert report["platform"] == "xcb"
    pixels = {}
    for view in VIEWS:
        assert report[view] == {"exposed": True, "map_state": "IsViewable"}, view
        with Image.open(out / f"{view}.png") as shot:
            assert shot.size[0] >= 1000 and shot.size[1] >= 700, view
            assert grey_std(shot) > MIN_STD, f"{view} is blank"
            pixels[view] = shot.convert("L").resize((128, 96)).tobytes()
    assert len(set(pixels.values())) == len(VIEWS)  # each view shows something of its own
