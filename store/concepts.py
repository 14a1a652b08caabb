"""Concepts and their photos: add (all or nothing), list, show, rename, edit, remove to the trash, restore.

Removing a concept moves it to the trash: its rows and files stay as they are (so `restore` brings back its
photos, learned-token versions, runs and gallery pictures), it leaves every listing and lookup, and its name
is free for a new concept. The trash is emptied after TRASH_DAYS (when a library opens) or on demand; only
then are the rows and files deleted.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from store import faults
from store.errors import ConceptExistsError, DuplicatePhotoError, InvalidValueError, NotFoundError, RunStateError
from store.files import Change
from store.models import Concept, Photo, TrashedConcept, utc_now
from store.paths import Layout
from store.photos import CleanPhoto, clean_photo, extension, read_photo_file
from store.tokens import version_from_row
from store.validation import (
    DEFAULT_KIND,
    MAX_PHOTOS_PER_CONCEPT,
    TRASH_DAYS,
    check_facts,
    check_kind,
    check_name,
    check_role,
    name_key,
)

if TYPE_CHECKING:
    from store.library import Library


def photo_from_row(layout: Layout, row: dict[str, Any], concept: str) -> Photo:
    return Photo(
        id=row["id"],
        concept=concept,
        sha256=row["sha256"],
        source_sha256=row["source_sha256"],
        format=row["format"],
        width=row["width"],
        height=row["height"],
        size_bytes=row["size_bytes"],
        role=row["role"],
        original_name=row["original_name"],
        added_at=row["added_at"],
        path=layout.file("photos", row["sha256"], extension(row["format"])),
        thumbnail=layout.file("thumbs", row["sha256"], "jpg"),
    )


def stage_photo(change: Change, photo: CleanPhoto) -> None:
    """Stage a photo's file and its thumbnail (named after the photo's hash)."""
    change.stage("photos", photo.data, photo.ext)
    change.stage("thumbs", photo.thumbnail, "jpg", key=photo.sha256)


def insert_concept(library: Library, name: str, kind: str, facts: str, created: str, updated: str) -> int:
    """Insert a concept row inside a locked change; a taken name raises ConceptExistsError."""
    try:
        concept_id = (
            library.db["concepts"]
            .insert({"name": name, "kind": kind, "facts": facts, "created_at": created, "updated_at": updated})
            .last_pk
        )
    except sqlite3.IntegrityError as exc:
        raise ConceptExistsError(f"a concept named {name!r} already exists") from exc
    faults.reach("concept row")
    return int(concept_id)


def photo_row(photo: CleanPhoto, role: str, added_at: str) -> dict[str, Any]:
    """The photos-table fields of a cleaned photo (the concept id is added on insert)."""
    return {
        "sha256": photo.sha256,
        "source_sha256": photo.source_sha256,
        "format": photo.format,
        "width": photo.width,
        "height": photo.height,
        "size_bytes": len(photo.data),
        "original_name": photo.original_name,
        "added_at": added_at,
        "role": role,
    }


def insert_photo(library: Library, concept_id: int, row: dict[str, Any]) -> None:
    library.db["photos"].insert({"concept_id": concept_id, **row})
    faults.reach("photo row")


class Concepts:
    """The library's concepts; reach it as `library.concepts`."""

    def __init__(self, library: Library) -> None:
        self._lib = library

    def add(
        self,
        name: str,
        photos: Sequence[str | Path] = (),
        *,
        kind: str = DEFAULT_KIND,
        facts: str = "",
        role: str = "train",
    ) -> Concept:
        """Add a concept with its photos, all or nothing: any bad photo and nothing is stored."""
        name = check_name(name)
        check_kind(kind)
        facts = check_facts(facts)
        check_role(role)
        self._refuse_taken(name)
        cleaned = self._clean(photos, existing=())
        now = utc_now()
        with self._lib.change() as change:
            for photo in cleaned:
                stage_photo(change, photo)
            change.lock()
            self._refuse_taken(name)
            concept_id = insert_concept(self._lib, name, kind, facts, now, now)
            for photo in cleaned:
                insert_photo(self._lib, concept_id, photo_row(photo, role, now))
        return self.get(name)

    def get(self, name: str) -> Concept:
        with self._lib.reading() as db:
            concept_id = self._lib.concept_id(name)
            rows = list(db.query(_CONCEPT_SELECT + " WHERE c.id = ? GROUP BY c.id", [concept_id]))
            return self._records(db, rows)[0]

    def list(self) -> list[Concept]:
        """Every concept not in the trash, by name (ignoring case)."""
        with self._lib.reading() as db:
            rows = list(
                db.query(_CONCEPT_SELECT + " WHERE c.trashed_at IS NULL GROUP BY c.id ORDER BY c.name COLLATE NOCASE")
            )
            return self._records(db, rows)

    def rename(self, old: str, new: str) -> Concept:
        """Rename; only the case may change to a name that is taken by this same concept."""
        new = check_name(new)
        with self._lib.change(lock=True):
            concept_id = self._lib.concept_id(old)
            taken = self._lib.find_concept(new)
            if taken is not None and taken[0] != concept_id:
                raise ConceptExistsError(f"a concept named {taken[1]!r} already exists")
            try:
                self._lib.db["concepts"].update(concept_id, {"name": new, "updated_at": utc_now()})
            except sqlite3.IntegrityError as exc:
                raise ConceptExistsError(f"a concept named {new!r} already exists") from exc
        return self.get(new)

    def update(self, name: str, *, kind: str | None = None, facts: str | None = None) -> Concept:
        """Change a concept's kind and/or the facts the user wrote about it."""
        changes: dict[str, str] = {}
        if kind is not None:
            changes["kind"] = check_kind(kind)
        if facts is not None:
            changes["facts"] = check_facts(facts)
        with self._lib.change(lock=True):
            concept_id = self._lib.concept_id(name)
            self._lib.db["concepts"].update(concept_id, {**changes, "updated_at": utc_now()})
        return self.get(name)

    def remove(self, name: str) -> TrashedConcept:
        """Move a concept to the trash, whole (photos, versions, runs, gallery pictures): `restore` brings
        it back until it is deleted for good by `empty_trash`. Refused while one of its runs is running."""
        db = self._lib.db
        with self._lib.change(lock=True):
            found = self._lib.find_concept(name)
            if found is None:
                raise NotFoundError(f"no concept named {name!r} in the library")
            concept_id, stored = found
            if db.execute("SELECT 1 FROM runs WHERE concept_id = ? AND status = 'running'", [concept_id]).fetchone():
                raise RunStateError(f"{name!r} has a training run in progress; cancel it before removing")
            db.execute(
                "UPDATE concepts SET name = ?, trashed_name = ?, trashed_at = ? WHERE id = ?",
                [f"~{concept_id}", stored, utc_now(), concept_id],
            )
            faults.reach("concept trashed")
        return next(t for t in self.trashed() if t.id == concept_id)

    def trashed(self) -> list[TrashedConcept]:
        """The concepts in the trash, most recently removed first."""
        rows = self._lib.db.execute(
            "SELECT c.id, c.trashed_name, c.kind, c.trashed_at,"
            " (SELECT COUNT(*) FROM photos p WHERE p.concept_id = c.id),"
            " (SELECT COUNT(*) FROM token_versions v WHERE v.concept_id = c.id)"
            " FROM concepts c WHERE c.trashed_at IS NOT NULL ORDER BY c.trashed_at DESC, c.id DESC"
        ).fetchall()
        return [
            TrashedConcept(
                id=row[0],
                name=row[1],
                kind=row[2],
                photo_count=row[4],
                version_count=row[5],
                trashed_at=row[3],
                expires_at=_later(row[3], TRASH_DAYS),
            )
            for row in rows
        ]

    def restore(self, name: str, *, as_name: str | None = None, trashed_id: int | None = None) -> Concept:
        """Bring a concept back from the trash (the one removed last of that name, or `trashed_id`), under
        its name or `as_name`; refused when a concept of that name was added since."""
        new = check_name(as_name) if as_name is not None else None
        with self._lib.change(lock=True):
            rows = self._lib.db.execute(
                "SELECT id, trashed_name FROM concepts WHERE trashed_at IS NOT NULL ORDER BY trashed_at DESC, id DESC"
            ).fetchall()
            found = next(
                (
                    (cid, stored)
                    for cid, stored in rows
                    if (cid == trashed_id if trashed_id is not None else name_key(stored) == name_key(name))
                ),
                None,
            )
            if found is None:
                raise NotFoundError(f"no concept named {name!r} in the trash")
            concept_id, stored = found
            target = new or stored
            taken = self._lib.find_concept(target)
            if taken is not None:
                raise ConceptExistsError(
                    f"a concept named {taken[1]!r} already exists; restore under another name"
                    " (familiar concept restore NAME --as NEW)"
                )
            self._lib.db.execute(
                "UPDATE concepts SET name = ?, trashed_name = NULL, trashed_at = NULL WHERE id = ?",
                [target, concept_id],
            )
            faults.reach("concept restored")
        return self.get(target)

    def empty_trash(self, *, expired_only: bool = False, now: datetime | None = None) -> list[str]:
        """Delete for good the concepts in the trash (only those trashed over TRASH_DAYS ago when
        `expired_only`); returns their names. Each goes in its own change."""
        where = "trashed_at IS NOT NULL"
        params: list[str] = []
        if expired_only:
            where += " AND trashed_at < ?"
            params.append(_later((now or datetime.now(UTC)).isoformat(), -TRASH_DAYS))
        gone = []
        rows = self._lib.db.execute(f"SELECT id, trashed_name FROM concepts WHERE {where}", params).fetchall()
        for concept_id, stored in rows:
            if self._delete(concept_id):
                gone.append(stored)
        return gone

    def purge(self, name: str) -> None:
        """Remove a concept and delete it for good at once, skipping the trash (for an add that failed
        halfway); a crash between the two steps leaves it in the trash."""
        self._delete(self.remove(name).id)

    def _delete(self, concept_id: int) -> bool:
        """Delete a trashed concept with its photos, learned tokens, runs (with their checks' pictures) and the
        generated images only it made; False when it is no longer in the trash. Files shared with another concept
        stay, and so do images that also show another concept (they lose the link to this concept's versions)."""
        db = self._lib.db
        with self._lib.change(lock=True) as change:
            trashed = db.execute("SELECT 1 FROM concepts WHERE id = ? AND trashed_at IS NOT NULL", [concept_id])
            if trashed.fetchone() is None:
                return False  # restored or deleted by another process meanwhile
            photos = db.execute("SELECT sha256, format FROM photos WHERE concept_id = ?", [concept_id]).fetchall()
            tokens = db.execute(
                "SELECT sha256 FROM token_versions WHERE concept_id = ? UNION SELECT c.sha256 FROM checkpoints c"
                " JOIN runs r ON r.id = c.run_id WHERE r.concept_id = ?",
                [concept_id, concept_id],
            ).fetchall()
            images = db.execute(_OWN_IMAGES, [concept_id, concept_id]).fetchall()
            samples = db.execute(
                "SELECT k.sha256, k.format FROM run_checks k JOIN runs r ON r.id = k.run_id"
                " WHERE r.concept_id = ? AND k.sha256 IS NOT NULL",
                [concept_id],
            ).fetchall()
            folders = [
                self._lib.layout.runs / uid
                for (uid,) in db.execute("SELECT uid FROM runs WHERE concept_id = ?", [concept_id])
            ]
            for image_id, _, _ in images:
                db.execute("DELETE FROM generated_images WHERE id = ?", [image_id])
            db.execute("DELETE FROM concepts WHERE id = ?", [concept_id])
            faults.reach("concept deleted")
            for sha, fmt in photos:
                change.discard("photos", sha, extension(fmt))
                change.discard("thumbs", sha, "jpg")
            for (sha,) in tokens:
                change.discard("tokens", sha, "safetensors")
            for _, sha, fmt in images:
                change.discard("generated", sha, extension(fmt))
                change.discard("thumbs", sha, "jpg")
            for sha, fmt in samples:
                change.discard("generated", sha, extension(fmt))
            for folder in folders:
                change.discard_run_folder(folder)
        return True

    def photos(self, name: str, *, role: str | None = None) -> list[Photo]:
        """A concept's photos in the order they were added, optionally only one role's."""
        if role is not None:
            check_role(role)
        with self._lib.reading() as db:
            concept_id = self._lib.concept_id(name)
            canonical = db.execute("SELECT name FROM concepts WHERE id = ?", [concept_id]).fetchone()[0]
            where, params = "concept_id = ?", [concept_id]
            if role is not None:
                where, params = where + " AND role = ?", [*params, role]
            rows = db["photos"].rows_where(where, params, order_by="id")
            return [photo_from_row(self._lib.layout, row, canonical) for row in rows]

    def add_photos(self, name: str, photos: Sequence[str | Path], *, role: str = "train") -> list[Photo]:
        """Add photos to an existing concept, all or nothing; a photo it already has is refused."""
        check_role(role)
        added = {p.sha256 for p in self._change_photos(name, photos, (), role, {})}
        return [p for p in self.photos(name) if p.sha256 in added]

    def set_photo_role(self, name: str, sha256: str, role: str) -> Photo:
        check_role(role)
        with self._lib.change(lock=True):
            concept_id = self._lib.concept_id(name)
            photo_id = self._photo_id(concept_id, name, sha256)
            self._lib.db["photos"].update(photo_id, {"role": role})
            self._touch(concept_id, utc_now())
        return next(p for p in self.photos(name) if p.sha256 == sha256)

    def remove_photo(self, name: str, sha256: str) -> None:
        """Remove one photo from a concept; its file goes unless another concept has it too."""
        with self._lib.change(lock=True) as change:
            concept_id = self._lib.concept_id(name)
            photo_id = self._photo_id(concept_id, name, sha256)
            fmt = self._lib.db["photos"].get(photo_id)["format"]
            self._lib.db["photos"].delete(photo_id)
            self._touch(concept_id, utc_now())
            change.discard("photos", sha256, extension(fmt))
            change.discard("thumbs", sha256, "jpg")

    def edit(
        self,
        name: str,
        *,
        add: Sequence[str | Path] = (),
        remove: Sequence[str] = (),
        kind: str | None = None,
        facts: str | None = None,
        role: str = "train",
    ) -> Concept:
        """Change a concept's photos (add files, remove photos by sha256), kind and facts in one change: all
        of it or, on any bad photo or missing one, none of it."""
        check_role(role)
        changes: dict[str, str] = {}
        if kind is not None:
            changes["kind"] = check_kind(kind)
        if facts is not None:
            changes["facts"] = check_facts(facts)
        self._change_photos(name, add, remove, role, changes)
        return self.get(name)

    def _photo_id(self, concept_id: int, name: str, sha256: str) -> int:
        row = self._lib.db.execute(
            "SELECT id FROM photos WHERE concept_id = ? AND sha256 = ?", [concept_id, sha256]
        ).fetchone()
        if row is None:
            raise NotFoundError(f"{name!r} has no photo {sha256[:12]}")
        return int(row[0])

    def _change_photos(
        self, name: str, add: Sequence[str | Path], remove: Sequence[str], role: str, changes: dict[str, str]
    ) -> list[CleanPhoto]:
        """Stage the added photos, then under the lock remove photos by sha256, insert the added ones and update
        the concept's row with `changes`: all of it or none. Returns the added photos."""
        gone = set(remove)
        kept = [p for p in self.photos(name) if p.sha256 not in gone]
        cleaned = self._clean(add, existing=kept)
        now = utc_now()
        with self._lib.change() as change:
            for photo in cleaned:
                stage_photo(change, photo)
            change.lock()
            concept_id = self._lib.concept_id(name)
            removed = [(sha, self._photo_id(concept_id, name, sha)) for sha in dict.fromkeys(remove)]
            formats = {sha: self._lib.db["photos"].get(photo_id)["format"] for sha, photo_id in removed}
            for _sha, photo_id in removed:
                self._lib.db["photos"].delete(photo_id)
            self._refuse_duplicates(cleaned, [p for p in self.photos(name) if p.sha256 not in gone])
            for photo in cleaned:
                insert_photo(self._lib, concept_id, photo_row(photo, role, now))
            self._lib.db["concepts"].update(concept_id, {**changes, "updated_at": now})
            for sha, fmt in formats.items():
                change.discard("photos", sha, extension(fmt))
                change.discard("thumbs", sha, "jpg")
        return cleaned

    def _touch(self, concept_id: int, now: str) -> None:
        self._lib.db["concepts"].update(concept_id, {"updated_at": now})

    def _refuse_taken(self, name: str) -> None:
        taken = self._lib.find_concept(name)
        if taken is not None:
            raise ConceptExistsError(f"a concept named {taken[1]!r} already exists")

    def _clean(self, paths: Sequence[str | Path], existing: Sequence[Photo]) -> list[CleanPhoto]:
        if isinstance(paths, str | Path):
            raise TypeError("photos must be a sequence of paths")
        if len(paths) + len(existing) > MAX_PHOTOS_PER_CONCEPT:
            raise InvalidValueError(f"a concept holds at most {MAX_PHOTOS_PER_CONCEPT} photos")
        cleaned = [clean_photo(read_photo_file(Path(p)), str(p)) for p in paths]
        self._refuse_duplicates(cleaned, existing, [str(p) for p in paths])
        return cleaned

    @staticmethod
    def _refuse_duplicates(
        cleaned: Sequence[CleanPhoto], existing: Iterable[Photo], labels: Sequence[str] | None = None
    ) -> None:
        """Refuse a photo given twice, or one the concept already has (same file, or same pixels)."""
        seen: dict[str, str] = {}
        for photo in existing:
            label = f"the concept's photo {photo.original_name or photo.sha256[:12]}"
            seen.setdefault(photo.sha256, label)
            seen.setdefault(photo.source_sha256, label)
        for photo, label in zip(cleaned, labels or [p.original_name for p in cleaned], strict=True):
            for key in (photo.source_sha256, photo.sha256):
                if key in seen:
                    raise DuplicatePhotoError(f"{label} is the same photo as {seen[key]}")
            seen[photo.source_sha256] = seen[photo.sha256] = label

    def _records(self, db: Any, rows: list[dict[str, Any]]) -> list[Concept]:
        ids = [row["id"] for row in rows]
        active: dict[int, Any] = {}
        if ids:
            placeholders = ",".join("?" * len(ids))
            for row in db.query(
                f"SELECT * FROM token_versions WHERE active = 1 AND concept_id IN ({placeholders})", ids
            ):
                active[row["concept_id"]] = row
        by_id = {row["id"]: row["name"] for row in rows}
        return [
            Concept(
                id=row["id"],
                name=row["name"],
                kind=row["kind"],
                facts=row["facts"],
                created_at=row["created_at"],
                updated_at=row["updated_at"],
                photo_count=row["photo_count"],
                active=(
                    version_from_row(self._lib.layout, active[row["id"]], by_id[row["id"]])
                    if row["id"] in active
                    else None
                ),
            )
            for row in rows
        ]


def _later(timestamp: str, days: float) -> str:
    """An ISO UTC timestamp `days` after another (before, when negative), in `utc_now`'s format."""
    moment = datetime.fromisoformat(timestamp.replace("Z", "+00:00")) + timedelta(days=days)
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


# The generated images made with a concept's versions and no other concept's.
_OWN_IMAGES = (
    "SELECT g.id, g.sha256, g.format FROM generated_images g WHERE EXISTS (SELECT 1 FROM generated_image_versions gv"
    " JOIN token_versions v ON v.id = gv.version_id WHERE gv.image_id = g.id AND v.concept_id = ?)"
    " AND NOT EXISTS (SELECT 1 FROM generated_image_versions gv JOIN token_versions v ON v.id = gv.version_id"
    " WHERE gv.image_id = g.id AND v.concept_id != ?)"
)

_CONCEPT_SELECT = (
    "SELECT c.id, c.name, c.kind, c.facts, c.created_at, c.updated_at, COUNT(p.id) AS photo_count"
    " FROM concepts c LEFT JOIN photos p ON p.concept_id = c.id"
)
