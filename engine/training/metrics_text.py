"""How a checkpoint's metrics read in logs, on the command line and in the app (no torch here)."""

from __future__ import annotations

NOT_MEASURED = "not measured"
"""A metric with nothing to measure it on (e.g. recognition of others with no negatives) is None, shown so."""


def shown(value: object, digits: int = 3) -> str:
    """`0.750` for a number, `not measured` for None."""
    if value is None:
        return NOT_MEASURED
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)
