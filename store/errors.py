"""Errors the store raises; each message is meant for the user."""

from __future__ import annotations

import errno
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager


class StoreError(Exception):
    """Base class for library errors the user can act on."""


class InvalidValueError(StoreError):
    """A name, kind, role, text or number that the library does not accept."""


class ConceptExistsError(StoreError):
    """A concept with that name (ignoring case) is already in the library; `name` is the name asked for."""

    def __init__(self, message: str, name: str | None = None) -> None:
        super().__init__(message)
        self.name = name


class NotFoundError(StoreError):
    """No concept, photo, token version, run or image with that name or id."""


class PhotoError(StoreError):
    """A photo that cannot be imported: not an image, damaged, too large, too small."""


class DuplicatePhotoError(PhotoError):
    """The same photo twice in one concept."""


class TokenFileError(StoreError):
    """A learned-token (concept state) file that is malformed."""


class ArchiveError(StoreError):
    """A `.familiar` archive that is unsafe, damaged or inconsistent."""


class TargetExistsError(StoreError):
    """A file the library would write (an export) already exists and replacing it was not asked for."""


class SchemaError(StoreError):
    """A library database this version cannot open (newer, or not a Familiar library)."""


class RunStateError(StoreError):
    """A training-run change that its status does not allow."""


class StorageFullError(StoreError):
    """The disk is full; nothing was changed."""


class LibraryBusyError(StoreError):
    """Another process kept the library locked for too long."""


_FULL_ERRNOS = {errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)}


@contextmanager
def storage_errors(where: str) -> Iterator[None]:
    """Turn disk-full and lock-timeout failures (OS or SQLite) into a StoreError naming `where`."""
    try:
        yield
    except OSError as exc:
        if exc.errno in _FULL_ERRNOS:
            raise StorageFullError(
                f"not enough disk space to write to {where}; free some space and try again (nothing was changed)"
            ) from exc
        raise
    except sqlite3.OperationalError as exc:
        text = str(exc)
        if "disk is full" in text or "database or disk is full" in text:
            raise StorageFullError(
                f"not enough disk space to write to {where}; free some space and try again (nothing was changed)"
            ) from exc
        if "locked" in text or "busy" in text:
            raise LibraryBusyError(
                f"the library at {where} is busy (another Familiar process is writing); try again"
            ) from exc
        raise
