"""scripts/train_microworld.py continuing from an exported model: the export's marker counts the steps of the model
it started from, also when the work folder is resumed without `--start-from` (which used to export 0), and its
weights are float16 unless `--float32` is given."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from safetensors import safe_open

from engine.microworld.model_files import WEIGHT_FILES
from engine.model.loading import DEMO_MARKER, demo_model_dir

ROOT = Path(__file__).resolve().parents[3]


def _train(*args: str) -> None:
    command = [sys.executable, str(ROOT / "scripts" / "train_microworld.py"), *args]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, env={"PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, done.stderr[-2000:]


def test_a_resumed_continuation_keeps_the_lineage_of_the_model_it_started_from(tmp_path: Path) -> None:
    start = demo_model_dir()
    start_steps = json.loads((start / DEMO_MARKER).read_text())["language_model_steps"]
    common = ["--work", str(tmp_path / "work"), "--vq-steps", "1"]
    _train(*common, "--start-from", str(start), "--lm-steps", "1", "--out", str(tmp_path / "a"))
    _train(*common, "--lm-steps", "2", "--float32", "--out", str(tmp_path / "b"))  # resumed, without --start-from
    first = json.loads((tmp_path / "a" / DEMO_MARKER).read_text())
    resumed = json.loads((tmp_path / "b" / DEMO_MARKER).read_text())
    assert first["continued_from_steps"] == resumed["continued_from_steps"] == start_steps
    assert (first["language_model_steps"], resumed["language_model_steps"]) == (start_steps + 1, start_steps + 2)
    assert [stage["total"] for stage in resumed["stages"]] == [1, 2]
    assert _dtypes(tmp_path / "a") == {"F16"} and _dtypes(tmp_path / "b") == {"F32"}


def _dtypes(folder: Path) -> set[str]:
    """The dtypes of the folder's weights."""
    found = set()
    for name in WEIGHT_FILES:
        with safe_open(str(folder / name), "pt") as weights:
            found |= {weights.get_slice(key).get_dtype() for key in weights.keys()}  # noqa: SIM118 (not iterable)
    return found
