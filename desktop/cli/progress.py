"""The command line's progress bar: one line on stderr, redrawn in place, for any engine `Progress` event."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from engine.progress import Progress, ProgressCallback

WIDTH = 30
PHASE_WIDTH = 12


def show_progress(update: Progress) -> None:
    """Draw `phase [####......] step/total`, then the loss and the time left when the event has them; the line
    ends once step reaches total."""
    filled = int(WIDTH * min(update.step, update.total) / max(update.total, 1))
    parts = [f"{update.phase:<{PHASE_WIDTH}} [{'#' * filled}{'.' * (WIDTH - filled)}] {update.step}/{update.total}"]
    if update.loss is not None:
        parts.append(f"loss {update.loss:.3f}")
    if update.eta_seconds is not None:
        parts.append(f"{update.eta_seconds:.0f}s left")
    end = "\n" if update.step >= update.total else ""
    print(f"\r{' '.join(parts)}  ", end=end, file=sys.stderr, flush=True)


def progress_bar() -> ProgressCallback | None:
    """`show_progress` when stderr is a terminal, else None (no bar in logs and pipes)."""
    return show_progress if sys.stderr.isatty() else None
