"""The command line's progress bar draws any engine Progress event."""

from __future__ import annotations

import pytest

from desktop.cli.progress import show_progress
from engine.progress import Progress


def test_the_bar_shows_phase_steps_loss_and_time_left(capsys: pytest.CaptureFixture[str]) -> None:
    show_progress(Progress("training", 3, 12, loss=1.23456, eta_seconds=41.6, epoch=0))
    line = capsys.readouterr().err
    assert line.startswith("\rtraining") and f"[{'#' * 7}{'.' * 23}] 3/12 loss 1.235 42s left" in line
    assert not line.endswith("\n")
    show_progress(Progress("indexing", 5, 5))
    line = capsys.readouterr().err
    assert "] 5/5  \n" in line and "loss" not in line and "left" not in line
