"""`scripts/gpu_check.sh --demo`: the GPU check's steps at the demo model's size on the CPU, so the command is known
to work before a GPU ever runs it."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_demo_rehearsal_runs_every_phase_and_writes_its_json(tmp_path: Path) -> None:
    env = {**os.environ, "OUT": str(tmp_path / "out")}
    command = ["bash", "scripts/gpu_check.sh", "--demo", "--train-steps", "2", "--text-tokens", "8"]
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads((tmp_path / "out" / "gpu_check.json").read_text())
    assert result["mode"] == "demo"
    for phase in ("load", "train", "train_checkpointed", "image", "text", "instant"):
        assert "error" not in result[phase], result[phase]
    assert result["train"]["checkpointing"] is False and result["train_checkpointed"]["checkpointing"] is True
    assert result["train"]["steps"] == 2 and result["train"]["seconds_per_step"] > 0
    assert result["train"]["predicted_peak_gib"] > result["load"]["predicted_weights_gib"]
    assert result["image"]["tokens_per_image"] == 64
    for case in ("plain", "guided", "concept"):
        assert result["image"][f"{case}_seconds"] > 0
    assert result["text"]["tokens"] > 0 and result["instant"]["seconds"] > 0
