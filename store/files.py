"""Files beside the database, and changes that write files and rows together or not at all.

Every file goes through the same steps: written under `tmp/` with a random name, fsynced, then, while
the change holds the database's write lock, renamed to its content-addressed place. Before placing,
the change writes a journal naming the files it is about to place or move to `trash/`. On success the
rows commit, trashed files are deleted and the journal goes; on an exception the placed files are
removed, trashed ones restored, the rows rolled back. After a hard crash the journal remains, and the
next process to open the library finishes the cleanup (see `recover`). Placing and removing happen
only under the write lock, so a change never races another process's change or cleanup.

Temporary files and journals are named after the process writing them (`<pid>-<start ms>.<random>`), so
recovery tells a crashed process's leftovers from the files of a change that is still going on (which
may be deleting its trashed files right after its commit) and leaves the latter alone.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import shutil
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
from sqlite_utils import Database

from store import faults
from store.errors import StoreError, storage_errors
from store.paths import AREAS, Layout
from store.schema import FILE_REFERENCES

STALE_PART_S = 3600.0  # a `*.part` file without an owner tag (older Familiar) this old belongs to no live write
_START_SLACK_MS = 1000  # process start times read twice may differ by this much (clock adjustments)
_in_flight: set[str] = set()  # journal names of this process's changes that have not ended


@functools.cache
def _tag_of(pid: int) -> str:
    return f"{pid}-{round(psutil.Process(pid).create_time() * 1000)}"


def owner_tag() -> str:
    """This process as `<pid>-<start time in ms>`: unlike a bare pid, never the tag of a later process."""
    return _tag_of(os.getpid())


def temporary_name(suffix: str) -> str:
    """A fresh file name that records this process as its owner: `<owner tag>.<random hex><suffix>`."""
    return f"{owner_tag()}.{uuid.uuid4().hex}{suffix}"


def owner_alive(name: str) -> bool | None:
    """Whether the process that named a file with `temporary_name` still runs; None for other names."""
    pid_text, _, start_text = name.split(".", 1)[0].partition("-")
    if not (pid_text.isdigit() and start_text.isdigit()):
        return None
    try:
        return abs(psutil.Process(int(pid_text)).create_time() * 1000 - int(start_text)) <= _START_SLACK_MS
    except psutil.NoSuchProcess:
        return False
    except psutil.Error:  # it exists but cannot be inspected (another user's process): assume it is ours
        return True


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _write_durably(path: Path, data: bytes) -> None:
    """Create `path` with `data` and flush it to the disk."""
    with open(path, "xb") as out:
        out.write(data)
        out.flush()
        os.fsync(out.fileno())


def fsync_dir(folder: Path) -> None:
    """Make a rename inside `folder` durable (POSIX; Windows has no directory handles to sync)."""
    if os.name != "posix":
        return
    handle = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(handle)
    finally:
        os.close(handle)


def write_file_atomically(path: Path, data: bytes, tmp_dir: Path) -> None:
    """Write a whole file under a temporary name in `tmp_dir`, fsync it, then rename it to `path`."""
    tmp = tmp_dir / temporary_name(".part")
    try:
        with storage_errors(str(path.parent)):
            _write_durably(tmp, data)
            os.replace(tmp, path)
            fsync_dir(path.parent)
    finally:
        tmp.unlink(missing_ok=True)


def is_referenced(db: Database, area: str, sha256: str) -> bool:
    """Whether any row refers to the file with this hash in `area`."""
    return any(
        db.execute(f"SELECT 1 FROM {table} WHERE {column} = ? LIMIT 1", [sha256]).fetchone()
        for table, column in FILE_REFERENCES[area]
    )


def referenced_hashes(db: Database, area: str) -> set[str]:
    return {
        row[0]
        for table, column in FILE_REFERENCES[area]
        for row in db.execute(f"SELECT DISTINCT {column} FROM {table}")
    }


@dataclass
class _Staged:
    area: str
    sha256: str
    ext: str
    tmp: Path


@dataclass
class Change:
    """One all-or-nothing change to rows and files; made by `change()`, not directly."""

    db: Database
    layout: Layout
    _staged: list[_Staged] = field(default_factory=list)
    _placed: list[Path] = field(default_factory=list)
    _trashed: list[tuple[Path, Path]] = field(default_factory=list)
    _run_folders: list[Path] = field(default_factory=list)
    _journal: Path | None = None
    locked: bool = False

    def stage(self, area: str, data: bytes, ext: str, *, key: str | None = None) -> str:
        """Write `data` to a temporary file (placed when the change locks); returns the hash naming it.

        Files are named by their own sha256, except derived ones (thumbnails) which pass the `key` of
        the file they derive from.
        """
        sha = key or sha256_hex(data)
        tmp = self.layout.tmp / temporary_name(".part")
        self._staged.append(_Staged(area, sha, ext, tmp))
        with storage_errors(str(self.layout.root)):
            _write_durably(tmp, data)
        faults.reach(f"staged {area}")
        if self.locked:
            self._place_staged()
        return sha

    def lock(self) -> None:
        """Take the library's write lock (other writers wait; readers go on) and place staged files."""
        with storage_errors(str(self.layout.root)):
            self.db.execute("BEGIN IMMEDIATE")
        self.locked = True
        self._place_staged()

    def discard(self, area: str, sha256: str, ext: str) -> None:
        """Remove a file once no row refers to it; call after deleting the rows, under the lock."""
        if not self.locked:
            raise RuntimeError("discard() needs the write lock")
        final = self.layout.file(area, sha256, ext)
        if not final.exists() or is_referenced(self.db, area, sha256):
            return
        trash = self.layout.trash / f"{uuid.uuid4().hex}.{area}.{final.name}"
        self._trashed.append((final, trash))
        self._write_journal()
        os.replace(final, trash)
        faults.reach(f"trashed {area}")

    def discard_run_folder(self, folder: Path) -> None:
        """Delete a training run's folder once the change commits; call after deleting the run's row."""
        if not self.locked:
            raise RuntimeError("discard_run_folder() needs the write lock")
        if folder.exists():
            self._run_folders.append(folder)
            self._write_journal()

    def _place_staged(self) -> None:
        new = [s for s in self._staged if not self.layout.file(s.area, s.sha256, s.ext).exists()]
        if new:
            self._placed.extend(self.layout.file(s.area, s.sha256, s.ext) for s in new)
            self._write_journal()
        for staged in self._staged:
            final = self.layout.file(staged.area, staged.sha256, staged.ext)
            if staged in new:
                final.parent.mkdir(exist_ok=True)
                with storage_errors(str(self.layout.root)):
                    os.replace(staged.tmp, final)
                    fsync_dir(final.parent)
                faults.reach(f"placed {staged.area}")
            else:
                staged.tmp.unlink(missing_ok=True)
        self._staged.clear()

    def _write_journal(self) -> None:
        if self._journal is None:
            self._journal = self.layout.tmp / temporary_name(".journal")
            _in_flight.add(self._journal.name)
        entry = {
            "placed": [str(p.relative_to(self.layout.root)) for p in self._placed],
            "trashed": [
                [str(f.relative_to(self.layout.root)), str(t.relative_to(self.layout.root))] for f, t in self._trashed
            ],
            "run_folders": [folder.name for folder in self._run_folders],
        }
        write_file_atomically(self._journal, json.dumps(entry).encode(), self.layout.tmp)

    def _commit(self) -> None:
        faults.reach("commit")
        with storage_errors(str(self.layout.root)):
            self.db.execute("COMMIT")
        self.locked = False  # committed: from here on nothing is undone
        faults.reach("committed")
        with suppress(OSError):  # on failure the journal stays and the next open empties trash/
            for _final, trash in self._trashed:
                trash.unlink(missing_ok=True)
            for folder in self._run_folders:
                shutil.rmtree(folder, ignore_errors=True)
            self._end_journal()

    def _abort(self) -> None:
        undone = True
        for final in self._placed:
            try:
                final.unlink(missing_ok=True)
            except OSError:
                undone = False
        for final, trash in reversed(self._trashed):
            try:
                os.replace(trash, final)
            except OSError:
                undone = False
        self.db.rollback()
        if undone:
            self._end_journal()

    def _end_journal(self) -> None:
        if self._journal is not None:
            self._journal.unlink(missing_ok=True)
            _in_flight.discard(self._journal.name)
            self._journal = None

    def _end(self) -> None:
        """Drop staged files never placed; a journal still here is left for recovery to finish."""
        for staged in self._staged:
            staged.tmp.unlink(missing_ok=True)
        self._staged.clear()
        if self._journal is not None:
            _in_flight.discard(self._journal.name)


