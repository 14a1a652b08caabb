"""What the store hands back: plain frozen records, with absolute paths to the files they describe."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any


def utc_now() -> str:
    """The current time as ISO 8601 UTC with milliseconds, e.g. 2025-01-31T09:30:00.123Z."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def as_dict(record: Any) -> dict[str, Any]:
    """A record as JSON-ready values (paths become strings)."""

    def plain(value: Any) -> Any:
        if isinstance(value, Path):
            return str(value)
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            return as_dict(value)
        if isinstance(value, tuple | list):
            return [plain(v) for v in value]
        return value

    result = {f.name: plain(getattr(record, f.name)) for f in dataclasses.fields(record)}
    for name in getattr(record, "_derived", ()):
        result[name] = plain(getattr(record, name))
    return result


def loads(text: str | None) -> dict[str, Any]:
    return json.loads(text) if text else {}


@dataclass(frozen=True)
class Photo:
    id: int
    concept: str
    sha256: str
    source_sha256: str
    format: str
    width: int
    height: int
    size_bytes: int
    role: str
    original_name: str
    added_at: str
    path: Path
    thumbnail: Path


@dataclass(frozen=True)
class TokenVersion:
    """One learned-token state of a concept; `path` is the safetensors file the engine loads."""

    id: int
    concept: str
    number: int
    sha256: str
    size_bytes: int
    kind: str  # "instant" or "trained"
    base_fingerprint: str
    hidden_size: int
    run_id: int | None
    metrics: dict[str, Any]
    active: bool
    created_at: str
    path: Path


@dataclass(frozen=True)
class Concept:
    id: int
    name: str
    kind: str
    facts: str
    created_at: str
    updated_at: str
    photo_count: int
    active: TokenVersion | None

    _derived = ("state",)

    @property
    def state(self) -> str:
        """untrained (no learned tokens), instant or trained: the kind of the active version."""
        return self.active.kind if self.active else "untrained"


@dataclass(frozen=True)
class TrashedConcept:
    """A removed concept waiting in the trash: `restore` brings it back whole until `expires_at`."""

    id: int
    name: str
    kind: str
    photo_count: int
    version_count: int
    trashed_at: str
    expires_at: str


@dataclass(frozen=True)
class Run:
    id: int
    uid: str
    concept: str
    config: dict[str, Any]
    status: str  # queued, running, cancelled, failed, done
    progress: float
    step: int
    total_steps: int | None
    message: str
    metrics: dict[str, Any]
    error: str | None
    pid: int | None
    created_at: str
    started_at: str | None
    finished_at: str | None
    updated_at: str
    folder: Path


@dataclass(frozen=True)
class LogLine:
    at: str
    message: str
    warning: bool = False


@dataclass(frozen=True)
class Checkpoint:
    id: int
    run_id: int
    step: int
    epoch: int
    sha256: str
    size_bytes: int
    metrics: dict[str, Any]
    optimizer_state: Path | None
    created_at: str
    path: Path


@dataclass(frozen=True)
class GeneratedImage:
    id: int
    sha256: str
    format: str
    width: int
    height: int
    size_bytes: int
    prompt: str
    seed: int
    params: dict[str, Any]
    version_ids: tuple[int, ...]
    created_at: str
    path: Path
    thumbnail: Path


@dataclass(frozen=True)
class RunCheck:
    """What a run showed at `step` (0: before training, from the start rows): the recognition scores and a
    sample picture (`path` None when none was drawn)."""

    run_id: int
    step: int
    metrics: dict[str, Any]
    path: Path | None
    created_at: str


@dataclass(frozen=True)
class Message:
    """One message of a conversation: the user's (with an attached `photo`) or the assistant's (text, or a
    picture kept in the gallery: `image`, None when it was deleted there)."""

    id: int
    role: str  # user, assistant
    text: str
    photo: Path | None
    image: GeneratedImage | None
    created_at: str


@dataclass(frozen=True)
class Conversation:
    id: int
    title: str
    created_at: str
    updated_at: str
    message_count: int
