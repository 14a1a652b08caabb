"""The command line's progress for any engine `Progress` event, on stderr: on a terminal, one bar redrawn in
place with the time left; piped or logged, plain lines (each phase's start, every tenth of the way, its end),
so that a log holds a readable record rather than carriage returns."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from engine.progress import Progress, ProgressCallback

WIDTH = 30
PHASE_WIDTH = 12
LINE_STEPS = 10
"""Plain lines are written every 1/LINE_STEPS of a phase."""
CLEAR_LINE = "\x1b[K"


class _Rate:
    """The time left in a phase from its rate so far, for events that do not carry their own estimate."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self.clock = clock
        self.phase: str | None = None
        self.started = 0.0
        self.first_step = 0
        self.ended = False

    def phase_changed(self, update: Progress) -> bool:
        """Whether `update` starts a phase: another phase's name, or the same one again (after its end, or from
        an earlier step)."""
        again = update.phase == self.phase and not self.ended and update.step >= self.first_step
        self.ended = update.step >= update.total
        if again:
            return False
        self.phase, self.started, self.first_step = update.phase, self.clock(), update.step
        return True

    def eta(self, update: Progress) -> float | None:
        if update.step >= update.total:
            return None
        if update.eta_seconds is not None:
            return update.eta_seconds
        done = update.step - self.first_step
        if done <= 0:
            return None
        return (self.clock() - self.started) / done * (update.total - update.step)


def _details(update: Progress, eta: float | None) -> list[str]:
    parts = [f"{update.step}/{update.total}"]
    if update.loss is not None:
        parts.append(f"loss {update.loss:.3f}")
    if eta is not None:
        parts.append(f"{_duration(eta)} left")
    return parts


def _duration(seconds: float) -> str:
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds}s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m{seconds:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


class Bar:
    """`phase [####......] step/total loss L 1m05s left`, redrawn in place; the line ends at the phase's end."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = _Rate(clock)
        self.line = ""
        """The bar as last drawn while its phase runs; empty once the phase has ended."""

    def __call__(self, update: Progress) -> None:
        self.rate.phase_changed(update)
        filled = int(WIDTH * min(update.step, update.total) / max(update.total, 1))
        parts = [f"{update.phase:<{PHASE_WIDTH}} [{'#' * filled}{'.' * (WIDTH - filled)}]"]
        parts += _details(update, self.rate.eta(update))
        ended = update.step >= update.total
        self.line = "" if ended else f"{' '.join(parts)}  "
        print(f"\r{' '.join(parts)}  ", end="\n" if ended else "", file=sys.stderr, flush=True)

    def above(self, text: str) -> None:
        """Print a whole line of `text` where the bar is, then draw the bar again below it."""
        print(f"\r{CLEAR_LINE}{text}", file=sys.stderr)
        print(self.line, end="", file=sys.stderr, flush=True)


class Lines:
    """`phase: step/total (pct%), loss L, 1m05s left` as whole lines: when a phase starts, at every tenth of it
    and at its end."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = _Rate(clock)
        self.shown = -1

    def __call__(self, update: Progress) -> None:
        if self.rate.phase_changed(update):
            self.shown = -1
        tenth = LINE_STEPS * min(update.step, update.total) // max(update.total, 1)
        if tenth <= self.shown:
            return
        self.shown = tenth
        percent = 100 * min(update.step, update.total) // max(update.total, 1)
        details = _details(update, self.rate.eta(update))
        details[0] += f" ({percent}%)"
        print(f"{update.phase}: {', '.join(details)}", file=sys.stderr, flush=True)


def progress_bar(lines_when_piped: bool = False) -> ProgressCallback | None:
    """A `Bar` when stderr is a terminal; else plain `Lines` for long work (`lines_when_piped`: training,
    evaluation, indexing, benchmarks), or None (nothing in logs and pipes for short work such as loading)."""
    if sys.stderr.isatty():
        return Bar()
    return Lines() if lines_when_piped else None