@contextmanager
def change(db: Database, layout: Layout, *, lock: bool = False) -> Iterator[Change]:
    """An all-or-nothing change: stage files, `lock()`, write rows; commits when the block ends.

    Any exception (a crash injected at a fault point included) undoes the files and the rows.
    """
    if db.conn.in_transaction:
        raise RuntimeError("a change cannot start inside another transaction")
    current = Change(db, layout)
    try:
        with storage_errors(str(layout.root)):
            if lock:
                current.lock()
            yield current
            if current.locked:
                current._commit()
    except BaseException:
        if current.locked:
            current._abort()
        raise
    finally:
        current._end()


@contextmanager
def reading(db: Database) -> Iterator[Database]:
    """A read transaction: several queries see one consistent snapshot, even while a writer commits."""
    if db.conn.in_transaction:
        yield db
        return
    db.execute("BEGIN")
    try:
        yield db
    finally:
        db.rollback()


def recover(db: Database, layout: Layout) -> int:
    """Finish what crashed changes left: journals, trash, temporary files. Returns files removed.

    Only leftovers of processes that are gone are touched: a change still running, or deleting its
    trashed files just after its commit, is left to finish. Cheap when there is nothing to do (two
    folder listings), so the library runs it on every open, and without the write lock unless a
    crashed change left work.
    """
    removed = remove_dead_parts(layout.tmp)
    if _unfinished(layout) == ([], []):
        return removed
    with change(db, layout, lock=True):
        journals, trash = _unfinished(layout)  # again, now that no change can be half done
        for journal in journals:
            removed += _replay_journal(db, layout, journal)
        for leftover in trash:
            removed += _settle_trashed(db, layout, leftover)
    return removed


