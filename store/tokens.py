"""Learned tokens: every state a concept was given is kept as a numbered version; one is active."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from store import faults
from store.errors import InvalidValueError, NotFoundError, TokenFileError
from store.files import read_verified
from store.models import TokenVersion, loads, utc_now
from store.paths import Layout
from store.state_files import MAX_STATE_BYTES, StateHeader, read_state_header
from store.validation import to_json

if TYPE_CHECKING:
    from store.library import Library

VERSION_KINDS = ("instant", "trained")


def check_version_kind(kind: str) -> str:
    if kind not in VERSION_KINDS:
        raise InvalidValueError(f"invalid token version kind {kind!r}: choose instant or trained")
    return kind


def version_from_row(layout: Layout, row: dict[str, Any], concept: str) -> TokenVersion:
    return TokenVersion(
        id=row["id"],
        concept=concept,
        number=row["number"],
        sha256=row["sha256"],
        size_bytes=row["size_bytes"],
        kind=row["kind"],
        base_fingerprint=row["base_fingerprint"],
        hidden_size=row["hidden_size"],
        run_id=row["run_id"],
        metrics=loads(row["metrics"]),
        active=bool(row["active"]),
        created_at=row["created_at"],
        path=layout.file("tokens", row["sha256"], "safetensors"),
    )


def read_state(state: bytes | str | Path, label: str | None = None) -> tuple[bytes, StateHeader]:
    """A concept state's bytes (given directly or as a file) and its validated header."""
    if isinstance(state, bytes):
        data = state
    else:
        path = Path(state)
        try:
            if path.stat().st_size > MAX_STATE_BYTES:
                raise TokenFileError(f"{path}: over the {MAX_STATE_BYTES // 2**20} MB limit")
            data = path.read_bytes()
        except OSError as exc:
            raise TokenFileError(f"{path}: cannot read it ({exc.strerror or exc})") from exc
        label = label or str(path)
    return data, read_state_header(data, label or "learned-token file")


def insert_version(
    library: Library,
    concept_id: int,
    header: StateHeader,
    sha256: str,
    size: int,
    *,
    kind: str,
    run_id: int | None,
    metrics_json: str,
    activate: bool,
    created_at: str,
) -> int:
    """Insert the next version of a concept inside a locked change; returns its number.

    A state whose base model the library knows with another hidden size is refused: the fingerprint names
    one model, and one model has one hidden size."""
    db = library.db
    known = db.execute(
        "SELECT hidden_size FROM token_versions WHERE base_fingerprint = ? AND hidden_size != ? LIMIT 1",
        [header.base_fingerprint, header.hidden_size],
    ).fetchone()
    if known is not None:
        raise TokenFileError(
            f"learned tokens for base model {header.base_fingerprint[:12]} with hidden size {header.hidden_size},"
            f" but that model's hidden size is {known[0]} (from the library's other learned tokens); refused"
        )
    number = db.execute(
        "SELECT COALESCE(MAX(number), 0) + 1 FROM token_versions WHERE concept_id = ?", [concept_id]
    ).fetchone()[0]
    if activate:
        db.execute("UPDATE token_versions SET active = 0 WHERE concept_id = ? AND active = 1", [concept_id])
    db["token_versions"].insert(
        {
            "concept_id": concept_id,
            "number": number,
            "sha256": sha256,
            "size_bytes": size,
            "kind": kind,
            "base_fingerprint": header.base_fingerprint,
            "hidden_size": header.hidden_size,
            "run_id": run_id,
            "metrics": metrics_json,
            "active": int(activate),
            "created_at": created_at,
        }
    )
    db["concepts"].update(concept_id, {"updated_at": utc_now()})
    faults.reach("token version row")
    return int(number)


def _make_active(library: Library, concept_id: int, version_id: int) -> None:
    """Make a version its concept's active one, inside a locked change."""
    db = library.db
    db.execute("UPDATE token_versions SET active = 0 WHERE concept_id = ? AND active = 1", [concept_id])
    db.execute("UPDATE token_versions SET active = 1 WHERE id = ?", [version_id])
    db["concepts"].update(concept_id, {"updated_at": utc_now()})


