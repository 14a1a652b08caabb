"""scripts/bench_trajectory.py: blends of rows, the anchor's pull towards the start, and a one-concept run."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest
import torch

from engine.concepts.state import ConceptState
from tests.scripts import load_script

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def script() -> ModuleType:
    return load_script("bench_trajectory")


def _state(value: float) -> ConceptState:
    return ConceptState("c", torch.full((3, 4), value), torch.full((3, 4), 2 * value), "base")


def test_blend_goes_from_the_start_rows_to_the_end_rows(script: ModuleType) -> None:
    start, end = _state(1.0), _state(3.0)
    assert torch.equal(script.blend(start, end, 0.0).embed, start.embed)
    assert torch.equal(script.blend(start, end, 1.0).head, end.head)
    half = script.blend(start, end, 0.5)
    assert torch.allclose(half.embed, torch.full((3, 4), 2.0)) and torch.allclose(half.head, torch.full((3, 4), 4.0))
    assert script.moved(start, half) == pytest.approx(2.0)  # each row moves by 1 in 4 dimensions: norm 2


def _two_steps(weight: float | None, script: ModuleType) -> float:
    parameter = torch.nn.Parameter(torch.tensor([1.0]))
    optimizer = torch.optim.AdamW([parameter], lr=0.1, weight_decay=0.0)

    def steps() -> None:
        for _ in range(2):
            optimizer.zero_grad()
            (-parameter).sum().backward()
            optimizer.step()

    if weight is None:
        steps()
    else:
        with script.anchored(weight):
            steps()
    return float(parameter.detach())


def test_the_anchor_pulls_towards_the_start_and_is_undone_after(script: ModuleType) -> None:
    plain = _two_steps(None, script)
    assert plain == pytest.approx(1.2, abs=1e-4)  # Adam moves by the learning rate each step
    assert _two_steps(0.0, script) == pytest.approx(plain)
    # Step 1: 1.0 -> 1.1, pulled back by 0.1 * 5 * 0.1 to 1.05; step 2: 1.15, pulled back by 0.075 to 1.075.
    assert _two_steps(5.0, script) == pytest.approx(1.075, abs=1e-4)
    assert _two_steps(None, script) == pytest.approx(plain)  # the optimizer's own step is back


def test_one_concept_is_measured_at_the_start_the_choice_and_the_last_epoch(tmp_path: Path) -> None:
    out = tmp_path / "trajectory.json"
    command = [sys.executable, str(ROOT / "scripts" / "bench_trajectory.py"), "--concepts", "1", "--seed", "3"]
    done = subprocess.run(
        [*command, "--blends", "0.5", "-o", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={"PYTHONPATH": str(ROOT)},
    )
    assert done.returncode == 0, done.stderr[-2000:]
    results = json.loads(out.read_text())
    (unit,) = results["per_concept"]
    conditions = unit["conditions"]
    assert list(conditions) == ["start", "chosen", "last", "blend_0.5"]
    assert conditions["start"]["moved"] == 0.0 and conditions["last"]["moved"] > 0.0
    assert conditions["blend_0.5"]["moved"] == pytest.approx(conditions["last"]["moved"] / 2, rel=1e-4)
    assert 0.0 <= conditions["last"]["recognition_weighted"] <= 1.0
    assert conditions["last"]["recognition_seen"] in (0.0, 1 / 3, 2 / 3, 1.0)  # 3 training photos
    assert conditions["last"]["recognition_held_out"] in (0.0, 1.0)
    assert results["summary"]["start"]["recognition_weighted_minus_start"] == [0.0, 0.0]
    assert results["command"].startswith("python scripts/bench_trajectory.py --concepts 1")
