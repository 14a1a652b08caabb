"""The concept trash: remove keeps everything until the trash is emptied; restore brings it all back."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from store.errors import ConceptExistsError, NotFoundError, TargetExistsError
from store.library import Library
from store.validation import TRASH_DAYS
from tests.store.helpers import rows, stored_files, with_history, write_image


def test_remove_then_restore_brings_everything_back(library: Library, tmp_path: Path) -> None:
    with_history(library, tmp_path)
    before_rows, before_files = rows(library.root), stored_files(library.root)
    trashed = library.concepts.remove("REX")
    assert (trashed.name, trashed.kind, trashed.photo_count, trashed.version_count) == ("rex", "pet", 3, 2)
    assert trashed.expires_at > trashed.trashed_at
    assert library.concepts.list() == [] and library.gallery.list() == [] and library.runs.list() == []
    assert stored_files(library.root) == before_files  # nothing is deleted yet
    with pytest.raises(NotFoundError):
        library.concepts.get("rex")
    with pytest.raises(NotFoundError):
        library.concepts.get(f"~{trashed.id}")  # the placeholder name is not a way in
    restored = library.concepts.restore("Rex")
    assert restored.name == "rex" and restored.state == "trained"
    assert rows(library.root) == before_rows and stored_files(library.root) == before_files
    assert library.concepts.trashed() == []


def test_a_removed_name_is_free_and_restore_then_asks_for_another(library: Library, tmp_path: Path) -> None:
    with_history(library, tmp_path)
    library.concepts.remove("rex")
    library.concepts.add("rex", [write_image(tmp_path / "new.jpg", seed=99)])
    with pytest.raises(ConceptExistsError, match="--as NEW"):
        library.concepts.restore("rex")
    old = library.concepts.restore("rex", as_name="rex-old")
    assert (old.photo_count, len(library.tokens.versions("rex-old"))) == (3, 2)
    assert [i.prompt for i in library.gallery.list("rex-old")] == ["<rex> at the beach"]
    with pytest.raises(NotFoundError, match="no concept named 'rex' in the trash"):
        library.concepts.restore("rex")


def test_restore_takes_the_most_recently_removed_or_the_one_asked_for(library: Library) -> None:
    first = library.concepts.remove(library.concepts.add("bo", kind="pet").name)
    second = library.concepts.remove(library.concepts.add("bo", kind="person").name)
    assert [t.id for t in library.concepts.trashed()] == [second.id, first.id]
    assert library.concepts.restore("bo").kind == "person"
    assert library.concepts.restore("bo", as_name="bo2", trashed_id=first.id).kind == "pet"


def test_emptying_the_trash_deletes_for_good(library: Library, tmp_path: Path) -> None:
    with_history(library, tmp_path)
    library.concepts.add("dog")
    library.concepts.remove("rex")
    assert library.concepts.empty_trash() == ["rex"]
    assert library.concepts.trashed() == [] and [c.name for c in library.concepts.list()] == ["dog"]
    assert stored_files(library.root) == {}
    assert list(library.layout.runs.iterdir()) == []
    with pytest.raises(NotFoundError):
        library.concepts.restore("rex")


def test_the_trash_empties_itself_after_the_stated_days(tmp_path: Path) -> None:
    with Library.open(tmp_path / "lib") as library:
        with_history(library, tmp_path)
        library.concepts.add("bo")
        library.concepts.remove("rex")
        library.concepts.remove("bo")
        now = datetime.now(UTC)
        assert library.concepts.empty_trash(expired_only=True, now=now + timedelta(days=TRASH_DAYS - 1)) == []
        old = (now - timedelta(days=TRASH_DAYS + 1)).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        library.db.execute("UPDATE concepts SET trashed_at = ? WHERE trashed_name = 'rex'", [old])
    with Library.open(tmp_path / "lib") as library:  # opening deletes what has been there too long
        assert [t.name for t in library.concepts.trashed()] == ["bo"]
        assert stored_files(library.root) == {}


def test_export_refuses_to_replace_a_file_unless_asked(library: Library, tmp_path: Path) -> None:
    library.concepts.add("Böwie", [write_image(tmp_path / "a.jpg")])
    target = tmp_path / "out.familiar"
    target.write_bytes(b"someone's file")
    with pytest.raises(TargetExistsError, match="already exists; nothing was written"):
        library.export_concept("böwie", target)
    assert target.read_bytes() == b"someone's file"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".out")] == []
    library.export_concept("böwie", target, overwrite=True)
    library.concepts.remove("Böwie")
    assert library.import_concept(target).name == "Böwie"
