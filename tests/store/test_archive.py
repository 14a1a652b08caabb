"""`.familiar` export and import: identical round trips, name clashes, and hostile archives."""

from __future__ import annotations

import hashlib
import io
import json
import time
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest
from PIL import Image

from store.errors import ArchiveError, ConceptExistsError, InvalidValueError
from store.library import Library
from store.schema import SCHEMA_VERSION
from tests.store.helpers import PROFILE_TEXT, state_bytes, stored_files, tagged_profile, write_image
from tests.store.test_photos import exif_with_orientation_and_gps


def comparable(library: Library, name: str) -> dict:
    """A concept's rows without the ids and links that an import renumbers or drops."""
    concept = library.concepts.get(name)
    photos = [
        {k: v for k, v in vars(p).items() if k not in ("id", "path", "thumbnail")} | {"bytes": p.path.read_bytes()}
        for p in library.concepts.photos(name)
    ]
    versions = [
        {k: v for k, v in vars(v).items() if k not in ("id", "path", "run_id")} | {"bytes": v.path.read_bytes()}
        for v in library.tokens.versions(name)
    ]
    fields = {k: v for k, v in vars(concept).items() if k not in ("id", "active")}
    return {"concept": fields, "state": concept.state, "photos": photos, "versions": versions}


@pytest.fixture
def exported(library: Library, dog_photos: list[Path], tmp_path: Path) -> Path:
    library.concepts.add("bo", dog_photos[:3], kind="pet", facts="Shiba inu; loves snow")
    library.concepts.add_photos("bo", dog_photos[3:], role="test")
    run = library.runs.start(library.runs.create("bo", {"epochs": 1}).id)
    library.tokens.add("bo", state_bytes(seed=1), kind="instant", metrics={"recognition": 0.6})
    library.tokens.add("bo", state_bytes(seed=2), run_id=run.id, metrics={"recognition": 0.84})
    library.tokens.activate("bo", 1)
    library.runs.finish(run.id, "done")
    return library.export_concept("bo", tmp_path / "bo.familiar")


