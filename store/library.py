"""The library: one data folder holding the SQLite database and the files its rows refer to.

    with Library.open() as lib:                      # or Library.open("/some/folder")
        lib.concepts.add("bo", ["01.jpg", "02.jpg"], kind="pet", facts="Shiba, loves snow")
        lib.tokens.add("bo", state_bytes, kind="instant")
        lib.tokens.active("bo").path                 # the safetensors file the engine loads

A Library object wraps one SQLite connection: use it from one thread, and open one per thread (or per
process) that needs the library; they coordinate through SQLite's locks (WAL mode: readers never wait
for a writer, writers take turns).
"""

from __future__ import annotations

import os
from contextlib import AbstractContextManager, suppress
from pathlib import Path
from types import TracebackType

from sqlite_utils import Database

from store import archive, files, schema
from store.concepts import Concepts
from store.conversations import Conversations
from store.errors import LibraryBusyError, NotFoundError, StoreError, storage_errors
from store.gallery import Gallery
from store.models import Concept
from store.paths import Layout, resolve_data_dir
from store.runs import Runs
from store.tokens import Tokens
from store.validation import name_key


class Library:
    """The concept library. Open with `Library.open(data_dir)`; close (or use `with`) when done."""

    def __init__(self, layout: Layout, db: Database) -> None:
        self.layout = layout
        self.db = db
        self.concepts = Concepts(self)
        self.tokens = Tokens(self)
        self.runs = Runs(self)
        self.gallery = Gallery(self)
        self.conversations = Conversations(self)

    @classmethod
    def open(cls, data_dir: str | os.PathLike[str] | None = None) -> Library:
        """Open the library in `data_dir` (else $FAMILIAR_DATA, else the platform's user data folder).

        Creates it if absent, migrates an older schema, finishes any change a crash interrupted, marks
        runs whose process is gone as failed, and deletes concepts that have been in the trash for
        TRASH_DAYS.
        """
        layout = Layout(resolve_data_dir(data_dir))
        try:
            with storage_errors(str(layout.root)):
                layout.create()
        except OSError as exc:
            raise StoreError(f"cannot create the library folder {layout.root}: {exc.strerror or exc}") from exc
        db = schema.connect(layout.database)
        library = cls(layout, db)
        try:
            schema.upgrade(db)
            files.recover(db, layout)
            library.runs.fail_interrupted()
            with suppress(LibraryBusyError):  # another process is writing: the next open deletes them
                library.concepts.empty_trash(expired_only=True)
        except BaseException:
            db.close()
            raise
        return library

    @property
    def root(self) -> Path:
        return self.layout.root

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> Library:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def change(self, *, lock: bool = False) -> AbstractContextManager[files.Change]:
        """An all-or-nothing change of files and rows (see store.files)."""
        return files.change(self.db, self.layout, lock=lock)

    def reading(self) -> AbstractContextManager[Database]:
        """A consistent snapshot for several queries."""
        return files.reading(self.db)

    def find_concept(self, name: str) -> tuple[int, str] | None:
        """The id and stored name of the concept called `name` ignoring case in any alphabet (`böwie` finds
        `Böwie`), or None; trashed concepts are not found."""
        row = self.db.execute("SELECT id, name FROM concepts WHERE name = ? AND trashed_at IS NULL", [name]).fetchone()
        if row is not None:
            return int(row[0]), str(row[1])
        key = name_key(name)  # SQLite's NOCASE folds only ASCII letters
        for concept_id, stored in self.db.execute("SELECT id, name FROM concepts WHERE trashed_at IS NULL"):
            if name_key(stored) == key:
                return int(concept_id), str(stored)
        return None

    def concept_id(self, name: str) -> int:
        """The id of the concept called `name` (any case), or NotFoundError."""
        found = self.find_concept(name)
        if found is None:
            raise NotFoundError(f"no concept named {name!r} in the library")
        return found[0]

    def export_concept(self, name: str, target: str | os.PathLike[str], *, overwrite: bool = False) -> Path:
        """Write one concept (photos, learned tokens, facts) to a `.familiar` file; an existing file is
        refused (TargetExistsError) unless `overwrite`."""
        return archive.export_concept(self, name, Path(target), overwrite=overwrite)

    def import_concept(self, source: str | os.PathLike[str], *, rename: str | None = None) -> Concept:
        """Add a concept from a `.familiar` file after validating all of it; `rename` on a name clash."""
        return archive.import_concept(self, Path(source), rename=rename)

    def collect_garbage(self) -> int:
        """Delete files and run folders that no row refers to; returns how many were removed."""
        removed = files.collect_garbage(self.db, self.layout)
        removed += self.runs.remove_orphan_folders()
        return removed