def _unfinished(layout: Layout) -> tuple[list[Path], list[Path]]:
    """Journals of changes whose process is gone, and trashed files that no running change's journal names.

    Trash is listed before the journals are read: a change journals a file before trashing it and
    deletes it before its journal, so a file seen here is named by its journal if that still exists.
    """
    trash = sorted(layout.trash.iterdir())
    dead: list[Path] = []
    running: set[Path] = set()
    for journal in sorted(layout.tmp.glob("*.journal")):
        if _running(journal.name):
            running.update(layout.root / trashed for _final, trashed in _read_journal(journal)["trashed"])
        else:
            dead.append(journal)
    return dead, [path for path in trash if path not in running]


def _running(journal: str) -> bool:
    """Whether the change that wrote this journal may still be going on (an untagged one is from a crash)."""
    if journal.startswith(f"{owner_tag()}."):
        return journal in _in_flight
    return owner_alive(journal) is True


def _read_journal(journal: Path) -> dict[str, list[Any]]:
    """A journal's entry; empty when it is gone (its change ended) or unreadable (never fully written)."""
    try:
        entry = json.loads(journal.read_bytes())
    except (OSError, ValueError):
        entry = None
    return entry if isinstance(entry, dict) else {"placed": [], "trashed": []}


def _replay_journal(db: Database, layout: Layout, journal: Path) -> int:
    entry = _read_journal(journal)
    removed = 0
    for relative in entry.get("placed", []):
        removed += _remove_if_unreferenced(db, layout, layout.root / relative)
    for final, trash in entry.get("trashed", []):
        removed += _settle_trashed(db, layout, layout.root / trash, layout.root / final)
    for uid in entry.get("run_folders", []):
        if db.execute("SELECT 1 FROM runs WHERE uid = ?", [uid]).fetchone() is None:
            shutil.rmtree(layout.runs / uid, ignore_errors=True)
    journal.unlink(missing_ok=True)
    return removed


