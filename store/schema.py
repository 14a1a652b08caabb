"""The library database: connection settings, schema versions and forward migrations.

The schema version is SQLite's `user_version`. Version 0 is an empty file; `STEPS[v]` takes a database
from version v to v + 1 inside one write transaction, so a failed step leaves the previous version intact.
A fresh library is built by running every step from 0, the same path an old library takes.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path

from sqlite_utils import Database

from store.errors import SchemaError, StoreError, storage_errors

SCHEMA_VERSION = 5
APPLICATION_ID = 0x46414D49  # "FAMI": marks the file as a Familiar library
BUSY_TIMEOUT_S = 10.0

# Where each file area's content hashes are referenced; a file no row references is garbage.
FILE_REFERENCES: dict[str, tuple[tuple[str, str], ...]] = {
    "photos": (("photos", "sha256"), ("messages", "photo_sha256")),
    "thumbs": (("photos", "sha256"), ("generated_images", "sha256")),
    "tokens": (("token_versions", "sha256"), ("checkpoints", "sha256")),
    "generated": (("generated_images", "sha256"), ("run_checks", "sha256")),
}

_V1 = """
CREATE TABLE concepts (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL COLLATE NOCASE UNIQUE,
    kind TEXT NOT NULL CHECK (kind IN ('pet', 'person', 'object', 'place')),
    facts TEXT NOT NULL DEFAULT '',
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
) STRICT;

CREATE TABLE photos (
    id INTEGER PRIMARY KEY,
    concept_id INTEGER NOT NULL REFERENCES concepts(id) ON DELETE CASCADE,
    sha256 TEXT NOT NULL,
    source_sha256 TEXT NOT NULL,
    format TEXT NOT NULL CHECK (format IN ('jpeg', 'png')),
    width INTEGER NOT NULL,
    height INTEGER NOT NULL,
    size_bytes INTEGER NOT NULL,
    original_name TEXT NOT NULL DEFAULT '',
    added_at TEXT NOT NULL,
    UNIQUE (concept_id, sha256)
) STRICT;
CREATE INDEX photos_sha256 ON photos(sha256);

CREATE TABLE runs (
    id INTEGER PRIMARY KEY,
    uid TEXT NOT NULL UNIQUE,
    concept_id INTEGER NOT NULL REFERENCES concepts(id) ON DELETE CASCADE,
    config TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('queued', 'running', 'cancelled', 'failed', 'done')),
    progress REAL NOT NULL DEFAULT 0,
    step INTEGER NOT NULL DEFAULT 0,
    total_steps INTEGER,
    message TEXT NOT NULL DEFAULT '',
    metrics TEXT NOT NULL DEFAULT '{}',
    error TEXT,
    pid INTEGER,
    created_at TEXT NOT NULL,
    started_at TEXT,
    finished_at TEXT,
    updated_at TEXT NOT NULL
) STRICT;
CREATE INDEX runs_concept ON runs(concept_id);

CREATE TABLE run_logs (
    id INTEGER PRIMARY KEY,
    run_id INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
    at TEXT NOT NULL,
    message TEXT NOT NULL
) STRICT;
CREATE INDEX run_logs_run ON run_logs(run_id);

CREATE TABLE token_versions (
    id INTEGER PRIMARY KEY,
    concept_id INTEGER NOT NULL REFERENCES concepts(id) ON DELETE CASCADE,
    number INTEGER NOT NULL,
    sha256 TEXT NOT NULL,
    size_bytes INTEGER NOT NULL,
    kind TEXT NOT NULL CHECK (kind IN ('instant', 'trained')),
    base_fingerprint TEXT NOT NULL,
    hidden_size INTEGER NOT NULL,
    run_id INTEGER REFERENCES runs(id) ON DELETE SET NULL,
    metrics TEXT NOT NULL DEFAULT '{}',
    active INTEGER NOT NULL DEFAULT 0 CHECK (active IN (0, 1)),
    created_at TEXT NOT NULL,
    UNIQUE (concept_id, number)
) STRICT;
CREATE UNIQUE INDEX token_versions_one_active ON token_versions(concept_id) WHERE active = 1;
CREATE INDEX token_versions_sha256 ON token_versions(sha256);

