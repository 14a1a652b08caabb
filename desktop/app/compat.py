"""A guard for PySide6-Essentials 6.12.0 on CPython 3.11.

That build returns `None` from every wrapped C++ method that returns void without taking a reference to it
(harmless on Python 3.12+, where None is immortal). On 3.11 each such call (`setText`, `deleteLater`,
`processEvents`...) drops None's reference count by one, and after a few thousand calls CPython aborts with
"Fatal Python error: none_dealloc: deallocating None". Measured here: 100 `QLabel.setText` calls lower
`sys.getrefcount(None)` by 100 on 6.12.0 and by 0 on 6.11.3. Until the pin moves, the app gives None a
reserve of references so large that no session can use it up, which is what 3.12 does by design.
"""

from __future__ import annotations

import ctypes
import sys

from PySide6 import __version__ as PYSIDE_VERSION

AFFECTED_PYSIDE = ("6.12.0",)
RESERVE = 1 << 40


def affected() -> bool:
    return sys.version_info < (3, 12) and PYSIDE_VERSION in AFFECTED_PYSIDE


def guard_none_refcount() -> None:
    """Add RESERVE references to None (once) where the PySide6 bug applies."""
    if affected() and sys.getrefcount(None) < RESERVE:
        ctypes.c_ssize_t.from_address(id(None)).value += RESERVE
