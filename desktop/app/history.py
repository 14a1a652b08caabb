"""What the library remembers about training, phrased for the views (store only: no Qt, no torch)."""

from __future__ import annotations

from dataclasses import dataclass

from desktop.services.verdict import raw_numbers
from store.library import Library
from store.models import Run


@dataclass(frozen=True)
class Stopped:
    """A run that stopped before its end, and the step of its last checkpoint (where Resume continues;
    the run row's own step is only reported about once a second, so it can lag behind)."""

    run: Run
    step: int

    def describe(self) -> str:
        how = "was cancelled" if self.run.status == "cancelled" else "was interrupted"
        return (
            f"Training <{self.run.concept}> {how} at step {self.step} of {self.run.total_steps}. "
            "Its checkpoint is saved: Resume continues from there."
        )


def resumable_run(library: Library, name: str) -> Stopped | None:
    """The concept's latest interrupted or cancelled run that has a checkpoint to continue from (the run
    `train_concept(resume=True)` picks), or None when its latest run finished or never checkpointed."""
    for run in library.runs.list(name):
        if run.status == "done":
            return None
        if run.status in ("failed", "cancelled"):
            saved = library.runs.checkpoints(run.id)
            return Stopped(run, saved[-1].step) if saved and saved[-1].optimizer_state is not None else None
    return None


def run_losses(library: Library, run: Run) -> tuple[list[tuple[int, float]], bool]:
    """The run's loss curve and whether it is per step: every step's loss where the run kept them, else (runs from
    before schema 5) the mean loss of each epoch at its checkpoints."""
    steps = library.runs.losses(run.id)
    if steps:
        return steps, True
    epochs = [
        (c.step, float(c.metrics["loss"]))
        for c in library.runs.checkpoints(run.id)
        if isinstance(c.metrics.get("loss"), float | int)
    ]
    return epochs, False


def describe_run(run: Run) -> str:
    """One line for the run list: number, status, steps and scores or error."""
    detail = raw_numbers(run.metrics) if run.status == "done" else (run.error or run.message)
    parts = [f"Run {run.id}", run.status, f"step {run.step}/{run.total_steps}" if run.total_steps else "", detail]
    return " \u00b7 ".join(part for part in parts if part)