CREATE TABLE checkpoints (
    id INTEGER PRIMARY KEY,
    run_id INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
    step INTEGER NOT NULL,
    epoch INTEGER NOT NULL,
    sha256 TEXT NOT NULL,
    size_bytes INTEGER NOT NULL,
    metrics TEXT NOT NULL DEFAULT '{}',
    optimizer_state TEXT,
    created_at TEXT NOT NULL,
    UNIQUE (run_id, step)
) STRICT;
CREATE INDEX checkpoints_sha256 ON checkpoints(sha256);

CREATE TABLE generated_images (
    id INTEGER PRIMARY KEY,
    sha256 TEXT NOT NULL,
    format TEXT NOT NULL CHECK (format IN ('jpeg', 'png')),
    width INTEGER NOT NULL,
    height INTEGER NOT NULL,
    size_bytes INTEGER NOT NULL,
    prompt TEXT NOT NULL,
    seed INTEGER NOT NULL,
    params TEXT NOT NULL DEFAULT '{}',
    created_at TEXT NOT NULL
) STRICT;
CREATE INDEX generated_images_sha256 ON generated_images(sha256);

CREATE TABLE generated_image_versions (
    image_id INTEGER NOT NULL REFERENCES generated_images(id) ON DELETE CASCADE,
    version_id INTEGER NOT NULL REFERENCES token_versions(id) ON DELETE CASCADE,
    PRIMARY KEY (image_id, version_id)
) STRICT;
CREATE INDEX generated_image_versions_version ON generated_image_versions(version_id);
"""


def _create_v1(db: Database) -> None:
    """Version 1: concepts, photos (no roles yet), runs, logs, token versions, checkpoints, gallery."""
    for statement in _V1.split(";"):
        if statement.strip():
            db.execute(statement)
    db.execute(f"PRAGMA application_id = {APPLICATION_ID}")


def _add_photo_roles(db: Database) -> None:
    """Version 2: each photo has a role; photos from version 1 were all training photos."""
    db.execute(
        "ALTER TABLE photos ADD COLUMN role TEXT NOT NULL DEFAULT 'train'"
        " CHECK (role IN ('train', 'test', 'reference'))"
    )


def _add_log_warnings(db: Database) -> None:
    """Version 3: a run's log line says whether it is a warning; version 2 marked one by a "note: " prefix."""
    db.execute("ALTER TABLE run_logs ADD COLUMN warning INTEGER NOT NULL DEFAULT 0 CHECK (warning IN (0, 1))")
    db.execute("UPDATE run_logs SET warning = 1, message = substr(message, 7) WHERE message LIKE 'note: %'")


def _add_concept_trash(db: Database) -> None:
    """Version 4: a removed concept goes to the trash first. A trashed concept keeps its rows and files; its
    `name` becomes `~<id>` (no valid name starts with `~`, so it frees the name and no lookup finds it) and
    `trashed_name` keeps the name to restore it under."""
    db.execute("ALTER TABLE concepts ADD COLUMN trashed_at TEXT")
    db.execute("ALTER TABLE concepts ADD COLUMN trashed_name TEXT")
    db.execute("CREATE INDEX concepts_trashed ON concepts(trashed_at) WHERE trashed_at IS NOT NULL")


