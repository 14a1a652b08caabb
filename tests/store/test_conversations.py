"""Conversations: messages with photos and gallery pictures, listing, renaming, deleting, and kills mid-write."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest

from store.errors import InvalidValueError, NotFoundError, PhotoError
from store.library import Library
from tests.store.helpers import image_bytes, noise_image, write_image
from tests.store.test_faults import ENV, REPO, check_sound


def test_a_conversation_keeps_its_messages_photo_and_pictures(library: Library, tmp_path: Path) -> None:
    photo = write_image(tmp_path / "bo.jpg", seed=3)
    talk = library.conversations.create("What is Bo doing?")
    asked = library.conversations.add_message(talk.id, "user", "What is <bo> doing?", photo=photo)
    answered = library.conversations.add_message(talk.id, "assistant", "Sleeping on the sofa.")
    picture = library.gallery.add(image_bytes(noise_image(seed=4)), prompt="<bo> at the beach", seed=7)
    library.conversations.add_message(talk.id, "user", "Draw <bo> at the beach")
    drawn = library.conversations.add_message(talk.id, "assistant", image_id=picture.id)

    photo.unlink()  # the conversation keeps its own copy
    messages = library.conversations.messages(talk.id)
    assert [(m.role, m.text) for m in messages] == [
        ("user", "What is <bo> doing?"),
        ("assistant", "Sleeping on the sofa."),
        ("user", "Draw <bo> at the beach"),
        ("assistant", ""),
    ]
    assert asked.photo is not None and asked.photo.exists() and messages[0].photo == asked.photo
    assert answered.photo is None and drawn.image is not None and drawn.image.id == picture.id
    assert [(c.title, c.message_count) for c in library.conversations.list()] == [("What is Bo doing?", 4)]

    library.gallery.remove(picture.id)  # the message stays, without its picture
    assert library.conversations.messages(talk.id)[3].image is None


def test_list_rename_and_delete(library: Library, tmp_path: Path) -> None:
    first = library.conversations.create("first")
    second = library.conversations.create("second")
    library.conversations.add_message(first.id, "user", "hello again")  # used last: listed first
    assert [c.title for c in library.conversations.list()] == ["first", "second"]
    assert library.conversations.rename(second.id, "  Bo's   beach day ").title == "Bo's beach day"

    photo = library.conversations.add_message(first.id, "user", "?", photo=write_image(tmp_path / "a.png")).photo
    assert photo is not None and photo.exists()
    library.conversations.remove(first.id)
    assert [c.title for c in library.conversations.list()] == ["Bo's beach day"]
    assert not photo.exists()
    with pytest.raises(NotFoundError, match="no conversation"):
        library.conversations.messages(first.id)


def test_bad_input_is_refused_and_changes_nothing(library: Library, tmp_path: Path) -> None:
    talk = library.conversations.create("t")
    with pytest.raises(InvalidValueError, match="title"):
        library.conversations.create("   ")
    with pytest.raises(InvalidValueError, match="role"):
        library.conversations.add_message(talk.id, "system", "hi")
    with pytest.raises(NotFoundError, match="no generated image 99"):
        library.conversations.add_message(talk.id, "assistant", image_id=99)
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not a photo")
    with pytest.raises(PhotoError):
        library.conversations.add_message(talk.id, "user", "?", photo=bad)
    with pytest.raises(NotFoundError):
        library.conversations.add_message(12345, "user", "hi")
    assert library.conversations.messages(talk.id) == []
    assert list(library.layout.area("photos").glob("*/*")) == []


KILLED_WRITER = """
import os, signal, sys
from pathlib import Path
from store import faults
from store.library import Library

faults.install(lambda name: name == "message row" and os.kill(os.getpid(), signal.SIGKILL))
with Library.open(Path(sys.argv[1])) as library:
    library.conversations.add_message(int(sys.argv[2]), "user", "killed", photo=Path(sys.argv[3]))
"""


def test_a_kill_while_a_message_is_written_loses_nothing(tmp_path: Path) -> None:
    root = tmp_path / "lib"
    with Library.open(root) as library:
        talk = library.conversations.create("t")
        library.conversations.add_message(talk.id, "user", "kept", photo=write_image(tmp_path / "a.jpg", seed=1))
    before = check_sound(root)
    photo = write_image(tmp_path / "b.jpg", seed=2)
    command = [sys.executable, "-c", KILLED_WRITER, str(root), str(talk.id), str(photo)]
    killed = subprocess.run(command, cwd=REPO, env=ENV, capture_output=True, text=True, timeout=120)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert check_sound(root) == before  # the row was not committed: no message, no orphan photo file
    with Library.open(root) as library:
        assert [m.text for m in library.conversations.messages(talk.id)] == ["kept"]
