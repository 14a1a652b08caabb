"""Schema versions: a fresh library, every earlier version migrating forward, and refusals."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from sqlite_utils import Database

from store import schema
from store.errors import SchemaError
from store.library import Library
from tests.store.helpers import write_image


def database_at(path: Path, version: int) -> None:
    """A library database as an older Familiar left it, at schema `version`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    db = schema.connect(path)
    schema.upgrade(db, target=version)
    db.close()


def test_fresh_library_is_current_wal_and_checked(tmp_path: Path) -> None:
    with Library.open(tmp_path / "lib") as library:
        db = library.db
        assert schema.schema_version(db) == schema.SCHEMA_VERSION
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert db.execute("PRAGMA foreign_keys").fetchone()[0] == 1
        assert db.execute("PRAGMA application_id").fetchone()[0] == schema.APPLICATION_ID


def test_version_1_library_with_photos_migrates(tmp_path: Path) -> None:
    root = tmp_path / "lib"
    database_at(root / "library.db", 1)
    with sqlite3.connect(root / "library.db") as conn:
        assert "role" not in [c[1] for c in conn.execute("PRAGMA table_info(photos)")]
        conn.execute(
            "INSERT INTO concepts (name, kind, facts, created_at, updated_at)"
            " VALUES ('bo', 'pet', 'old facts', '2024-01-01T00:00:00.000Z', '2024-01-01T00:00:00.000Z')"
        )
        conn.execute(
            "INSERT INTO photos (concept_id, sha256, source_sha256, format, width, height, size_bytes, added_at)"
            " VALUES (1, ?, ?, 'jpeg', 512, 512, 1000, '2024-01-01T00:00:00.000Z')",
            ["a" * 64, "b" * 64],
        )
    with Library.open(root) as library:
        assert schema.schema_version(library.db) == schema.SCHEMA_VERSION
        concept = library.concepts.get("bo")
        assert (concept.facts, concept.photo_count, concept.created_at) == ("old facts", 1, "2024-01-01T00:00:00.000Z")
        assert [p.role for p in library.concepts.photos("bo")] == ["train"]


def test_version_2_log_notes_become_warnings(tmp_path: Path) -> None:
    root = tmp_path / "lib"
    database_at(root / "library.db", 2)
    with sqlite3.connect(root / "library.db") as conn:
        conn.execute(
            "INSERT INTO concepts (name, kind, facts, created_at, updated_at)"
            " VALUES ('bo', 'pet', '', '2024-01-01T00:00:00.000Z', '2024-01-01T00:00:00.000Z')"
        )
        conn.execute(
            "INSERT INTO runs (uid, concept_id, config, status, created_at, updated_at)"
            " VALUES ('r1', 1, '{}', 'done', '2024-01-01T00:00:00.000Z', '2024-01-01T00:00:00.000Z')"
        )
        for message in ("12 samples, 3 steps", "note: the remote kNN service failed"):
            conn.execute("INSERT INTO run_logs (run_id, at, message) VALUES (1, '2024-01-01', ?)", [message])
    with Library.open(root) as library:
        lines = library.runs.log_lines(1)
    assert [(line.message, line.warning) for line in lines] == [
        ("12 samples, 3 steps", False),
        ("the remote kNN service failed", True),
    ]


@pytest.mark.parametrize("version", range(schema.SCHEMA_VERSION))
def test_every_earlier_version_opens_and_works(tmp_path: Path, version: int) -> None:
    root = tmp_path / "lib"
    database_at(root / "library.db", version)
    with Library.open(root) as library:
        assert schema.schema_version(library.db) == schema.SCHEMA_VERSION
        assert library.db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert library.db.execute("PRAGMA foreign_key_check").fetchall() == []
        (photo,) = library.concepts.add_photos(
            library.concepts.add("bo").name, [write_image(tmp_path / "a.jpg")], role="reference"
        )
        assert photo.role == "reference"


def test_failed_migration_step_leaves_previous_version(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "lib"
    database_at(root / "library.db", 1)

    def broken(db: Database) -> None:
        db.execute("ALTER TABLE photos ADD COLUMN role TEXT NOT NULL DEFAULT 'train'")
        raise RuntimeError("power cut")

    monkeypatch.setitem(schema.STEPS, 1, broken)
    with pytest.raises(RuntimeError, match="power cut"):
        Library.open(root)
    with sqlite3.connect(root / "library.db") as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == 1
        assert "role" not in [c[1] for c in conn.execute("PRAGMA table_info(photos)")]
    monkeypatch.undo()
    with Library.open(root) as library:
        assert schema.schema_version(library.db) == schema.SCHEMA_VERSION


def test_newer_library_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "lib"
    database_at(root / "library.db", schema.SCHEMA_VERSION)
    with sqlite3.connect(root / "library.db") as conn:
        conn.execute("PRAGMA user_version = 99")
    with pytest.raises(SchemaError, match="newer Familiar"):
        Library.open(root)


def test_other_databases_are_refused(tmp_path: Path) -> None:
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    with sqlite3.connect(foreign / "library.db") as conn:
        conn.execute("CREATE TABLE notes (text TEXT)")
    with pytest.raises(SchemaError, match="not a Familiar library"):
        Library.open(foreign)
    garbage = tmp_path / "garbage"
    garbage.mkdir()
    (garbage / "library.db").write_bytes(b"this is not SQLite at all" * 100)
    with pytest.raises(SchemaError, match="not a Familiar library"):
        Library.open(garbage)


def test_version_4_library_gains_run_checks_and_conversations(tmp_path: Path) -> None:
    root = tmp_path / "lib"
    database_at(root / "library.db", 4)
    with sqlite3.connect(root / "library.db") as conn:
        assert "conversations" not in [r[0] for r in conn.execute("SELECT name FROM sqlite_master")]
        conn.execute(
            "INSERT INTO concepts (name, kind, facts, created_at, updated_at)"
            " VALUES ('bo', 'pet', '', '2024-01-01T00:00:00.000Z', '2024-01-01T00:00:00.000Z')"
        )
        conn.execute(
            "INSERT INTO runs (uid, concept_id, config, status, step, total_steps, created_at, updated_at)"
            " VALUES ('r1', 1, '{}', 'done', 18, 18, '2024-01-01T00:00:00.000Z', '2024-01-01T00:00:00.000Z')"
        )
    with Library.open(root) as library:
        assert library.runs.losses(1) == [] and library.runs.checks(1) == []  # an old run recorded neither
        talk = library.conversations.create("first")
        assert [c.title for c in library.conversations.list()] == [talk.title]