_V5 = """
CREATE TABLE run_losses (
    run_id INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
    step INTEGER NOT NULL CHECK (step >= 1),
    loss REAL NOT NULL,
    PRIMARY KEY (run_id, step)
) STRICT;

CREATE TABLE run_checks (
    id INTEGER PRIMARY KEY,
    run_id INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
    step INTEGER NOT NULL CHECK (step >= 0),
    metrics TEXT NOT NULL DEFAULT '{}',
    sha256 TEXT,
    format TEXT CHECK (format IN ('jpeg', 'png')),
    created_at TEXT NOT NULL,
    UNIQUE (run_id, step)
) STRICT;
CREATE INDEX run_checks_sha256 ON run_checks(sha256);

CREATE TABLE conversations (
    id INTEGER PRIMARY KEY,
    title TEXT NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
) STRICT;

CREATE TABLE messages (
    id INTEGER PRIMARY KEY,
    conversation_id INTEGER NOT NULL REFERENCES conversations(id) ON DELETE CASCADE,
    role TEXT NOT NULL CHECK (role IN ('user', 'assistant')),
    text TEXT NOT NULL DEFAULT '',
    photo_sha256 TEXT,
    photo_format TEXT CHECK (photo_format IN ('jpeg', 'png')),
    image_id INTEGER REFERENCES generated_images(id) ON DELETE SET NULL,
    created_at TEXT NOT NULL
) STRICT;
CREATE INDEX messages_conversation ON messages(conversation_id);
CREATE INDEX messages_photo ON messages(photo_sha256);
CREATE INDEX messages_image ON messages(image_id);
"""


def _add_run_checks_and_conversations(db: Database) -> None:
    """Version 5: a run keeps every step's loss and a check (sample picture and recognition scores) before
    training and at each checkpoint; conversations and their messages are kept."""
    for statement in _V5.split(";"):
        if statement.strip():
            db.execute(statement)


STEPS: dict[int, Callable[[Database], None]] = {
    0: _create_v1,
    1: _add_photo_roles,
    2: _add_log_warnings,
    3: _add_concept_trash,
    4: _add_run_checks_and_conversations,
}


def schema_version(db: Database) -> int:
    return int(db.execute("PRAGMA user_version").fetchone()[0])


def connect(path: Path) -> Database:
    """Open (creating if absent) a library database in WAL mode with foreign keys enforced.

    The connection is in autocommit mode: the store opens every transaction itself.
    """
    try:
        conn = sqlite3.connect(path, timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=True)
    except sqlite3.Error as exc:
        raise StoreError(f"cannot open the library database {path}: {exc}") from exc
    db = Database(conn, execute_plugins=False)
    try:
        with storage_errors(str(path)):
            db.execute("PRAGMA foreign_keys = ON")
            db.enable_wal()
            db.execute("PRAGMA synchronous = FULL")
    except sqlite3.DatabaseError as exc:
        db.close()
        if "not a database" in str(exc):
            raise SchemaError(f"{path} is not a Familiar library database ({exc})") from exc
        raise StoreError(f"cannot open the library database {path}: {exc}") from exc
    except BaseException:
        db.close()
        raise
    return db


def upgrade(db: Database, target: int = SCHEMA_VERSION) -> None:
    """Bring the database to schema version `target`, one transaction per step."""
    if target > SCHEMA_VERSION:
        raise ValueError(f"no schema version {target}")
    where = db.conn.execute("PRAGMA database_list").fetchone()[2] or "memory"
    with storage_errors(where):
        version = schema_version(db)
        if version >= target:  # the usual case: no write lock, so opening never waits for a writer
            _check_openable(db, version, where)
            return
        while True:
            db.execute("BEGIN IMMEDIATE")
            try:
                version = schema_version(db)
                _check_openable(db, version, where)
                if version >= target:
                    db.execute("COMMIT")
                    return
                STEPS[version](db)
                db.execute(f"PRAGMA user_version = {version + 1}")
                db.execute("COMMIT")
            except BaseException:
                db.rollback()
                raise


def _check_openable(db: Database, version: int, where: str) -> None:
    if version > SCHEMA_VERSION:
        raise SchemaError(
            f"the library at {where} was written by a newer Familiar (schema {version}, this version"
            f" reads up to {SCHEMA_VERSION}); update Familiar to open it"
        )
    app_id = int(db.execute("PRAGMA application_id").fetchone()[0])
    if version == 0 and db.table_names():
        raise SchemaError(f"{where} is an SQLite database but not a Familiar library")
    if version > 0 and app_id != APPLICATION_ID:
        raise SchemaError(f"{where} is an SQLite database but not a Familiar library")
