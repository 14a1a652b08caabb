"""`familiar bench personalization` writes files only where asked, runs several seeds, and reports paired
differences with standard errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from desktop.cli.main import main


def test_bench_writes_nothing_without_out_and_pairs_over_seeds(
    tmp_path: Path, empty_cwd: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["bench", "personalization", "--concepts", "1", "--seeds", "2", "--epochs", "1", "--threads", "1"]
    assert main([*args, "--conditions", "trained", "text_prompt"]) == 0
    assert list(empty_cwd.iterdir()) == []  # no docs/, no results: nothing was asked for
    out = capsys.readouterr().out
    assert "wrote" not in out
    assert "trained - text_prompt: recognition_weighted " in out and "(2 concepts over 2 seeds)" in out

    results, docs = tmp_path / "r.json", tmp_path / "report" / "bench.md"
    assert (
        main([*args, "--seed", "3", "--conditions", "trained", "untrained", "-o", str(results), "--docs", str(docs)])
        == 0
    )
    saved = json.loads(results.read_text())
    assert [(c["name"], c["seed"]) for c in saved["concepts"]] == [("c0", 3), ("c0", 4)]
    assert saved["settings"]["seeds"] == 2 and saved["command"].endswith(f"--seeds 2 -o {results} --docs {docs}")
    row = next(r for r in saved["paired"] if r["other"] == "untrained" and r["metric"] == "recognition_weighted")
    diffs = [
        c["conditions"]["trained"]["recognition_weighted"] - c["conditions"]["untrained"]["recognition_weighted"]
        for c in saved["concepts"]
    ]
    assert row["units"] == 2 and row["mean"] == pytest.approx(sum(diffs) / 2)
    assert row["stderr"] == pytest.approx(abs(diffs[0] - diffs[1]) / 2)
    assert row["per_seed"] == {"3": pytest.approx(diffs[0]), "4": pytest.approx(diffs[1])}
    text = docs.read_text()
    assert "1 concepts x 2 seeds" in text and "`<c0>` (seed 4)" in text
    assert sorted(p.name for p in docs.parent.iterdir()) == ["bench-baselines.png", "bench-examples.png", "bench.md"]


def test_quick_runs_two_seeds_unless_told(tmp_path: Path) -> None:
    """`--quick` runs `QUICK_SEEDS` seeds of its concepts by default, and the command it records says so."""
    from engine.microworld.benchmark import QUICK, QUICK_SEEDS

    assert (QUICK.concepts, QUICK_SEEDS) == (5, 2)
    results = tmp_path / "quick.json"
    args = ["bench", "personalization", "--quick", "--concepts", "1", "--epochs", "1", "--threads", "1"]
    assert main([*args, "--seed", "7", "--conditions", "text_prompt", "-o", str(results)]) == 0
    saved = json.loads(results.read_text())
    assert [(c["name"], c["seed"]) for c in saved["concepts"]] == [("c0", 7), ("c0", 8)]
    assert saved["settings"]["seeds"] == 2 and "--quick --concepts 1" in saved["command"]
    assert main([*args, "--seed", "7", "--seeds", "1", "--conditions", "text_prompt", "-o", str(results)]) == 0
    assert [c["seed"] for c in json.loads(results.read_text())["concepts"]] == [7]


def test_report_only_needs_both_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "personalization", "--report-only", "-o", str(tmp_path / "r.json")]) == 2
    assert "give both" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_cost_choice_projects_the_full_recipe_with_the_epochs_it_ran() -> None:
    """The cost study's "full" 7B line is the full recipe as run (6 epochs here, set by `--epochs`), not always
    the paper's 15."""
    from desktop.cli.bench_cost import choose
    from engine.training.cost import project_7b
    from engine.training.recipe import PAPER

    results = json.loads((Path(__file__).parents[3] / "docs/results/cost_share033_seed5.json").read_text())
    assert results["settings"]["bench"]["epochs"] == 6
    full = choose(results)["projection_7b"]["full@0.4"]
    assert full["epochs"] == 6 and full["minutes"] == pytest.approx(project_7b(PAPER, 6, 0.4).minutes)
    assert full["minutes"] < project_7b(PAPER, 15, 0.4).minutes
