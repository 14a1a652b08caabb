"""The first concept of an empty library on the demo model: with the bundled subset (the default) it trains with
look-alikes and negatives and reports real negative scores; with the subset turned off there are no negatives,
recognition reads "not measured" and the checkpoint is chosen by a loss, which a notice names."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import torch
from PIL import Image

from desktop.cli.main import main
from desktop.services.personalize import TrainOptions, train_concept
from engine.microworld.world import BACKGROUNDS, Scene, render, sample_identity
from store.library import Library

SMALL = TrainOptions(
    device="cpu",
    epochs=2,
    soft_positives=15,
    negatives=10,
    recognition_per_photo=1,
    generation_per_photo=1,
    qa_repeats=1,
    augment=False,
    describe_photos=False,
)


@pytest.fixture(autouse=True)
def _threads() -> None:
    torch.set_num_threads(2)


def _creature_photos(folder: Path, count: int) -> list[Path]:
    """`count` renders of one creature on different backgrounds, saved as 64x64 PNG files (a library photo is
    at least 64 pixels a side)."""
    rng = random.Random(7)
    identity = sample_identity(rng)
    folder.mkdir(parents=True)
    paths = []
    for number, background in enumerate(list(BACKGROUNDS)[:count]):
        path = folder / f"{number}.png"
        render(Scene(identity, "large", "centre", background)).resize((64, 64), Image.Resampling.NEAREST).save(path)
        paths.append(path)
    return paths


@pytest.fixture()
def library(tmp_path: Path) -> Library:
    """An empty library but for one concept, `bo`, with 4 photos (the last is held out for selection)."""
    library = Library.open(tmp_path / "library")
    library.concepts.add("bo", _creature_photos(tmp_path / "photos", 4), kind="pet")
    yield library
    library.close()


def _log(library: Library, run_id: int) -> list[tuple[str, bool]]:
    return [(line.message, line.warning) for line in library.runs.log_lines(run_id)]


def test_the_first_concept_trains_with_negatives_from_the_bundled_subset(library: Library) -> None:
    run = train_concept(library, "bo", SMALL)
    assert run.status == "done"
    log = _log(library, run.id)
    assert any("look-alikes from the offline index" in m and m.rstrip().endswith("demo-subset") for m, _ in log), log
    assert not any("not measured" in m for m, _ in log)
    for checkpoint in library.runs.checkpoints(run.id):
        metrics = checkpoint.metrics
        assert isinstance(metrics["recognition_negative"], float)
        assert isinstance(metrics["score"], float) and 0.0 <= metrics["image_similarity"] <= 1.0
        assert "held_out_loss" not in metrics


def test_without_the_subset_recognition_is_not_measured_and_the_held_out_loss_chooses(library: Library) -> None:
    run = train_concept(library, "bo", TrainOptions(**{**vars(SMALL), "bundled_index": False, "epochs": 3}))
    assert run.status == "done"
    checkpoints = library.runs.checkpoints(run.id)
    for checkpoint in checkpoints:
        metrics = checkpoint.metrics
        assert metrics["recognition_negative"] is None and metrics["recognition"] is None
        assert metrics["score"] is None and isinstance(metrics["recognition_positive"], float)
        assert metrics["held_out_loss"] > 0
    lowest = min(checkpoints, key=lambda c: (c.metrics["held_out_loss"], -c.step))
    assert run.metrics["best_step"] == lowest.step
    log = _log(library, run.id)
    assert (
        "no negatives (no other concepts and no index): recognition is not measured; checkpoints are chosen by the "
        "loss on the 1 held-out photo",
        True,
    ) in log
    assert any(m.startswith("checkpoint at step") and "recognition_negative not measured" in m for m, _ in log)


def test_with_one_photo_and_no_negatives_the_training_loss_chooses(tmp_path: Path) -> None:
    with Library.open(tmp_path / "one") as library:
        library.concepts.add("bo", _creature_photos(tmp_path / "photos", 1), kind="pet")
        run = train_concept(library, "bo", TrainOptions(**{**vars(SMALL), "bundled_index": False}))
        checkpoints = library.runs.checkpoints(run.id)
        assert all(c.metrics["recognition_positive"] is None and "held_out_loss" not in c.metrics for c in checkpoints)
        start, *trained = checkpoints
        assert start.step == 0 and "loss" not in start.metrics  # the start rows: no training loss, not a candidate
        assert run.metrics["best_step"] == min(trained, key=lambda c: (c.metrics["loss"], -c.step)).step
        assert any("chosen by the training loss" in m and warning for m, warning in _log(library, run.id))


def test_familiar_train_reports_real_negative_scores_and_not_measured_without_the_subset(
    library: Library, capsys: pytest.CaptureFixture[str]
) -> None:
    data = ["--data-dir", str(library.layout.root)]
    quick = ["--epochs", "1", "--soft-positives", "15", "--negatives", "10", "--device", "cpu"]
    assert main([*data, "train", "bo", *quick]) == 0
    out = capsys.readouterr().out
    score = out.split("recognition_negative ")[1].split(",")[0]
    assert float(score) >= 0.0, out
    assert main([*data, "train", "bo", *quick, "--no-index"]) == 0
    captured = capsys.readouterr()
    assert "recognition_negative not measured" in captured.out and "score not measured" in captured.out
    assert "familiar: note: no negatives" in captured.err


def test_a_subset_for_another_demo_build_is_skipped_with_a_note(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import json
    import shutil

    from desktop.services.personalize import index_to_use
    from engine.inference.assistant import Assistant
    from engine.microworld import subset
    from engine.model.loading import load_model

    assistant = Assistant(load_model("demo", device="cpu"))
    assert index_to_use(SMALL, assistant) == (subset.bundled_subset_path(), [])
    assert index_to_use(TrainOptions(**{**vars(SMALL), "bundled_index": False}), assistant) == (None, [])
    assert index_to_use(TrainOptions(**{**vars(SMALL), "index": str(tmp_path)}), assistant) == (tmp_path, [])
    stale = tmp_path / "demo-subset"
    shutil.copytree(subset.bundled_subset_path(), stale)
    manifest = json.loads((stale / "manifest.json").read_text())
    manifest["vq"]["model_fingerprint"] = "0" * 64
    (stale / "manifest.json").write_text(json.dumps(manifest))
    monkeypatch.setattr(subset, "bundled_subset_path", lambda: stale)
    index, warnings = index_to_use(SMALL, assistant)
    assert index is None and "built for another build of the demo model" in warnings[0]


def test_runs_from_before_the_subset_resume_without_it() -> None:
    from dataclasses import asdict

    assert TrainOptions.from_config({"epochs": 2}).bundled_index is False
    assert TrainOptions.from_config(asdict(SMALL)).bundled_index is True
