"""Training runs: lifecycle, progress, logs, checkpoints, interrupted runs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from store.errors import InvalidValueError, NotFoundError, PhotoError, RunStateError
from store.library import Library
from tests.store.helpers import state_bytes


def test_run_lifecycle_with_checkpoints(library: Library) -> None:
    library.concepts.add("bo")
    run = library.runs.create("bo", {"epochs": 15, "lr": 1e-3, "batch": 4})
    assert (run.status, run.progress, run.config["batch"]) == ("queued", 0.0, 4)
    run = library.runs.start(run.id)
    assert run.status == "running" and run.started_at and run.pid is not None

    library.runs.report(run.id, 0.25, step=10, total_steps=40, message="epoch 4/15")
    library.runs.log(run.id, "loss 2.31")
    library.runs.log(run.id, "loss 1.87")
    library.runs.log(run.id, "the index has no VQ tokens for this model", warning=True)
    optimizer = library.runs.folder(run.id) / "optimizer-10.bin"
    optimizer.write_bytes(b"engine-owned optimizer state")
    first = library.runs.add_checkpoint(
        run.id, state_bytes(seed=1), step=10, epoch=4, metrics={"clip_i": 0.7}, optimizer_state=optimizer
    )
    second = library.runs.add_checkpoint(run.id, state_bytes(seed=2), step=20, epoch=8, metrics={"clip_i": 0.78})
    assert first.optimizer_state == optimizer and second.optimizer_state is None
    assert [c.step for c in library.runs.checkpoints(run.id)] == [10, 20]
    assert first.path.exists()

    current = library.runs.get(run.id)
    assert (current.progress, current.step, current.total_steps, current.message) == (0.25, 10, 40, "epoch 4/15")
    lines = [(line.message, line.warning) for line in library.runs.log_lines(run.id)]
    assert lines == [("loss 2.31", False), ("loss 1.87", False), ("the index has no VQ tokens for this model", True)]
    assert [line.message for line in library.runs.log_lines(run.id, after=2)] == [lines[2][0]]

    best = library.tokens.add_from_checkpoint(second.id)
    assert best.run_id == run.id and best.sha256 == second.sha256 and best.metrics == {"clip_i": 0.78}
    assert library.concepts.get("bo").state == "trained"

    done = library.runs.finish(run.id, "done", metrics={"recognition": 0.84})
    assert (done.status, done.progress, done.metrics) == ("done", 1.0, {"recognition": 0.84})
    assert done.finished_at and [r.id for r in library.runs.list("bo")] == [run.id]


def test_status_changes_that_are_refused(library: Library) -> None:
    library.concepts.add("bo")
    run = library.runs.create("bo", {})
    with pytest.raises(RunStateError, match="queued"):
        library.runs.report(run.id, 0.5)
    with pytest.raises(RunStateError, match="cannot become done"):
        library.runs.finish(run.id, "done")
    with pytest.raises(RunStateError):
        library.runs.add_checkpoint(run.id, state_bytes(), step=1, epoch=0)
    assert library.runs.finish(run.id, "cancelled").status == "cancelled"
    with pytest.raises(RunStateError, match="cancelled"):
        library.runs.start(run.id)
    with pytest.raises(InvalidValueError, match="finishes as"):
        library.runs.finish(run.id, "paused")

    other = library.runs.start(library.runs.create("bo", {}).id)
    with pytest.raises(InvalidValueError, match="between 0 and 1"):
        library.runs.report(other.id, 1.5)
    library.runs.add_checkpoint(other.id, state_bytes(), step=5, epoch=1)
    with pytest.raises(InvalidValueError, match="already has a checkpoint at step 5"):
        library.runs.add_checkpoint(other.id, state_bytes(), step=5, epoch=1)
    outside = library.root / "elsewhere.bin"
    outside.write_bytes(b"x")
    with pytest.raises(InvalidValueError, match="inside"):
        library.runs.add_checkpoint(other.id, state_bytes(), step=6, epoch=1, optimizer_state=outside)
    failed = library.runs.finish(other.id, "failed", error="CUDA out of memory")
    assert (failed.status, failed.error) == ("failed", "CUDA out of memory")
    with pytest.raises(NotFoundError):
        library.runs.get(999)
    with pytest.raises(InvalidValueError, match="JSON"):
        library.runs.create("bo", {"callback": print})


def test_interrupted_run_is_marked_failed_on_open(tmp_path: Path) -> None:
    with Library.open(tmp_path / "lib") as library:
        library.concepts.add("bo")
        run = library.runs.start(library.runs.create("bo", {}).id)
        gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
        library.db.execute("UPDATE runs SET pid = ? WHERE id = ?", [int(gone.stdout), run.id])
        alive = library.runs.start(library.runs.create("bo", {}).id)  # this process: still running
    with Library.open(tmp_path / "lib") as library:
        interrupted = library.runs.get(run.id)
        assert interrupted.status == "failed" and "interrupted" in (interrupted.error or "")
        assert library.runs.get(alive.id).status == "running"


def test_removing_a_concept_waits_for_its_running_run(library: Library) -> None:
    library.concepts.add("bo")
    run = library.runs.start(library.runs.create("bo", {}).id)
    folder = library.runs.folder(run.id)
    (folder / "optimizer.bin").write_bytes(b"x")
    library.runs.add_checkpoint(run.id, state_bytes(), step=1, epoch=0)
    with pytest.raises(RunStateError, match="cancel it"):
        library.concepts.remove("bo")
    library.runs.finish(run.id, "cancelled")
    library.concepts.remove("bo")
    assert library.runs.list() == [] and folder.exists()  # in the trash: kept, but not listed
    library.concepts.empty_trash()
    assert not folder.exists()
    assert list((library.root / "tokens").rglob("*.safetensors")) == []
    assert library.runs.list() == []


def test_a_cancelled_or_interrupted_run_resumes(library: Library) -> None:
    library.concepts.add("bo")
    run = library.runs.start(library.runs.create("bo", {}).id)
    library.runs.add_checkpoint(run.id, state_bytes(), step=3, epoch=1)
    library.runs.finish(run.id, "cancelled")
    resumed = library.runs.resume(run.id)
    assert (resumed.status, resumed.finished_at, resumed.step) == ("running", None, 0)
    assert [c.step for c in library.runs.checkpoints(run.id)] == [3]
    library.runs.finish(run.id, "failed", error="killed")
    assert library.runs.resume(run.id).error is None
    library.runs.finish(run.id, "done")
    with pytest.raises(RunStateError, match="done"):
        library.runs.resume(run.id)


def test_a_run_keeps_every_steps_loss_and_its_checks(library: Library) -> None:
    from tests.store.helpers import image_bytes, noise_image

    library.concepts.add("bo")
    run = library.runs.start(library.runs.create("bo", {}).id)
    before = library.runs.add_check(run.id, step=0, metrics={"recognition_positive": 0.5, "held_out_photos": 2})
    library.runs.record_losses(run.id, [3.0, 2.5, 2.25])
    library.runs.record_losses(run.id, [2.0, 1.5], first_step=4)
    picture = image_bytes(noise_image(seed=5))
    at_3 = library.runs.add_check(run.id, step=3, metrics={"recognition_positive": 1.0}, picture=picture)
    assert before.path is None and at_3.path is not None and at_3.path.read_bytes() == picture
    assert library.runs.losses(run.id) == [(1, 3.0), (2, 2.5), (3, 2.25), (4, 2.0), (5, 1.5)]

    library.runs.finish(run.id, "cancelled")
    library.runs.resume(run.id)
    library.runs.forget_losses_after(run.id, 3)  # resumed from step 3: steps 4-5 are trained again
    library.runs.record_losses(run.id, [1.75], first_step=4)
    library.runs.add_check(run.id, step=3, metrics={"recognition_positive": 0.75}, picture=picture)
    assert library.runs.losses(run.id) == [(1, 3.0), (2, 2.5), (3, 2.25), (4, 1.75)]
    assert [(c.step, c.metrics["recognition_positive"]) for c in library.runs.checks(run.id)] == [(0, 0.5), (3, 0.75)]

    with pytest.raises(InvalidValueError, match="loss"):
        library.runs.record_losses(run.id, [float("nan")])
    with pytest.raises(PhotoError, match="sample picture"):
        library.runs.add_check(run.id, step=6, metrics={}, picture=b"not an image")
    library.runs.finish(run.id, "done")
    with pytest.raises(RunStateError):
        library.runs.record_losses(run.id, [1.0], first_step=6)
    assert len(library.runs.losses(run.id)) == 4  # a finished run's curve stays readable


def test_the_interrupted_run_is_the_latest_stopped_one_unless_a_later_one_finished(library: Library) -> None:
    library.concepts.add("bo")
    assert library.runs.interrupted("bo") is None
    first = library.runs.start(library.runs.create("bo", {}).id)
    library.runs.finish(first.id, "cancelled")
    assert library.runs.interrupted("bo").id == first.id
    second = library.runs.start(library.runs.create("bo", {}).id)
    assert library.runs.interrupted("bo").id == first.id  # a running run is skipped
    library.runs.finish(second.id, "failed", error="interrupted")
    assert library.runs.interrupted("bo").id == second.id
    library.runs.resume(second.id)
    library.runs.finish(second.id, "done")
    assert library.runs.interrupted("bo") is None
