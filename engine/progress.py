"""Progress of long work, one event type for all of it: loading a model, building an index, embedding images,
drawing a picture, training, evaluating. Callers adapt it (the CLI's bar, the app's widgets)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Progress:
    """`step` of `total` done in `phase`; training adds the step's loss, the time left in seconds and the
    (0-based) epoch of the step."""

    phase: str
    step: int
    total: int
    loss: float | None = None
    eta_seconds: float | None = None
    epoch: int | None = None


ProgressCallback = Callable[[Progress], None]


@dataclass(frozen=True)
class Notice:
    """A warning the user should see that does not stop the work, e.g. "the remote kNN service failed; look-alikes
    came from the offline index". Status callbacks get plain strings for phases and a `Notice` for warnings; the
    CLI prints it as a note and the app keeps it in view."""

    text: str


Status = Callable[[str | Notice], None]
