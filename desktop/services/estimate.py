"""What a training run will take, said before it starts: steps, time and memory on the named device.

- Steps: the samples `personalize` will build from the concept's photos (augmented x3), the negatives it trains on
  (the other concepts' photos, less the held-out fifth), the facts' and descriptions' questions and, with an index
  (or the demo model's bundled subset), up to `soft_positives` look-alikes and `negatives` retrieved ones (an upper
  bound: the index may hold fewer);
  `ceil(samples / batch) x epochs`.
- Time: steps x seconds per step, measured on this library's latest finished run on the same model and device (its
  time from start to end over its steps, so describing, encoding and scoring are included). With no such run the
  time is not guessed: the view shows the measured ETA once training starts.
- Memory: `engine.model.memory.training_estimate` for the loaded model at the run's micro-batch, against what is
  free on its device now (what `check_training_memory` refuses on).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from store.library import Library
from store.models import Run

if TYPE_CHECKING:
    from desktop.services.personalize import TrainOptions
    from engine.inference.assistant import Assistant


@dataclass(frozen=True)
class MemoryNeed:
    needed: int
    available: int
    device: str
    description: str

    @property
    def fits(self) -> bool:
        return self.needed <= self.available


@dataclass(frozen=True)
class TrainingEstimate:
    """`steps` (an upper bound when `retrieval` adds look-alikes), seconds per step with the run it was measured on,
    and the memory need on the model's device (None when no model is loaded)."""

    steps: int
    upper_bound: bool
    seconds_per_step: float | None
    measured_on: Run | None
    memory: MemoryNeed | None

    @property
    def fits(self) -> bool:
        return self.memory is None or self.memory.fits

    def describe(self) -> str:
        """One or two plain lines for the view (and the CLI)."""
        steps = f"{'up to ' if self.upper_bound else ''}{self.steps} steps"
        if self.seconds_per_step is not None and self.measured_on is not None:
            time = (
                f"about {_duration(self.steps * self.seconds_per_step)} at {self.seconds_per_step:.2g} s a step"
                f" (measured on run {self.measured_on.id} of <{self.measured_on.concept}>)"
            )
        else:
            time = "time: shown once it starts (no earlier run on this model and device to measure from)"
        lines = [f"Estimate: {steps}, {time}."]
        if self.memory is not None:
            if self.memory.fits:
                lines.append(f"Memory: training {self.memory.description}.")
            else:
                lines.append(won_t_fit(f"training {self.memory.description}", self.memory.device))
        return "\n".join(lines)


def won_t_fit(detail: str, device: str) -> str:
    """The plain refusal when training does not fit beside the loaded model; `detail` gives the numbers."""
    where = "this GPU" if device.startswith("cuda") else "this computer's memory"
    return (
        f"Won't fit on {where}: {detail.rstrip('.')}. Close other programs that use it, or load the model with "
        "4-bit quantization or on another device in Settings."
    )


def sample_count(library: Library, name: str, options: TrainOptions, demo: bool) -> tuple[int, bool]:
    """(samples `personalize` builds for `name`, whether retrieval makes it an upper bound); `demo`: the model is
    the demo model, whose bundled subset is the index unless `bundled_index` is off."""
    from desktop.services.personalize import split_photos
    from engine.training.cost import epoch_samples
    from engine.training.data import fact_pairs

    concept = library.concepts.get(name)
    train, _held = split_photos(library.concepts.photos(name))
    others = sum(c.photo_count for c in library.concepts.list() if c.id != concept.id)
    negatives = min(others, options.negatives)
    retrieval = options.index is not None or (options.bundled_index and demo)
    if retrieval:
        negatives += 2 * (options.negatives // 2)
    facts = len(fact_pairs(concept.kind, concept.facts, name))
    soft_positives = options.soft_positives if retrieval else 0
    return epoch_samples(options, len(train), negatives, soft_positives, facts), retrieval


def measured_pace(library: Library, options: TrainOptions) -> tuple[float, Run] | None:
    """Seconds per step of the latest finished run on the same model and device, and that run."""
    for run in library.runs.list():
        same = run.config.get("model") == options.model and run.config.get("device") == options.device
        if same and run.status == "done" and run.started_at and run.finished_at and run.step:
            seconds = (_time(run.finished_at) - _time(run.started_at)).total_seconds()
            if seconds > 0:
                return seconds / run.step, run
    return None


def estimate_training(
    library: Library, name: str, options: TrainOptions, assistant: Assistant | None = None
) -> TrainingEstimate:
    """Steps, time and (with the loaded model in `assistant`) memory of training `name` with `options`."""
    demo = assistant.loaded.is_demo if assistant is not None else options.model == "demo"
    samples, upper = sample_count(library, name, options, demo)
    steps = math.ceil(samples / options.batch_size) * options.epochs
    pace = measured_pace(library, options)
    memory = None
    if assistant is not None:
        from engine.model.loading import loaded_training_shape
        from engine.model.memory import training_estimate

        loaded = assistant.loaded
        shape = loaded_training_shape(loaded, options.batch_size, options.micro_batch)
        estimate = training_estimate(loaded.config, loaded.device, loaded.dtype, loaded.quantized, shape)
        memory = MemoryNeed(estimate.needed, estimate.available, estimate.device, estimate.describe())
    return TrainingEstimate(steps, upper, pace[0] if pace else None, pace[1] if pace else None, memory)


def _time(stamp: str) -> datetime:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00"))


def _duration(seconds: float) -> str:
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds} s"
    minutes = round(seconds / 60)
    return f"{minutes} min" if minutes < 60 else f"{minutes // 60} h {minutes % 60:02d} min"
