"""Ctrl-C during long work: ask it to stop after the current step (it saves a checkpoint first), not kill it."""

from __future__ import annotations

import signal
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType


@contextmanager
def stop_on_ctrl_c() -> Iterator[Callable[[], bool]]:
    """Within the block, Ctrl-C sets the flag that the yielded `cancelled()` reads; the previous handler comes
    back afterwards."""
    stop = threading.Event()

    def interrupt(_signum: int, _frame: FrameType | None) -> None:
        stop.set()
        print("\nfamiliar: stopping after this step and saving a checkpoint...", file=sys.stderr)

    previous = signal.signal(signal.SIGINT, interrupt)
    try:
        yield stop.is_set
    finally:
        signal.signal(signal.SIGINT, previous)