def rebuild(source: Path, target: Path, change: Callable[[dict[str, bytes]], None]) -> Path:
    """A copy of an archive whose members (name -> bytes) went through `change`."""
    with zipfile.ZipFile(source) as archive:
        members = {info.filename: archive.read(info) for info in archive.infolist()}
    change(members)
    with zipfile.ZipFile(target, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return target


def edit_manifest(edit: Callable[[dict], None]) -> Callable[[dict[str, bytes]], None]:
    def change(members: dict[str, bytes]) -> None:
        manifest = json.loads(members["manifest.json"])
        edit(manifest)
        members["manifest.json"] = json.dumps(manifest).encode()

    return change


def test_round_trip_to_a_fresh_library_is_identical(library: Library, exported: Path, tmp_path: Path) -> None:
    with zipfile.ZipFile(exported) as archive:
        names = archive.namelist()
        manifest = json.loads(archive.read("manifest.json"))
    assert names[0] == "manifest.json" and len(names) == 1 + 4 + 2
    assert manifest["schema_version"] == SCHEMA_VERSION and manifest["format"] == "familiar.archive/1"
    assert manifest["base_fingerprint"] == library.tokens.active("bo").base_fingerprint

    with Library.open(tmp_path / "other") as other:
        imported = other.import_concept(exported)
        assert imported.name == "bo" and imported.state == "instant"
        assert comparable(other, "bo") == comparable(library, "bo")
        again = other.export_concept("bo", tmp_path / "again.familiar")
    assert again.read_bytes() == exported.read_bytes()  # archives are reproducible


def test_name_clash_is_refused_or_renamed(library: Library, exported: Path) -> None:
    before = stored_files(library.root)
    with pytest.raises(ConceptExistsError, match="--rename"):
        library.import_concept(exported)
    assert stored_files(library.root) == before
    with pytest.raises(InvalidValueError):
        library.import_concept(exported, rename="bad name")
    copy = library.import_concept(exported, rename="bo2")
    assert copy.name == "bo2" and copy.photo_count == 4
    original, duplicate = comparable(library, "bo"), comparable(library, "bo2")
    assert duplicate["photos"] == [p | {"concept": "bo2"} for p in original["photos"]]
    assert duplicate["concept"]["facts"] == original["concept"]["facts"]
    assert len(list((library.root / "photos").rglob("*.jpg"))) == 4  # the files are shared, not copied


def test_export_to_missing_folder(library: Library) -> None:
    library.concepts.add("bo")
    with pytest.raises(ArchiveError, match="does not exist"):
        library.export_concept("bo", library.root / "no" / "such" / "bo.familiar")
    assert library.export_concept("bo", library.root / "plain").name == "plain.familiar"


def _zip(target: Path, members: dict[str, bytes], compression: int = zipfile.ZIP_DEFLATED) -> Path:
    with zipfile.ZipFile(target, "w", compression) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return target


def _photo_with_gps(members: dict[str, bytes]) -> None:
    """Swap a photo for one carrying EXIF GPS, with the manifest updated to match it exactly."""
    manifest = json.loads(members["manifest.json"])
    entry = manifest["photos"][0]
    out = io.BytesIO()
    gps = exif_with_orientation_and_gps(1)
    Image.new("RGB", (entry["width"], entry["height"]), (9, 9, 9)).save(out, "JPEG", exif=gps)
    data = out.getvalue()
    digest = hashlib.sha256(data).hexdigest()
    del members[entry["file"]]
    entry.update(sha256=digest, size_bytes=len(data), file=f"photos/{digest}.jpg")
    members[entry["file"]] = data
    members["manifest.json"] = json.dumps(manifest).encode()


HOSTILE: dict[str, tuple[Callable[[Path, Path], Path], str]] = {
    "dot-dot-path": (
        lambda src, dst: rebuild(src, dst, lambda m: m.update({"../../evil.sh": b"rm -rf ~"})),
        "unsafe path",
    ),
    "absolute-path": (lambda src, dst: rebuild(src, dst, lambda m: m.update({"/etc/evil": b"x"})), "unsafe path"),
    "unexpected-file": (lambda src, dst: rebuild(src, dst, lambda m: m.update({"run.py": b"x"})), "unexpected file"),
    "zip-bomb": (
        lambda src, dst: _zip(dst, {"manifest.json": b"{}", "photos/" + "0" * 64 + ".jpg": b"\x00" * (200 * 2**20)}),
        "over the",
    ),
    "too-many-members": (
        lambda src, dst: _zip(dst, {"manifest.json": b"{}"} | {f"photos/{i:064x}.jpg": b"" for i in range(800)}),
        "more than an archive may hold",
    ),
    "not-a-zip": (lambda src, dst: (dst.write_text("hello"), dst)[1], "not a Familiar archive"),
    "no-manifest": (lambda src, dst: rebuild(src, dst, lambda m: m.pop("manifest.json")), "no manifest"),
    "tampered-photo": (
        lambda src, dst: rebuild(
            src, dst, lambda m: m.update({k: v[:-10] + b"\x00" * 10 for k, v in m.items() if k.startswith("photos/")})
        ),
        "does not match the sha256",
    ),
    "photo-with-gps": (lambda src, dst: rebuild(src, dst, _photo_with_gps), "metadata"),
    "tampered-token-file": (lambda src, dst: rebuild(src, dst, _break_tokens), "does not match the sha256"),
    "unlisted-file": (
        lambda src, dst: rebuild(src, dst, edit_manifest(lambda m: m["photos"].pop())),
        "files and manifest disagree",
    ),
    "newer-schema": (
        lambda src, dst: rebuild(src, dst, edit_manifest(lambda m: m.update(schema_version=99))),
        "newer Familiar",
    ),
    "bad-name": (
        lambda src, dst: rebuild(src, dst, edit_manifest(lambda m: m["concept"].update(name="../etc"))),
        "invalid name",
    ),
    "two-active-versions": (
        lambda src, dst: rebuild(
            src, dst, edit_manifest(lambda m: [v.update(active=True) for v in m["token_versions"]])
        ),
        "more than one active",
    ),
}


def _break_tokens(members: dict[str, bytes]) -> None:
    for name in members:
        if name.startswith("tokens/"):
            members[name] = b"\x08" + members[name][1:]


@pytest.mark.parametrize("case", HOSTILE)
def test_hostile_archives_are_refused_and_change_nothing(
    library: Library, exported: Path, tmp_path: Path, case: str
) -> None:
    make, message = HOSTILE[case]
    hostile = make(exported, tmp_path / f"{case}.familiar")
    library.concepts.remove("bo")
    before = stored_files(library.root)
    started = time.perf_counter()
    with pytest.raises(ArchiveError, match=message):
        library.import_concept(hostile)
    assert time.perf_counter() - started < 5, "refused before decompressing anything large"
    assert library.concepts.list() == []
    assert stored_files(library.root) == before
    assert not (tmp_path.parent / "evil.sh").exists()


def test_token_file_with_a_valid_hash_but_bad_header_is_refused(library: Library, tmp_path: Path) -> None:
    library.concepts.add("bo", [write_image(tmp_path / "a.jpg")])
    library.tokens.add("bo", state_bytes())
    exported = library.export_concept("bo", tmp_path / "bo.familiar")
    library.concepts.remove("bo")

    def swap(members: dict[str, bytes]) -> None:
        manifest = json.loads(members["manifest.json"])
        entry = manifest["token_versions"][0]
        bad = state_bytes(format="someone.else/2")
        digest = hashlib.sha256(bad).hexdigest()
        del members[entry["file"]]
        entry.update(sha256=digest, size_bytes=len(bad), file=f"tokens/{digest}.safetensors")
        members[entry["file"]] = bad
        members["manifest.json"] = json.dumps(manifest).encode()

    with pytest.raises(ArchiveError, match=r"format is 'someone\.else/2'"):
        library.import_concept(rebuild(exported, tmp_path / "bad.familiar", swap))
    assert library.concepts.list() == []


def test_profiles_an_older_familiar_kept_are_converted_on_export_and_import(library: Library, tmp_path: Path) -> None:
    library.concepts.add("bo", [write_image(tmp_path / "a.jpg")])
    photo = library.concepts.photos("bo")[0]
    legacy = io.BytesIO()  # the photo as an older Familiar stored it: with its ICC profile
    Image.open(photo.path).save(legacy, "JPEG", quality=95, icc_profile=tagged_profile())
    data, sha = legacy.getvalue(), hashlib.sha256(legacy.getvalue()).hexdigest()
    for area, content in (("photos", data), ("thumbs", photo.thumbnail.read_bytes())):
        library.layout.file(area, sha, "jpg").parent.mkdir(exist_ok=True)
        library.layout.file(area, sha, "jpg").write_bytes(content)
    library.db.execute("UPDATE photos SET sha256 = ?, size_bytes = ? WHERE id = ?", [sha, len(data), photo.id])

    exported = library.export_concept("bo", tmp_path / "bo.familiar")
    with zipfile.ZipFile(exported) as archive:
        (entry,) = json.loads(archive.read("manifest.json"))["photos"]
        member = archive.read(entry["file"])
    assert "icc_profile" not in Image.open(io.BytesIO(member)).info
    assert PROFILE_TEXT.encode("utf-16-be") not in member
    assert (hashlib.sha256(member).hexdigest(), len(member)) == (entry["sha256"], entry["size_bytes"])

    def as_before(members: dict[str, bytes]) -> None:  # the archive an older Familiar wrote
        manifest = json.loads(members["manifest.json"])
        del members[manifest["photos"][0]["file"]]
        manifest["photos"][0].update(file=f"photos/{sha}.jpg", sha256=sha, size_bytes=len(data))
        members[f"photos/{sha}.jpg"] = data
        members["manifest.json"] = json.dumps(manifest).encode()

    old = rebuild(exported, tmp_path / "old.familiar", as_before)
    with Library.open(tmp_path / "other") as other:
        for archive_path, name in ((exported, "bo"), (old, "bo2")):
            other.import_concept(archive_path, rename=name)
            (stored,) = other.concepts.photos(name)
            assert "icc_profile" not in Image.open(stored.path).info
            assert PROFILE_TEXT.encode("utf-16-be") not in stored.path.read_bytes()
