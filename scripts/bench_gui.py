"""Desktop app figures: how fast the window appears, and how responsive it stays while a concept trains.

    python scripts/bench_gui.py [--runs 5] [--out docs/results/gui.json]

1. Import time of the GUI module (`desktop.app.launch`), in a fresh process each time.
2. Time to first window: from just before a fresh process is started to the moment the main window has
   been shown and its first events (expose, paint) handled, offscreen. The model keeps loading behind it.
3. Event-loop latency: a QTimer set to fire every 10 ms records how late each tick is (the time between
   consecutive ticks minus 10 ms): with nothing running; while the app's EngineHost loads the demo model
   in the background (the first import of torch and transformers happens there, as at app start); and
   while the GUI's TrainingController trains a concept from DreamBooth photos (CC BY 4.0) in its worker
   thread (preparing data: loading, describing and encoding photos; then steps and checkpoints), with
   the figures for the optimizer steps alone given separately.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PHOTOS = ROOT.parent / "shared" / "data" / "dreambooth" / "dog"
TICK_MS = 10
TRAINING = {
    "epochs": 2,
    "augment": False,
    "recognition_per_photo": 4,
    "generation_per_photo": 2,
    "qa_repeats": 1,
    "negatives": 4,
    "describe_photos": True,
    "device": "cpu",
}

IMPORT_CHILD = "import time; t = time.perf_counter(); import desktop.app.launch; print(time.perf_counter() - t)"
WINDOW_CHILD = """
import os, time
from PySide6.QtCore import QTimer
from PySide6.QtWidgets import QApplication
from desktop.app.launch import make_window
app = QApplication([])
window = make_window()
window.show()
def shown():
    print(time.time(), flush=True)
    os._exit(0)
QTimer.singleShot(0, shown)
app.exec()
"""


def child_env(folder: Path) -> dict[str, str]:
    return {
        **os.environ,
        "QT_QPA_PLATFORM": "offscreen",
        "FAMILIAR_DATA": str(folder / "library"),
        "FAMILIAR_CONFIG": str(folder / "config"),
    }


def import_seconds(env: dict[str, str]) -> float:
    out = subprocess.run([sys.executable, "-c", IMPORT_CHILD], env=env, capture_output=True, text=True, check=True)
    return float(out.stdout)


def first_window_seconds(env: dict[str, str]) -> float:
    started = time.time()
    out = subprocess.run([sys.executable, "-c", WINDOW_CHILD], env=env, capture_output=True, text=True, check=True)
    return float(out.stdout.split()[-1]) - started


def lateness(seconds: float | None = None, until: Callable[[], bool] | None = None) -> list[tuple[float, float]]:
    """(time, milliseconds late) of each 10 ms tick, for `seconds` or until `until()` is true."""
    from PySide6.QtCore import QEventLoop, Qt, QTimer

    ticks: list[tuple[float, float]] = []
    last = [time.perf_counter()]
    loop = QEventLoop()
    end = time.perf_counter() + seconds if seconds else None

    def tick() -> None:
        now = time.perf_counter()
        ticks.append((now, max(0.0, (now - last[0]) * 1000 - TICK_MS)))
        last[0] = now
        if (end is not None and now >= end) or (until is not None and until()):
            loop.quit()

    timer = QTimer()
    timer.setTimerType(Qt.TimerType.PreciseTimer)
    timer.timeout.connect(tick)
    timer.start(TICK_MS)
    loop.exec()
    timer.stop()
    return ticks


def summary(ticks: list[tuple[float, float]]) -> dict[str, float]:
    ordered = sorted(late for _, late in ticks)
    return {
        "ticks": len(ordered),
        "worst_ms": round(ordered[-1], 1),
        "p99_ms": round(ordered[int(0.99 * (len(ordered) - 1))], 1),
        "median_ms": round(statistics.median(ordered), 2),
        "over_50ms": sum(x > 50 for x in ordered),
    }


def event_loop_latency(folder: Path) -> dict[str, object]:
    """Idle, then the app's background model load (imports torch), then a training run in its worker."""
    os.environ["QT_QPA_PLATFORM"] = "offscreen"
    from PySide6.QtWidgets import QApplication

    from desktop.app.engine_host import EngineHost
    from desktop.app.settings import AppSettings
    from desktop.app.training import TrainingController
    from store.library import Library

    app = QApplication.instance() or QApplication([])
    data = folder / "training-library"
    with Library.open(data) as library:
        library.concepts.add("bo", sorted(PHOTOS.glob("*.jpg"))[:4], kind="pet", facts="class: dog")
    settings = AppSettings(device="cpu")
    idle = lateness(seconds=3.0)

    engine = EngineHost(data)
    started = time.perf_counter()
    engine.load(settings)
    loading = lateness(until=lambda: engine.state in ("ready", "failed"))
    load_seconds = time.perf_counter() - started

    controller = TrainingController(engine, TRAINING)
    result: dict[str, object] = {}
    first_step: list[float] = []
    controller.progress.connect(lambda _update: first_step or first_step.append(time.perf_counter()))
    controller.finished.connect(lambda run: result.update(run=run))
    controller.failed.connect(lambda message: result.update(error=message))
    started = time.perf_counter()
    controller.start("bo", settings)
    training = lateness(until=lambda: bool(result))
    if "error" in result:
        raise SystemExit(f"training failed: {result['error']}")
    del app
    return {
        "idle": summary(idle),
        "model_load_in_background": {**summary(loading), "seconds": round(load_seconds, 1)},
        "training_run": {
            **summary(training),
            "seconds": round(time.perf_counter() - started, 1),
            "steps": result["run"].step,
        },
        "training_steps_only": summary([t for t in training if t[0] >= first_step[0]]),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "results" / "gui.json")
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="familiar-bench-gui-"))
    env = child_env(folder)
    first_window_seconds(env)  # warm the disk cache and create the library once
    imports = [import_seconds(env) for _ in range(args.runs)]
    windows = [first_window_seconds(env) for _ in range(args.runs)]
    latency = event_loop_latency(folder)
    import torch

    results = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.system()}, offscreen Qt",
        "python": platform.python_version(),
        "torch_threads": torch.get_num_threads(),
        "runs": args.runs,
        "gui_import_seconds_median": round(statistics.median(imports), 3),
        "first_window_seconds_median": round(statistics.median(windows), 3),
        "first_window_seconds_all": [round(x, 3) for x in windows],
        "event_loop_lateness": latency,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
