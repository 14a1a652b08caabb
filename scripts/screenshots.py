"""Screenshots of each main view, made on the demo model with DreamBooth photos (CC BY 4.0).

    python scripts/screenshots.py [--out docs/screenshots] [--photos DIR] [--real-window]

Offscreen by default (Qt renders the widgets into memory); with --real-window the window opens on a private
Xvfb X server (scripts/xvfb_display.py; needs `apt install xvfb x11-utils`) and each shot is read back from
the X server's screen, as a user's desktop shows it.

Builds a fresh library in a temporary folder: <bo> (the DreamBooth dog) trained briefly, <teddy> (the bear
plushie) whose run is cancelled part-way, <mimi> (the cat) untrained; then walks the window through the
add-concept wizard (with one bad file), the edit page (one new photo, not saved), a training run, a chat with
a photo and a drawing, the gallery and the settings, saving one PNG per view (two for training: during the run
and after it)."""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path

from PySide6.QtCore import QEventLoop
from PySide6.QtWidgets import QApplication

from desktop.app.main_window import AppContext, MainWindow
from desktop.app.qt_platform import window_problem
from desktop.app.settings import AppSettings

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
import xvfb_display  # noqa: E402

PHOTOS = ROOT.parent / "shared" / "data" / "dreambooth"
TRAINING = {
    "epochs": 3,
    "augment": False,
    "recognition_per_photo": 4,
    "generation_per_photo": 2,
    "qa_repeats": 1,
    "negatives": 4,
    "describe_photos": False,
    "device": "cpu",
}


def wait_until(condition: Callable[[], bool], timeout_s: float = 300.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError("the window did not get there in time")
        QApplication.processEvents(QEventLoop.ProcessEventsFlag.AllEvents, 50)


def settle(window: MainWindow, seconds: float = 0.3) -> None:
    """Let layouts and repaints finish."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        QApplication.processEvents(QEventLoop.ProcessEventsFlag.AllEvents, 20)


def shoot(window: MainWindow, out: Path, name: str) -> None:
    """Save the window: from the X server's screen on a real display, else Qt's rendering of the widgets."""
    settle(window)
    path = out / f"{name}.png"
    if QApplication.platformName() == "xcb":
        frame = window.frameGeometry()
        picture = window.screen().grabWindow(0, frame.x(), frame.y(), frame.width(), frame.height())
    else:
        picture = window.grab()
    if not picture.save(str(path)):
        raise OSError(f"could not write {path}")
    print(f"saved {path}")


def photos(subject: str, photos_dir: Path, count: int) -> list[Path]:
    return sorted((photos_dir / subject).glob("*.jpg"))[:count]


def train(window: MainWindow, name: str, stop_after: int | None = None, shot: Callable[[], None] | None = None):
    """Train `name` from the GUI; cancel after `stop_after` steps, or call `shot` two thirds of the way."""
    steps: list[int] = []
    window.training.progress.connect(lambda update: steps.append(update.step))
    window.train(name)
    if stop_after is not None:
        wait_until(lambda: len(steps) >= stop_after)
        window.training_view.cancel()
    elif shot is not None:
        wait_until(lambda: steps and steps[-1] >= 2 * window.training_view.bar.maximum() // 3)
        shot()
    wait_until(lambda: not window.training.running and not window.engine.runner.busy)
    window.training.progress.disconnect()
    window.training.progress.connect(window.training_view._progress)


def ask(window: MainWindow, text: str, mode: str, photo: Path | None = None) -> None:
    chat = window.chat_view
    if photo is not None:
        chat.attach_photo(photo)
    chat.mode.setCurrentIndex(chat.mode.findData(mode))
    chat.edit.setText(text)
    chat.send()
    wait_until(lambda: not chat.busy)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "screenshots")
    parser.add_argument("--photos", type=Path, default=PHOTOS, help="the DreamBooth dataset folder")
    parser.add_argument("--real-window", action="store_true", help="open the window on a private Xvfb display")
    args = parser.parse_args()
    if not (args.photos / "dog").is_dir():
        print(f"DreamBooth photos not found in {args.photos}", file=sys.stderr)
        return 2
    if args.real_window and xvfb_display.missing_tools():
        print(f"--real-window needs {' and '.join(xvfb_display.missing_tools())}", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    with xvfb_display.xvfb() if args.real_window else nullcontext() as display:
        if display is None:
            os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
        else:
            for name in xvfb_display.NOT_XCB:
                os.environ.pop(name, None)
            os.environ["DISPLAY"] = display
            if problem := window_problem(os.environ):
                print(problem, file=sys.stderr)
                return 2
        return walk(args.out, args.photos)


def walk(out: Path, photos_dir: Path) -> int:
    """Build the library through the window and save each view into `out`."""
    app = QApplication.instance() or QApplication(sys.argv[:1])
    app.setApplicationName("Familiar")
    folder = Path(tempfile.mkdtemp(prefix="familiar-shots-"))
    context = AppContext(
        data_dir=folder / "library",
        settings_path=folder / "settings.json",
        settings=AppSettings(device="cpu"),
        train_overrides=TRAINING,
    )
    window = MainWindow(context)
    window.show()
    wait_until(lambda: window.engine.state == "ready")

    library = window.library
    library.concepts.add("bo", photos("dog", photos_dir, 4), kind="pet", facts="class: dog\nbreed: corgi")
    library.concepts.add("teddy", photos("bear_plushie", photos_dir, 4), kind="object", facts="class: teddy bear")
    library.concepts.add("mimi", photos("cat", photos_dir, 3), kind="pet", facts="class: cat")
    window.refresh()
    window.training_view.refresh()
    train(window, "bo", shot=lambda: shoot(window, out, "training"))
    shoot(window, out, "training-done")
    train(window, "teddy", stop_after=2)
    window.refresh()
    window.show_page("Library")
    shoot(window, out, "library")

    window.show_page("Add concept")
    bad = folder / "receipt.pdf"
    bad.write_bytes(b"%PDF-1.4 not a photo")
    window.wizard.add_files([*photos("backpack", photos_dir, 4), bad])
    wait_until(lambda: not window.wizard.pending)
    window.wizard.name.setText("pack")
    window.wizard.kind.setCurrentText("object")
    window.wizard.facts.setPlainText("class: backpack\ncolour: red\nMy hiking backpack, always by the door.")
    shoot(window, out, "wizard")
    window.wizard.reset()

    window.editor.open("mimi")
    window.show_page("Edit concept")
    window.editor.add_files(photos("cat", photos_dir, 4)[3:])
    shoot(window, out, "editor")
    window.editor.cancel.click()

    window.show_page("Chat")
    ask(window, "What is <bo> doing in this photo?", "answer", photos("dog", photos_dir, 5)[4])
    ask(window, "A photo of <bo> on sand.", "draw")
    shoot(window, out, "chat")

    window.show_page("Gallery")
    shoot(window, out, "gallery")

    window.show_page("Settings")
    window.settings_view.check_and_load()
    wait_until(lambda: window.engine.state == "ready" and window.idle())
    shoot(window, out, "settings")
    window.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
