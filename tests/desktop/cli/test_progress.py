"""The command line's progress: a bar with the time left on a terminal, plain lines when piped."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from desktop.cli.main import main
from desktop.cli.progress import Bar, Lines, progress_bar
from engine.progress import Progress


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_the_bar_shows_phase_steps_loss_and_time_left(capsys: pytest.CaptureFixture[str]) -> None:
    bar = Bar()
    bar(Progress("training", 3, 12, loss=1.23456, eta_seconds=41.6, epoch=0))
    line = capsys.readouterr().err
    assert line.startswith("\rtraining") and f"[{'#' * 7}{'.' * 23}] 3/12 loss 1.235 42s left" in line
    assert not line.endswith("\n")
    bar(Progress("indexing", 5, 5))
    line = capsys.readouterr().err
    assert "] 5/5  \n" in line and "loss" not in line and "left" not in line


def test_the_bar_estimates_the_time_left_from_the_pace_so_far(capsys: pytest.CaptureFixture[str]) -> None:
    clock = Clock()
    bar = Bar(clock)
    bar(Progress("indexing", 0, 100))
    clock.now = 30.0
    bar(Progress("indexing", 25, 100))  # 30 s for 25 images: 90 s for the other 75
    assert "25/100 1m30s left" in capsys.readouterr().err
    bar.above("a message")
    assert (
        capsys.readouterr().err
        == "\r\x1b[Ka message\n" + "indexing".ljust(12) + f" [{'#' * 7}{'.' * 23}] 25/100 1m30s left  "
    )


def test_piped_progress_is_a_line_per_tenth_of_each_phase(capsys: pytest.CaptureFixture[str]) -> None:
    clock = Clock()
    lines = Lines(clock)
    for step in range(0, 201):
        clock.now = step / 2
        lines(Progress("training", step, 200, loss=1.0, eta_seconds=(200 - step) / 2 if step else None))
    lines(Progress("saving", 1, 1))
    for step in range(1, 3):
        lines(Progress("training", step, 2))  # the same phase again, after its end
    err = capsys.readouterr().err
    assert "\r" not in err
    shown = err.splitlines()
    assert len(shown) == 11 + 1 + 2
    assert shown[0] == "training: 0/200 (0%), loss 1.000"
    assert shown[1] == "training: 20/200 (10%), loss 1.000, 1m30s left"
    assert shown[10] == "training: 200/200 (100%), loss 1.000"
    assert shown[11] == "saving: 1/1 (100%)"
    assert shown[12] == "training: 1/2 (50%)"


def test_which_progress_depends_on_the_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    assert progress_bar() is None and isinstance(progress_bar(lines_when_piped=True), Lines)
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    assert isinstance(progress_bar(), Bar) and isinstance(progress_bar(lines_when_piped=True), Bar)


def test_index_build_writes_plain_progress_lines_when_piped(
    dreambooth: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["index", "build", str(dreambooth / "dog"), "-o", str(tmp_path / "i"), "--embedder", "demo"]
    assert main([*argv, "--batch-size", "1"]) == 0
    err = capsys.readouterr().err
    assert "indexing: 1/5 (20%)" in err and "indexing: 5/5 (100%)" in err and "\r" not in err