def _area_and_hash(layout: Layout, path: Path) -> tuple[str, str] | None:
    try:
        relative = path.relative_to(layout.root)
    except ValueError:
        return None
    if len(relative.parts) != 3 or relative.parts[0] not in AREAS:
        return None
    return relative.parts[0], path.name.split(".", 1)[0]


def _remove_if_unreferenced(db: Database, layout: Layout, path: Path) -> int:
    located = _area_and_hash(layout, path)
    if located is None or not path.exists() or is_referenced(db, *located):
        return 0
    return _unlink(path)


def _unlink(path: Path) -> int:
    """Delete a file another process may be deleting too; returns 1 if this call deleted it."""
    try:
        path.unlink()
    except FileNotFoundError:
        return 0
    return 1


def _settle_trashed(db: Database, layout: Layout, trash: Path, final: Path | None = None) -> int:
    """A trashed file goes back if a row still refers to it (its change never committed), else away."""
    if not trash.exists():
        return 0
    if final is None:
        area, _, name = trash.name.partition(".")[2].partition(".")
        if area not in AREAS or not name:
            return _unlink(trash)
        final = layout.area(area) / name[:2] / name
    located = _area_and_hash(layout, final)
    if located is not None and is_referenced(db, *located):
        final.parent.mkdir(exist_ok=True)
        with suppress(FileNotFoundError):
            os.replace(trash, final)
        return 0
    return _unlink(trash)


def remove_dead_parts(folder: Path, prefix: str = "") -> int:
    """Delete the `<prefix><owner tag>.*.part` files in `folder` whose process is gone, and untagged ones
    an hour old; returns how many. Best effort: a file that cannot be deleted stays."""
    removed = 0
    cutoff = time.time() - STALE_PART_S
    owners: dict[str, bool | None] = {}  # a change in progress may have hundreds of files: ask once a process
    for part in folder.glob("*.part"):
        if not part.name.startswith(prefix):
            continue
        name = part.name[len(prefix) :]
        tag = name.split(".", 1)[0]
        if tag not in owners:
            owners[tag] = owner_alive(name)
        alive = owners[tag]
        with suppress(OSError):
            if alive is False or (alive is None and part.stat().st_mtime < cutoff):
                removed += _unlink(part)
    return removed


def collect_garbage(db: Database, layout: Layout) -> int:
    """Remove every file in the content areas that no row refers to; returns how many were removed."""
    removed = recover(db, layout)
    with change(db, layout, lock=True):
        for area in AREAS:
            wanted = referenced_hashes(db, area)
            for path in layout.area(area).glob("*/*"):
                if path.name.split(".", 1)[0] not in wanted:
                    path.unlink()
                    removed += 1
    return removed


def read_verified(path: Path, sha256: str) -> bytes:
    """A stored file's bytes; raises if it is missing or no longer matches its hash."""
    try:
        data = path.read_bytes()
    except FileNotFoundError as exc:
        raise StoreError(f"the library file {path} is missing") from exc
    if sha256_hex(data) != sha256:
        raise StoreError(f"the library file {path} is damaged (its content does not match its hash)")
    return data
