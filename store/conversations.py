"""Conversations: the chat's messages, kept so that a conversation can be listed, reopened, renamed and deleted.

A user's message may carry the photo it asked about (cleaned and kept in the photos area like a concept's photo,
so the conversation still shows it when the original file is gone); the assistant's is text or a picture kept in
the gallery (deleting the picture there leaves the message, without its picture).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from store import faults
from store.errors import InvalidValueError, NotFoundError
from store.models import Conversation, Message, utc_now
from store.photos import clean_photo, extension, read_photo_file

if TYPE_CHECKING:
    from store.library import Library

MAX_TITLE_CHARS = 200
MAX_MESSAGE_CHARS = 100_000
ROLES = ("user", "assistant")


def title_from(text: str) -> str:
    """A conversation's default title: its first question's first line, shortened."""
    line = " ".join(text.split())
    if not line:
        return "Conversation"
    return line if len(line) <= 60 else line[:59].rstrip() + "\u2026"


class Conversations:
    """Kept conversations; reach it as `library.conversations`."""

    def __init__(self, library: Library) -> None:
        self._lib = library

    def create(self, title: str) -> Conversation:
        title = _title(title)
        now = utc_now()
        with self._lib.change(lock=True):
            conversation_id = int(
                self._lib.db["conversations"].insert({"title": title, "created_at": now, "updated_at": now}).last_pk
            )
        return self.get(conversation_id)

    def get(self, conversation_id: int) -> Conversation:
        found = self._select("WHERE c.id = ?", [conversation_id])
        if not found:
            raise NotFoundError(f"no conversation {conversation_id}")
        return found[0]

    def list(self) -> list[Conversation]:
        """Conversations, the most recently used first."""
        return self._select(
            "ORDER BY c.updated_at DESC,"  # within one millisecond: the one with the newest message
            " (SELECT COALESCE(MAX(m.id), 0) FROM messages m WHERE m.conversation_id = c.id) DESC, c.id DESC",
            [],
        )

    def rename(self, conversation_id: int, title: str) -> Conversation:
        title = _title(title)
        with self._lib.change(lock=True):
            self._require(conversation_id)
            self._lib.db["conversations"].update(conversation_id, {"title": title})
        return self.get(conversation_id)

    def remove(self, conversation_id: int) -> None:
        """Delete a conversation and its messages for good (the gallery keeps its pictures)."""
        with self._lib.change(lock=True) as change:
            self._require(conversation_id)
            photos = self._lib.db.execute(
                "SELECT DISTINCT photo_sha256, photo_format FROM messages"
                " WHERE conversation_id = ? AND photo_sha256 IS NOT NULL",
                [conversation_id],
            ).fetchall()
            self._lib.db.execute("DELETE FROM conversations WHERE id = ?", [conversation_id])
            for sha, fmt in photos:
                change.discard("photos", sha, extension(fmt))

    def add_message(
        self,
        conversation_id: int,
        role: str,
        text: str = "",
        *,
        photo: str | Path | None = None,
        image_id: int | None = None,
    ) -> Message:
        """Append a message: the user's (text and an optional photo file) or the assistant's (text or a gallery
        picture's id)."""
        if role not in ROLES:
            raise InvalidValueError(f"a message's role is user or assistant, not {role!r}")
        if not isinstance(text, str) or len(text) > MAX_MESSAGE_CHARS:
            raise InvalidValueError(f"a message must be text of at most {MAX_MESSAGE_CHARS} characters")
        cleaned = clean_photo(read_photo_file(Path(photo)), str(photo)) if photo is not None else None
        now = utc_now()
        with self._lib.change() as change:
            if cleaned is not None:
                change.stage("photos", cleaned.data, cleaned.ext)
            change.lock()
            self._require(conversation_id)
            if (
                image_id is not None
                and self._lib.db.execute("SELECT 1 FROM generated_images WHERE id = ?", [image_id]).fetchone() is None
            ):
                raise NotFoundError(f"no generated image {image_id}")
            message_id = int(
                self._lib.db["messages"]
                .insert(
                    {
                        "conversation_id": conversation_id,
                        "role": role,
                        "text": text,
                        "photo_sha256": cleaned.sha256 if cleaned else None,
                        "photo_format": cleaned.format if cleaned else None,
                        "image_id": image_id,
                        "created_at": now,
                    }
                )
                .last_pk
            )
            self._lib.db["conversations"].update(conversation_id, {"updated_at": now})
            faults.reach("message row")
        return next(m for m in self.messages(conversation_id) if m.id == message_id)

    def messages(self, conversation_id: int) -> list[Message]:
        """A conversation's messages in order."""
        with self._lib.reading() as db:
            self._require(conversation_id)
            rows = list(db.query("SELECT * FROM messages WHERE conversation_id = ? ORDER BY id", [conversation_id]))
            images = {i: self._lib.gallery.get(i) for i in {r["image_id"] for r in rows if r["image_id"] is not None}}
        layout = self._lib.layout
        return [
            Message(
                id=row["id"],
                role=row["role"],
                text=row["text"],
                photo=layout.file("photos", row["photo_sha256"], extension(row["photo_format"]))
                if row["photo_sha256"]
                else None,
                image=images.get(row["image_id"]) if row["image_id"] is not None else None,
                created_at=row["created_at"],
            )
            for row in rows
        ]

    def _require(self, conversation_id: int) -> None:
        if self._lib.db.execute("SELECT 1 FROM conversations WHERE id = ?", [conversation_id]).fetchone() is None:
            raise NotFoundError(f"no conversation {conversation_id}")

    def _select(self, tail: str, params: list[Any]) -> list[Conversation]:
        rows = self._lib.db.query(
            "SELECT c.*, (SELECT COUNT(*) FROM messages m WHERE m.conversation_id = c.id) AS message_count"
            f" FROM conversations c {tail}",
            params,
        )
        return [
            Conversation(
                id=row["id"],
                title=row["title"],
                created_at=row["created_at"],
                updated_at=row["updated_at"],
                message_count=row["message_count"],
            )
            for row in rows
        ]


def _title(title: str) -> str:
    if not isinstance(title, str) or not title.strip():
        raise InvalidValueError("a conversation's title must not be empty")
    title = " ".join(title.split())
    if len(title) > MAX_TITLE_CHARS:
        raise InvalidValueError(f"a conversation's title must be at most {MAX_TITLE_CHARS} characters")
    return title