class Tokens:
    """Learned-token versions; reach it as `library.tokens`."""

    def __init__(self, library: Library) -> None:
        self._lib = library

    def add(
        self,
        name: str,
        state: bytes | str | Path,
        *,
        kind: str = "trained",
        run_id: int | None = None,
        metrics: Mapping[str, Any] | None = None,
        activate: bool = True,
    ) -> TokenVersion:
        """Keep a new learned state (safetensors bytes or file) as the concept's next version.

        `kind` is "instant" (predicted by the Aligner) or "trained"; `run_id` links the training run
        that made it. The new version becomes the active one unless `activate=False`.
        """
        check_version_kind(kind)
        metrics_json = to_json(metrics or {}, "metrics")
        data, header = read_state(state)
        with self._lib.change() as change:
            sha = change.stage("tokens", data, "safetensors")
            change.lock()
            concept_id = self._lib.concept_id(name)
            if run_id is not None:
                self._check_run(run_id, concept_id, name)
            number = insert_version(
                self._lib,
                concept_id,
                header,
                sha,
                len(data),
                kind=kind,
                run_id=run_id,
                metrics_json=metrics_json,
                activate=activate,
                created_at=utc_now(),
            )
        return self.get(name, number)

    def add_from_checkpoint(self, checkpoint_id: int, *, activate: bool = True) -> TokenVersion:
        """Keep a training checkpoint's state (no copy of the file) as a trained version.

        A checkpoint already kept as a version (a run resumed after a crash that came between keeping it
        and marking the run done) gives that version again, made active if `activate`, rather than a copy.
        """
        with self._lib.change(lock=True):
            row = self._lib.db.execute(
                "SELECT c.sha256, c.size_bytes, c.metrics, c.run_id, r.concept_id, k.name FROM checkpoints c"
                " JOIN runs r ON r.id = c.run_id JOIN concepts k ON k.id = r.concept_id WHERE c.id = ?",
                [checkpoint_id],
            ).fetchone()
            if row is None:
                raise NotFoundError(f"no checkpoint {checkpoint_id}")
            sha, size, metrics_json, run_id, concept_id, name = row
            kept = self._lib.db.execute(
                "SELECT id, number, active FROM token_versions WHERE run_id = ? AND sha256 = ?", [run_id, sha]
            ).fetchone()
            if kept is not None:
                if activate and not kept[2]:
                    _make_active(self._lib, concept_id, kept[0])
                return self.get(name, kept[1])
            path = self._lib.layout.file("tokens", sha, "safetensors")
            _, header = read_state(read_verified(path, sha), str(path))
            number = insert_version(
                self._lib,
                concept_id,
                header,
                sha,
                size,
                kind="trained",
                run_id=run_id,
                metrics_json=metrics_json,
                activate=activate,
                created_at=utc_now(),
            )
        return self.get(name, number)

    def versions(self, name: str) -> list[TokenVersion]:
        """All versions of a concept, oldest first."""
        with self._lib.reading() as db:
            concept_id = self._lib.concept_id(name)
            canonical = db.execute("SELECT name FROM concepts WHERE id = ?", [concept_id]).fetchone()[0]
            rows = db["token_versions"].rows_where("concept_id = ?", [concept_id], order_by="number")
            return [version_from_row(self._lib.layout, row, canonical) for row in rows]

    def get(self, name: str, number: int) -> TokenVersion:
        for version in self.versions(name):
            if version.number == number:
                return version
        raise NotFoundError(f"{name!r} has no learned-token version {number}")

    def active(self, name: str) -> TokenVersion | None:
        """The version the engine should load, or None for an untrained concept."""
        return next((v for v in self.versions(name) if v.active), None)

    def activate(self, name: str, number: int) -> TokenVersion:
        """Make version `number` the active one (roll back or forward); the others are kept."""
        with self._lib.change(lock=True):
            concept_id = self._lib.concept_id(name)
            db = self._lib.db
            row = db.execute(
                "SELECT id FROM token_versions WHERE concept_id = ? AND number = ?", [concept_id, number]
            ).fetchone()
            if row is None:
                raise NotFoundError(f"{name!r} has no learned-token version {number}")
            _make_active(self._lib, concept_id, row[0])
        return self.get(name, number)

    def read_bytes(self, version: TokenVersion) -> bytes:
        """The version's safetensors bytes, checked against their hash."""
        return read_verified(version.path, version.sha256)

    def _check_run(self, run_id: int, concept_id: int, name: str) -> None:
        row = self._lib.db.execute("SELECT concept_id FROM runs WHERE id = ?", [run_id]).fetchone()
        if row is None or row[0] != concept_id:
            raise NotFoundError(f"{name!r} has no training run {run_id}")
