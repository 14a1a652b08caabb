"""Familiar's desktop window (PySide6).

Importing any module here must not import torch: the engine is imported lazily inside worker threads
(`desktop.app.engine_host`, `desktop.app.training`), so the window appears at once while the model loads
behind a status indicator. Importing the package applies `compat.guard_none_refcount` (a PySide6 6.12.0 bug
on Python 3.11) before any Qt call is made.
"""

from desktop.app.compat import guard_none_refcount

guard_none_refcount()
