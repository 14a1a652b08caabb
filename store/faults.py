"""Named points inside the store's write paths, where tests inject crashes.

Each multi-step write calls `reach(name)` between its steps. In normal use nothing is installed and it
does nothing; a test installs a hook (raise an exception, or end the process) to check that a failure
at that step leaves the library as it was.
"""

from __future__ import annotations

from collections.abc import Callable

_hook: Callable[[str], None] | None = None


def reach(name: str) -> None:
    """Mark that a write has reached the step `name`."""
    if _hook is not None:
        _hook(name)


def install(hook: Callable[[str], None] | None) -> None:
    """Call `hook(name)` at every fault point from now on (None removes it)."""
    global _hook
    _hook = hook
