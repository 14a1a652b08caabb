"""The cost benchmark: cheaper policies read off one run without early stopping are the runs the product would make,
and the cheapest policy keeps the full recipe's quality under every condition."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import torch

from desktop.cli.main import main
from engine.inference.assistant import Assistant
from engine.microworld.benchmark import Benchmark, BenchSettings, make_concepts
from engine.microworld.cost import cheapest, follow, policy_table
from engine.microworld.reader import load_reader
from engine.microworld.world import render
from engine.training.personalization import Scored
from engine.training.recipe import Recipe

SETTINGS = BenchSettings(concepts=1, pool=400, soft_positives=0, train_negatives=10)
RECIPE = Recipe(
    epochs=4, soft_positives=0, negatives=10, recognition_per_photo=2, generation_per_photo=1, qa_repeats=1, patience=0
)


def test_a_policy_read_off_the_full_run_is_the_run_the_product_makes(assistant: Assistant) -> None:
    bench = Benchmark(assistant, load_reader(), SETTINGS)
    concept = make_concepts(SETTINGS)[0]
    photos = [render(s) for s in concept.train[:-1]]
    descriptions = [f"a {concept.identity.describe()}"] * len(photos)

    def train(recipe: Recipe, keep: list[Scored] | None = None) -> tuple[int, Scored]:
        try:
            run = bench.train(concept, recipe, descriptions, on_checkpoint=None if keep is None else keep.append)
            return run.epochs, run.chosen
        finally:
            assistant.slots.detach(concept.name)

    candidates: list[Scored] = []
    train(RECIPE, candidates)
    assert [c.checkpoint.epoch for c in candidates] == [0, 1, 2, 3, 4]
    stopped = False
    for epochs, patience, margin in ((2, 0, 0.0), (4, 1, 0.0), (4, 2, 0.0), (4, 1, 0.3)):
        ran, kept = train(replace(RECIPE, epochs=epochs, patience=patience, start_margin=margin))
        read_ran, read_kept = follow(candidates, epochs, patience, margin)
        assert (ran, kept.checkpoint.step) == (read_ran, read_kept.checkpoint.step)
        assert torch.equal(kept.checkpoint.state.embed, read_kept.checkpoint.state.embed)
        assert torch.equal(kept.checkpoint.state.head, read_kept.checkpoint.state.head)
        stopped |= ran < epochs
    assert stopped, "no policy stopped early: the comparison did not test early stopping"


def _run(condition: str, share: float, scores: list[float], tests: list[tuple[float, float]]) -> dict[str, Any]:
    """A cost run whose candidate at epoch e has held-out score scores[e] and test metrics tests[e]."""
    from engine.training.trainer import Checkpoint

    candidates = [
        Scored(Checkpoint(optimizer=b"", step=10 * e, epoch=e, state=None), {"score": s})  # type: ignore[arg-type]
        for e, s in enumerate(scores)
    ]
    policies = {}
    for epochs in range(1, len(scores)):
        for patience in (0, 1):
            ran, kept = follow(candidates, epochs, patience)
            policies[f"{epochs}/{patience}"] = {"epochs": ran, "kept": kept.checkpoint.epoch}
    test = [
        {
            "recognition_weighted": r,
            "generation_attribute_accuracy": g,
            "qa_accuracy": 1.0,
            "generation_similarity": 1.0,
        }
        for r, g in tests
    ]
    return {
        "condition": condition,
        "share": share,
        "steps_per_epoch": 10 if share == 1.0 else 6,
        "epoch_flop": 100.0 if share == 1.0 else 60.0,
        "candidates": [{"epoch": e, "test": t} for e, t in enumerate(test)],
        "policies": policies,
    }


def test_the_cheapest_policy_keeps_the_full_recipes_quality_under_every_condition() -> None:
    rising = [0.5, 0.6, 0.7, 0.8]
    results = {
        "settings": {"conditions": ["trained", "refined"], "shares": [1.0, 0.0]},
        "runs": [
            # trained: the full mix is good from epoch 1 on; without soft positives drawing is lost
            _run("trained", 1.0, rising, [(0.5, 0.5), (0.8, 0.8), (0.8, 0.8), (0.82, 0.82)]),
            _run("trained", 0.0, rising, [(0.5, 0.5), (0.8, 0.4), (0.8, 0.4), (0.82, 0.4)]),
            # refined needs two epochs of the full mix
            _run("refined", 1.0, rising, [(0.5, 0.5), (0.6, 0.6), (0.8, 0.8), (0.8, 0.8)]),
            _run("refined", 0.0, rising, [(0.5, 0.5), (0.6, 0.6), (0.8, 0.8), (0.8, 0.8)]),
        ],
    }
    tables = {c: policy_table(results, c) for c in ("trained", "refined")}
    full = next(r for r in tables["trained"] if (r["share"], r["epochs"], r["patience"]) == (1.0, 3, 0))
    assert full["recognition_weighted"] == 0.82 and full["recognition_weighted_kept"] == 1.0
    assert full["steps"] == 30 and full["flop"] == 300.0
    assert cheapest({"trained": tables["trained"]}) == (1.0, 1, 0)  # 0.8 keeps 98% of 0.82
    assert cheapest(tables) == (1.0, 2, 0)  # refined needs epoch 2; without soft positives trained draws badly
    assert cheapest(tables, keep=1.0) == (1.0, 3, 0)


def test_bench_cost_writes_only_where_asked_and_refuses_a_partial_full_recipe(
    tmp_path: Path, empty_cwd: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["bench", "cost", "--shares", "0.5", "1"]) == 2
    assert "the first one 1" in capsys.readouterr().err
    results, docs = tmp_path / "r.json", tmp_path / "report" / "cost.md"
    args = ["--concepts", "1", "--epochs", "1", "--shares", "1", "--conditions", "trained", "--threads", "1"]
    assert main(["bench", "cost", *args, "-o", str(results), "--docs", str(docs)]) == 0
    assert list(empty_cwd.iterdir()) == []
    saved = json.loads(results.read_text())
    (run,) = saved["runs"]
    assert [c["epoch"] for c in run["candidates"]] == [0, 1] and run["share"] == 1.0
    assert set(run["policies"]) == {"1/0", "1/1", "1/2", "1/3"}
    assert run["epoch_flop"] == pytest.approx(run["epoch_tokens"] * saved["flop_per_token"])
    assert all(0.0 <= c["test"]["recognition_weighted"] <= 1.0 for c in run["candidates"])
    assert saved["choice"]["epochs"] == 1 and "cheapest policy" in capsys.readouterr().out
    assert "| trained | x1 | 1 | 0 |" in docs.read_text()
    assert (docs.parent / "cost-recognition_weighted-steps.png").is_file()
