"""Where the library lives: the data folder and the layout inside it."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import platformdirs

from store.errors import StoreError

APP_NAME = "Familiar"
ENV_VAR = "FAMILIAR_DATA"
DB_NAME = "library.db"
AREAS = ("photos", "thumbs", "tokens", "generated")


def resolve_data_dir(explicit: str | os.PathLike[str] | None = None) -> Path:
    """The library folder: `explicit` (the CLI's --data-dir), else $FAMILIAR_DATA, else the platform's."""
    if explicit:
        chosen = Path(explicit)
    elif os.environ.get(ENV_VAR):
        chosen = Path(os.environ[ENV_VAR])
    else:
        chosen = Path(platformdirs.user_data_dir(APP_NAME, appauthor=False))
    chosen = chosen.expanduser().resolve()
    if chosen.exists() and not chosen.is_dir():
        raise StoreError(f"the library folder {chosen} is a file, not a folder")
    return chosen


@dataclass(frozen=True)
class Layout:
    """The files of one library: the database, content-addressed areas, and work folders."""

    root: Path

    @property
    def database(self) -> Path:
        return self.root / DB_NAME

    @property
    def tmp(self) -> Path:
        """Files being written (`*.part`) and journals of changes in progress (`*.journal`)."""
        return self.root / "tmp"

    @property
    def trash(self) -> Path:
        """Files a change in progress is removing; restored if it fails, deleted once it commits."""
        return self.root / "trash"

    @property
    def runs(self) -> Path:
        """One folder per training run, for the engine's own files (e.g. optimizer state)."""
        return self.root / "runs"

    def area(self, area: str) -> Path:
        if area not in AREAS:
            raise ValueError(f"unknown file area {area!r}")
        return self.root / area

    def file(self, area: str, sha256: str, ext: str) -> Path:
        """Content-addressed file: `<area>/<first two hex digits>/<sha256>.<ext>`."""
        return self.area(area) / sha256[:2] / f"{sha256}.{ext}"

    def create(self) -> None:
        for folder in (self.root, self.tmp, self.trash, self.runs, *(self.area(a) for a in AREAS)):
            folder.mkdir(parents=True, exist_ok=True)
