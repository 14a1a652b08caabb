"""`familiar train`: resuming a run killed before its first checkpoint, and the remote kNN option."""

from __future__ import annotations

from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import pytest

from desktop.cli.main import main
from desktop.services import personalize
from desktop.services.personalize import TrainOptions
from engine.training.recipe import Recipe
from store.library import Library

QUICK = TrainOptions(
    device="cpu",
    epochs=1,
    negatives=2,
    recognition_per_photo=1,
    generation_per_photo=1,
    qa_repeats=1,
    augment=False,
    describe_photos=False,
    bundled_index=False,
)


@pytest.fixture()
def data(tmp_path: Path, dreambooth: Path) -> Path:
    with Library.open(tmp_path / "library") as library:
        library.concepts.add("bo", sorted((dreambooth / "dog").glob("*.jpg"))[:3], kind="pet")
    return tmp_path / "library"


def test_resume_after_a_kill_before_the_first_checkpoint_starts_the_run_again(
    data: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with Library.open(data) as library:
        run = library.runs.create("bo", asdict(QUICK))
        library.runs.start(run.id)
        library.runs.report(run.id, 0.1, step=1, total_steps=10, message="epoch 1")
        library.db.execute("UPDATE runs SET pid = ? WHERE id = ?", [2**22 + 12345, run.id])  # its process is gone
    with Library.open(data) as library:  # opening marks it failed ("interrupted"), as after a kill
        killed = library.runs.get(run.id)
        assert killed.status == "failed" and not library.runs.checkpoints(run.id)

    assert main(["--data-dir", str(data), "train", "bo", "--resume"]) == 0
    out, err = capsys.readouterr()
    assert f"run {run.id} stopped before its first epoch's checkpoint; starting it again from the beginning" in err
    assert "trained <bo>" in out
    with Library.open(data) as library:
        finished = library.runs.get(run.id)
        assert finished.status == "done" and [c.epoch for c in library.runs.checkpoints(run.id)] == [0, 1]
        assert library.concepts.get("bo").state == "trained"
        assert any("started again from the beginning" in line.message for line in library.runs.log_lines(run.id))
        assert [r.id for r in library.runs.list("bo")] == [run.id]


def _captured_options(monkeypatch: pytest.MonkeyPatch) -> list[TrainOptions]:
    seen: list[TrainOptions] = []

    def record(_library: Any, _name: str, options: TrainOptions, **_kwargs: Any) -> Any:
        seen.append(options)
        raise KeyboardInterrupt  # stop here: only the options are under test

    monkeypatch.setattr(personalize, "train_concept", record)
    return seen


def test_remote_knn_is_off_by_default_and_passed_when_given(
    data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    seen = _captured_options(monkeypatch)
    assert main(["--data-dir", str(data), "train", "bo"]) == 130
    url = "https://knn.example.org/knn-service"
    assert main(["--data-dir", str(data), "train", "bo", "--index", str(tmp_path), "--remote-knn", url]) == 130
    assert [options.remote_knn_url for options in seen] == [None, url]
    assert replace(seen[1], remote_knn_url=None, index=None) == seen[0]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--remote-knn", "https://knn.example.org/knn-service"], "--remote-knn needs --index"),
        (["--index", "{tmp}", "--remote-knn", "ftp://knn.example.org/"], "only http and https URLs"),
    ],
)
def test_remote_knn_mistakes_are_refused_before_training(
    data: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    extra: list[str],
    message: str,
) -> None:
    seen = _captured_options(monkeypatch)
    argv = ["--data-dir", str(data), "train", "bo", *(arg.format(tmp=tmp_path) for arg in extra)]
    assert main(argv) == 2
    assert message in capsys.readouterr().err and not seen


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["train", "nobody"], "no concept named 'nobody'"),
        (["train", "nobody", "--resume"], "no concept named 'nobody'"),
        (["train", "empty"], "<empty> has no training photos"),
        (["train", "bo", "--index", "{tmp}/missing"], "is not a folder"),
        (["train", "bo", "--index", "{tmp}", "--embedder-weights", "{tmp}/none.pt"], "is not a file"),
    ],
)
def test_mistakes_are_refused_before_the_model_loads(
    data: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    argv: list[str],
    message: str,
) -> None:
    from engine.model import loading

    def refuse(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("the model was loaded before the check")

    monkeypatch.setattr(loading, "load_model", refuse)
    with Library.open(data) as library:
        library.concepts.add("empty", kind="pet")
    assert main(["--data-dir", str(data), *(arg.format(tmp=tmp_path) for arg in argv)]) == 2
    assert message in capsys.readouterr().err


def test_patience_comes_from_the_recipe_and_the_command_line(
    data: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    seen = _captured_options(monkeypatch)
    assert main(["--data-dir", str(data), "train", "bo"]) == 130
    assert main(["--data-dir", str(data), "train", "bo", "--patience", "0"]) == 130
    assert [options.patience for options in seen] == [Recipe().patience, 0]
    assert main(["--data-dir", str(data), "train", "bo", "--patience", "-1"]) == 2
    assert "patience cannot be negative" in capsys.readouterr().err and len(seen) == 2
    old_run = {k: v for k, v in asdict(seen[0]).items() if k != "patience"}
    assert TrainOptions.from_config(old_run).patience == 0  # a run from before early stopping resumes without it
