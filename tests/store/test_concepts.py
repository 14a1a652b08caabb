"""Concepts and their photos through the library: names, duplicates, roles, edits, removal."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from PIL import Image

from store.errors import ConceptExistsError, DuplicatePhotoError, InvalidValueError, NotFoundError, PhotoError
from store.library import Library
from tests.store.helpers import stored_files, write_image


def test_add_with_real_photos(library: Library, dog_photos: list[Path]) -> None:
    concept = library.concepts.add("Bo", dog_photos, kind="pet", facts="  Shiba inu, loves snow  ")
    assert (concept.name, concept.kind, concept.facts, concept.state) == (
        "Bo",
        "pet",
        "Shiba inu, loves snow",
        "untrained",
    )
    assert concept.photo_count == len(dog_photos) and concept.created_at == concept.updated_at
    assert library.concepts.get("bo") == concept  # names match ignoring case
    photos = library.concepts.photos("BO")
    assert [p.original_name for p in photos] == [p.name for p in dog_photos]
    for photo in photos:
        data = photo.path.read_bytes()
        assert hashlib.sha256(data).hexdigest() == photo.sha256 and photo.path.stem == photo.sha256
        assert photo.role == "train" and photo.size_bytes == len(data)
        assert max(Image.open(photo.thumbnail).size) == 256


@pytest.mark.parametrize(
    "name", ["", "1bo", "b o", "bo!", "<bo>", "x" * 33, "_bo", "~1", "é!", "image", "IMAGE", "g1", "u16", "s"]
)
def test_invalid_names_are_refused(library: Library, name: str) -> None:
    with pytest.raises(InvalidValueError, match=r"identifier token|special tokens"):
        library.concepts.add(name)
    assert library.concepts.list() == []


@pytest.mark.parametrize(
    "name", ["b", "Bo", "grandma_rose", "red-bike", "x" * 32, "g1x", "images", "é", "Böwie", "Зоя", "小白"]
)
def test_valid_names(library: Library, name: str) -> None:
    assert library.concepts.add(name).name == name


def test_unicode_names_match_ignoring_case_and_accent_encoding(library: Library) -> None:
    library.concepts.add("Böwie")
    assert library.concepts.get("BÖWIE").name == "Böwie"
    assert library.concepts.get("Bo\u0308wie").name == "Böwie"  # o + combining diaeresis is the same name
    for taken in ("böwie", "Bo\u0308wie"):
        with pytest.raises(ConceptExistsError, match="'Böwie' already exists"):
            library.concepts.add(taken)
    assert library.concepts.add("Bowie").name == "Bowie"  # without the accent it is another name
    assert library.concepts.rename("böwie", "ÉCLAIR").name == "ÉCLAIR"


def test_duplicate_name_ignores_case_and_changes_nothing(library: Library, tmp_path: Path) -> None:
    library.concepts.add("Bo", [write_image(tmp_path / "a.jpg", seed=1)])
    before = stored_files(library.root)
    with pytest.raises(ConceptExistsError, match="'Bo' already exists"):
        library.concepts.add("bo", [write_image(tmp_path / "b.jpg", seed=2)])
    assert stored_files(library.root) == before
    assert [c.name for c in library.concepts.list()] == ["Bo"]


def test_one_bad_photo_stores_nothing(library: Library, tmp_path: Path) -> None:
    good = [write_image(tmp_path / f"{i}.jpg", seed=i) for i in range(3)]
    bad = tmp_path / "notes.jpg"
    bad.write_text("not a photo")
    with pytest.raises(PhotoError, match=r"notes\.jpg"):
        library.concepts.add("bo", [*good, bad])
    assert library.concepts.list() == []
    assert stored_files(library.root) == {}


def test_duplicate_photos_are_detected(library: Library, tmp_path: Path) -> None:
    photo = write_image(tmp_path / "a.jpg", seed=1)
    copy = tmp_path / "copy.jpg"
    copy.write_bytes(photo.read_bytes())
    with pytest.raises(DuplicatePhotoError, match=r"copy\.jpg is the same photo as .*a\.jpg"):
        library.concepts.add("bo", [photo, copy])
    # The same encoded pixels with an extra metadata segment (a JPEG comment) are the same photo too.
    data = photo.read_bytes()
    comment = b"edited by another app"
    retagged = tmp_path / "retagged.jpg"
    retagged.write_bytes(data[:2] + b"\xff\xfe" + (len(comment) + 2).to_bytes(2, "big") + comment + data[2:])
    library.concepts.add("bo", [photo])
    with pytest.raises(DuplicatePhotoError, match=r"retagged\.jpg is the same photo"):
        library.concepts.add_photos("bo", [retagged])
    with pytest.raises(DuplicatePhotoError):
        library.concepts.add_photos("bo", [copy])
    assert library.concepts.get("bo").photo_count == 1


def test_shared_photo_is_stored_once_and_kept_while_used(library: Library, tmp_path: Path) -> None:
    shared = write_image(tmp_path / "both.jpg", seed=1)
    library.concepts.add("bo", [shared, write_image(tmp_path / "bo.jpg", seed=2)])
    library.concepts.add("rex", [shared])
    assert len(list((library.root / "photos").rglob("*.jpg"))) == 2
    library.concepts.remove("bo")
    library.concepts.empty_trash()
    (rex_photo,) = library.concepts.photos("rex")
    assert rex_photo.path.exists() and rex_photo.thumbnail.exists()
    assert len(list((library.root / "photos").rglob("*.jpg"))) == 1


def test_photo_roles_and_removal(library: Library, tmp_path: Path) -> None:
    library.concepts.add("bo", [write_image(tmp_path / "a.jpg", seed=1)])
    (added,) = library.concepts.add_photos("bo", [write_image(tmp_path / "b.png", seed=2, fmt="PNG")], role="test")
    assert added.role == "test" and added.format == "png"
    reference = library.concepts.set_photo_role("bo", added.sha256, "reference")
    assert [p.sha256 for p in library.concepts.photos("bo", role="reference")] == [reference.sha256]
    library.concepts.remove_photo("bo", added.sha256)
    assert not added.path.exists() and not added.thumbnail.exists()
    assert [p.role for p in library.concepts.photos("bo")] == ["train"]
    with pytest.raises(InvalidValueError, match="role"):
        library.concepts.photos("bo", role="favourite")
    with pytest.raises(NotFoundError):
        library.concepts.remove_photo("bo", added.sha256)


def test_rename_update_and_remove(library: Library, tmp_path: Path) -> None:
    library.concepts.add("bo", [write_image(tmp_path / "a.jpg")], kind="pet")
    library.concepts.add("rex")
    assert library.concepts.rename("bo", "Bo").name == "Bo"  # a change of case only
    with pytest.raises(ConceptExistsError):
        library.concepts.rename("Bo", "REX")
    with pytest.raises(InvalidValueError):
        library.concepts.rename("Bo", "no spaces")
    renamed = library.concepts.rename("Bo", "buddy")
    assert renamed.updated_at >= renamed.created_at
    updated = library.concepts.update("buddy", kind="person", facts="my neighbour's dog")
    assert (updated.kind, updated.facts) == ("person", "my neighbour's dog")
    with pytest.raises(InvalidValueError, match="kind"):
        library.concepts.update("buddy", kind="robot")
    with pytest.raises(InvalidValueError, match="limit"):
        library.concepts.update("buddy", facts="x" * 10_001)
    library.concepts.remove("buddy")
    assert [c.name for c in library.concepts.list()] == ["rex"]
    assert library.concepts.empty_trash() == ["buddy"]
    assert stored_files(library.root) == {}
    with pytest.raises(NotFoundError, match="no concept named 'buddy'"):
        library.concepts.get("buddy")


def test_list_is_sorted_ignoring_case(library: Library) -> None:
    for name in ("zed", "Alpha", "beta"):
        library.concepts.add(name)
    assert [c.name for c in library.concepts.list()] == ["Alpha", "beta", "zed"]


def test_edit_changes_photos_kind_and_facts_all_or_nothing(library: Library, tmp_path: Path) -> None:
    library.concepts.add("bo", [write_image(tmp_path / f"{i}.jpg", seed=i) for i in range(3)], kind="pet")
    first, *others = library.concepts.photos("bo")
    bad = tmp_path / "notes.jpg"
    bad.write_text("not a photo")
    before = stored_files(library.root)
    with pytest.raises(PhotoError, match="notes"):
        library.concepts.edit("bo", add=[bad], remove=[first.sha256], facts="changed")
    with pytest.raises(NotFoundError, match="no photo"):
        library.concepts.edit("bo", remove=[first.sha256, "0" * 64], facts="changed")
    assert stored_files(library.root) == before and library.concepts.get("bo").facts == ""
    with pytest.raises(DuplicatePhotoError):
        library.concepts.edit("bo", add=[tmp_path / "1.jpg"])
    edited = library.concepts.edit(
        "BO",
        add=[write_image(tmp_path / "new.png", seed=9, fmt="PNG")],
        remove=[first.sha256],
        kind="person",
        facts="likes snow",
    )
    assert (edited.kind, edited.facts, edited.photo_count) == ("person", "likes snow", 3)
    assert [p.original_name for p in library.concepts.photos("bo")] == ["1.jpg", "2.jpg", "new.png"]
    assert not first.path.exists() and not first.thumbnail.exists()
    again = library.concepts.edit("bo", add=[tmp_path / "0.jpg"], remove=[others[0].sha256])  # a removed photo back
    assert again.photo_count == 3 and first.path.exists()
