"""What the library remembers about training, phrased for the views (store only: no Qt, no torch)."""

from __future__ import annotations

from dataclasses import dataclass

from engine.training.metrics_text import shown
from store.library import Library
from store.models import Run

SCORE_LABELS = (
    ("recognition", "recognition"),
    ("recognition_positive", "yes on its photos"),
    ("recognition_negative", "no on others"),
    ("image_similarity", "image similarity"),
    ("score", "score"),
)


def describe_scores(metrics: dict[str, object]) -> str:
    """e.g. "recognition 0.83 · yes on its photos 1.00 · no on others 0.67 · score 0.83". A score stored as None
    reads "not measured", and the loss the checkpoint was then chosen by follows."""
    parts = []
    for key, label in SCORE_LABELS:
        value = metrics.get(key, "")
        if value is None or isinstance(value, float | int):
            parts.append(f"{label} {shown(None if value is None else float(value), 2)}")
    if "score" in metrics and metrics["score"] is None:
        for key, label in (("held_out_loss", "held-out loss"), ("loss", "training loss")):
            if isinstance(metrics.get(key), float | int):
                parts.append(f"chosen by {label} {float(metrics[key]):.2f}")  # type: ignore[arg-type]
                break
    return " \u00b7 ".join(parts)


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


def epoch_losses(library: Library, run: Run) -> list[tuple[int, float]]:
    """(step, mean loss of the epoch) at each of the run's checkpoints."""
    return [
        (c.step, float(c.metrics["loss"]))
        for c in library.runs.checkpoints(run.id)
        if isinstance(c.metrics.get("loss"), float | int)
    ]


def describe_run(run: Run) -> str:
    """One line for the run list: number, status, steps and scores or error."""
    detail = describe_scores(run.metrics) if run.status == "done" else (run.error or run.message)
    parts = [f"Run {run.id}", run.status, f"step {run.step}/{run.total_steps}" if run.total_steps else "", detail]
    return " \u00b7 ".join(part for part in parts if part)
