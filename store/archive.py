"""`.familiar` archives: one concept (facts, photos, learned tokens) in a zip, and its safe import.

Layout: `manifest.json`, `photos/<sha256>.<jpg|png>`, `tokens/<sha256>.safetensors`, nothing else.
Archives are reproducible: the same concept exports to the same bytes (fixed member dates, sorted
JSON, no export time). Import trusts nothing: member names must match that layout (so no absolute or
`..` paths), member count and sizes are capped before anything is decompressed, reads are bounded,
every file must match the sha256 the manifest lists, photos must be clean JPEG/PNG without metadata,
token files must have a valid concept-state header, and the whole concept is added in one change.
"""

from __future__ import annotations

import json
import os
import re
import zipfile
import zlib
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from store import faults
from store.concepts import insert_concept
from store.errors import (
    ArchiveError,
    ConceptExistsError,
    PhotoError,
    StoreError,
    TargetExistsError,
    TokenFileError,
    storage_errors,
)
from store.files import fsync_dir, read_verified, remove_dead_parts, sha256_hex, temporary_name
from store.models import Concept, utc_now
from store.photos import MAX_FILE_BYTES, carries_profile, check_clean_photo, extension, strip_profile
from store.schema import SCHEMA_VERSION
from store.state_files import MAX_STATE_BYTES, read_state_header
from store.tokens import check_version_kind, insert_version
from store.validation import MAX_PHOTOS_PER_CONCEPT, check_facts, check_kind, check_name, check_role, to_json

if TYPE_CHECKING:
    from store.library import Library

ARCHIVE_FORMAT = "familiar.archive/1"
SUFFIX = ".familiar"
MAX_TOKEN_VERSIONS = 500
MAX_MEMBERS = 1 + MAX_PHOTOS_PER_CONCEPT + MAX_TOKEN_VERSIONS
MAX_MANIFEST_BYTES = 4 * 2**20
MAX_TOTAL_BYTES = 2 * 2**30
_MEMBER = re.compile(r"manifest\.json|photos/[0-9a-f]{64}\.(?:jpg|png)|tokens/[0-9a-f]{64}\.safetensors")
_ZIP_DATE = (1980, 1, 1, 0, 0, 0)
_UNSAFE_NAME = re.compile(r"[/\\\x00-\x1f\x7f-\x9f]")  # folders, or control characters a terminal would obey


def export_concept(library: Library, name: str, target: Path, *, overwrite: bool = False) -> Path:
    """Write `name` to `target` (".familiar" is appended when it has no suffix); returns the path. The file
    holds the concept's photos. An existing `target` is refused unless `overwrite` (checked before writing
    and again just before the finished file is moved into place)."""
    if not target.suffix:
        target = target.with_suffix(SUFFIX)
    _refuse_existing(target, overwrite)
    with library.reading():
        concept = library.concepts.get(name)
        photos = library.concepts.photos(name)
        versions = library.tokens.versions(name)
    # Photos an older Familiar stored with their ICC profile leave converted to sRGB, like new ones.
    converted = {
        p.sha256: strip_profile(read_verified(p.path, p.sha256), p.format, str(p.path))
        for p in photos
        if carries_profile(p.path)
    }
    exported = {p.sha256: sha256_hex(converted[p.sha256]) if p.sha256 in converted else p.sha256 for p in photos}
    manifest = {
        "format": ARCHIVE_FORMAT,
        "schema_version": SCHEMA_VERSION,
        "base_fingerprint": concept.active.base_fingerprint if concept.active else None,
        "concept": {
            "name": concept.name,
            "kind": concept.kind,
            "facts": concept.facts,
            "created_at": concept.created_at,
            "updated_at": concept.updated_at,
        },
        "photos": [
            {
                "file": f"photos/{exported[p.sha256]}.{extension(p.format)}",
                "sha256": exported[p.sha256],
                "source_sha256": p.source_sha256,
                "size_bytes": len(converted[p.sha256]) if p.sha256 in converted else p.size_bytes,
                "format": p.format,
                "width": p.width,
                "height": p.height,
                "role": p.role,
                "original_name": p.original_name,
                "added_at": p.added_at,
            }
            for p in photos
        ],
        "token_versions": [
            {
                "file": f"tokens/{v.sha256}.safetensors",
                "sha256": v.sha256,
                "size_bytes": v.size_bytes,
                "number": v.number,
                "kind": v.kind,
                "base_fingerprint": v.base_fingerprint,
                "hidden_size": v.hidden_size,
                "metrics": v.metrics,
                "active": v.active,
                "created_at": v.created_at,
            }
            for v in versions
        ],
    }
    files = {f"photos/{exported[p.sha256]}.{extension(p.format)}": (p.path, p.sha256) for p in photos}
    files.update({f"tokens/{v.sha256}.safetensors": (v.path, v.sha256) for v in versions})
    manifest_bytes = json.dumps(manifest, indent=1, sort_keys=True, ensure_ascii=False).encode()
    prefix = f".{target.name}."
    part = target.parent / f"{prefix}{temporary_name('.part')}"
    try:
        with storage_errors(str(target.parent)):
            remove_dead_parts(target.parent, prefix)  # what a killed export to this file left
            with zipfile.ZipFile(part, "x") as archive:
                _add_member(archive, "manifest.json", manifest_bytes, zipfile.ZIP_DEFLATED)
                for member, (path, sha) in sorted(files.items()):
                    data = converted[sha] if sha in converted else read_verified(path, sha)
                    _add_member(archive, member, data, zipfile.ZIP_STORED)
                    faults.reach("archive member")
            with open(part, "rb+") as written:
                os.fsync(written.fileno())
            _refuse_existing(target, overwrite)
            os.replace(part, target)
            fsync_dir(target.parent)
    except FileNotFoundError as exc:
        raise ArchiveError(f"cannot write {target}: the folder {target.parent} does not exist") from exc
    finally:
        part.unlink(missing_ok=True)
    return target


def _refuse_existing(target: Path, overwrite: bool) -> None:
    if not overwrite and (target.exists() or target.is_symlink()):
        raise TargetExistsError(f"{target} already exists; nothing was written (replace it with --force)")


def _add_member(archive: zipfile.ZipFile, name: str, data: bytes, compression: int) -> None:
    info = zipfile.ZipInfo(name, date_time=_ZIP_DATE)
    info.compress_type = compression
    info.external_attr = 0o644 << 16
    archive.writestr(info, data)


def import_concept(library: Library, source: Path, *, rename: str | None = None) -> Concept:
    """Validate `source` completely and add its concept (as `rename` if given), all or nothing."""
    try:
        size = source.stat().st_size
    except OSError as exc:
        raise ArchiveError(f"{source}: cannot read it ({exc.strerror or exc})") from exc
    if size > MAX_TOTAL_BYTES:
        raise ArchiveError(f"{source}: over the {MAX_TOTAL_BYTES // 2**30} GB limit for an archive")
    try:
        with zipfile.ZipFile(source) as archive:
            return _import(library, archive, source, rename)
    except zipfile.BadZipFile as exc:
        raise ArchiveError(f"{source}: not a Familiar archive or damaged ({exc})") from exc


def _import(library: Library, archive: zipfile.ZipFile, source: Path, rename: str | None) -> Concept:
    members = _checked_members(archive, source)
    manifest = _parse_manifest(_read(archive, members["manifest.json"], MAX_MANIFEST_BYTES, source), source)
    listed = [p["file"] for p in manifest["photos"]] + sorted({v["file"] for v in manifest["token_versions"]})
    if len(set(listed)) != len(listed) or set(listed) | {"manifest.json"} != set(members):
        missing = sorted(set(listed) - set(members))
        extra = sorted(set(members) - set(listed) - {"manifest.json"})
        raise ArchiveError(f"{source}: files and manifest disagree (missing {missing}, unlisted {extra})")
    concept = manifest["concept"]
    name = check_name(rename if rename is not None else concept["name"])
    taken = library.find_concept(name)
    if taken:
        raise ConceptExistsError(
            f"a concept named {taken[1]!r} already exists; import with --rename NEW_NAME"
            if rename is None
            else f"a concept named {taken[1]!r} already exists",
            name,
        )
    updated_at = concept["updated_at"] if rename is None else utc_now()
    with library.change() as change:
        photo_rows = []
        for entry in manifest["photos"]:
            data = _read(archive, members[entry["file"]], MAX_FILE_BYTES, source)
            _check_hash(data, entry, source)
            label = f"{source}:{entry['file']}"
            try:
                data = strip_profile(data, entry["format"], label)  # archives from before profiles were converted
                width, height, thumbnail = check_clean_photo(data, entry["format"], label)
            except PhotoError as exc:
                raise ArchiveError(str(exc)) from exc
            if (width, height) != (entry["width"], entry["height"]):
                raise ArchiveError(f"{source}: {entry['file']} is not {entry['width']}x{entry['height']} pixels")
            sha = change.stage("photos", data, extension(entry["format"]))
            change.stage("thumbs", thumbnail, "jpg", key=sha)
            photo_rows.append({**{k: entry[k] for k in _PHOTO_COLUMNS}, "sha256": sha, "size_bytes": len(data)})
        if len({row["sha256"] for row in photo_rows}) != len(photo_rows):
            raise ArchiveError(f"{source}: the same photo is in the archive twice")
        headers = {}
        for file in sorted({v["file"] for v in manifest["token_versions"]}):
            data = _read(archive, members[file], MAX_STATE_BYTES, source)
            entry = next(v for v in manifest["token_versions"] if v["file"] == file)
            _check_hash(data, entry, source)
            try:
                headers[file] = read_state_header(data, f"{source}:{file}")
            except TokenFileError as exc:
                raise ArchiveError(str(exc)) from exc
            change.stage("tokens", data, "safetensors")
        for entry in manifest["token_versions"]:
            header = headers[entry["file"]]
            if (header.base_fingerprint, header.hidden_size) != (entry["base_fingerprint"], entry["hidden_size"]):
                raise ArchiveError(f"{source}: {entry['file']} does not match its manifest entry")
        change.lock()
        if library.find_concept(name) is not None:  # added by another process since the check above
            raise ConceptExistsError(f"a concept named {name!r} already exists", name)
        concept_id = insert_concept(library, name, concept["kind"], concept["facts"], concept["created_at"], updated_at)
        for row in photo_rows:
            library.db["photos"].insert({"concept_id": concept_id, **row})
            faults.reach("photo row")
        for entry in sorted(manifest["token_versions"], key=lambda v: v["number"]):
            try:
                insert_version(
                    library,
                    concept_id,
                    headers[entry["file"]],
                    entry["sha256"],
                    entry["size_bytes"],
                    kind=entry["kind"],
                    run_id=None,
                    metrics_json=to_json(entry["metrics"], "metrics"),
                    activate=entry["active"],
                    created_at=entry["created_at"],
                )
            except TokenFileError as exc:  # made for a model the library knows with another hidden size
                raise ArchiveError(f"{source}:{entry['file']}: {exc}") from exc
        library.db["concepts"].update(concept_id, {"updated_at": updated_at})
    return library.concepts.get(name)


_PHOTO_COLUMNS = (
    "sha256",
    "source_sha256",
    "format",
    "width",
    "height",
    "size_bytes",
    "role",
    "original_name",
    "added_at",
)


def _checked_members(archive: zipfile.ZipFile, source: Path) -> dict[str, zipfile.ZipInfo]:
    """Names and declared sizes of every member, refused before anything is decompressed."""
    infos = archive.infolist()
    if len(infos) > MAX_MEMBERS:
        raise ArchiveError(f"{source}: {len(infos)} files is more than an archive may hold ({MAX_MEMBERS})")
    members: dict[str, zipfile.ZipInfo] = {}
    total = 0
    for info in infos:
        name = info.filename
        parts = name.replace("\\", "/").split("/")
        if name.startswith(("/", "\\")) or re.match(r"[A-Za-z]:", name) or ".." in parts or "\x00" in name:
            raise ArchiveError(f"{source}: unsafe path {name!r} in the archive; refused")
        if not _MEMBER.fullmatch(name):
            raise ArchiveError(f"{source}: unexpected file {name!r} in the archive; refused")
        if name in members:
            raise ArchiveError(f"{source}: {name!r} appears twice in the archive")
        if info.flag_bits & 0x1:
            raise ArchiveError(f"{source}: {name!r} is encrypted; refused")
        limit = _limit(name)
        if info.file_size > limit:
            raise ArchiveError(f"{source}: {name!r} unpacks to {info.file_size} bytes, over the {limit} byte limit")
        total += info.file_size
        members[name] = info
    if total > MAX_TOTAL_BYTES:
        raise ArchiveError(f"{source}: unpacks to {total} bytes, over the {MAX_TOTAL_BYTES // 2**30} GB limit")
    if "manifest.json" not in members:
        raise ArchiveError(f"{source}: no manifest.json; not a Familiar archive")
    return members


def _limit(name: str) -> int:
    if name == "manifest.json":
        return MAX_MANIFEST_BYTES
    return MAX_FILE_BYTES if name.startswith("photos/") else MAX_STATE_BYTES


def _read(archive: zipfile.ZipFile, info: zipfile.ZipInfo, limit: int, source: Path) -> bytes:
    """A member's bytes, never more than `limit` decompressed; CRC errors are damage."""
    try:
        with archive.open(info) as member:
            data = member.read(limit + 1)
    except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError, OSError) as exc:
        raise ArchiveError(f"{source}: {info.filename} is damaged ({exc})") from exc
    if len(data) > limit or len(data) != info.file_size:
        raise ArchiveError(f"{source}: {info.filename} does not have its declared size")
    return data


def _check_hash(data: bytes, entry: dict[str, Any], source: Path) -> None:
    digest = sha256_hex(data)
    if (
        digest != entry["sha256"]
        or not entry["file"].split("/")[1].startswith(digest)
        or len(data) != entry["size_bytes"]
    ):
        raise ArchiveError(f"{source}: {entry['file']} does not match the sha256 or size in the manifest")


def _parse_manifest(data: bytes, source: Path) -> dict[str, Any]:
    """The manifest, with every field's type and value checked."""
    try:
        manifest = json.loads(data)
    except (UnicodeDecodeError, ValueError) as exc:
        raise ArchiveError(f"{source}: manifest.json is not JSON") from exc
    where = f"{source}: manifest.json"
    check = _Checker(where)
    check.object(manifest, "the manifest")
    if manifest.get("format") != ARCHIVE_FORMAT:
        raise ArchiveError(f"{where}: format is {manifest.get('format')!r}, expected {ARCHIVE_FORMAT!r}")
    schema = check.field(manifest, "schema_version", int)
    if schema > SCHEMA_VERSION:
        raise ArchiveError(f"{where}: made by a newer Familiar (schema {schema}); update Familiar to import it")
    concept = check.object(manifest.get("concept"), "concept")
    check.field(concept, "name", str, check_name)
    check.field(concept, "kind", str, check_kind)
    check.field(concept, "facts", str, check_facts)
    for stamp in ("created_at", "updated_at"):
        check.field(concept, stamp, str, check.timestamp)
    photos = check.list(manifest.get("photos"), "photos", MAX_PHOTOS_PER_CONCEPT)
    for photo in photos:
        check.object(photo, "a photo entry")
        for key in ("sha256", "source_sha256"):
            check.field(photo, key, str, check.sha256)
        check.field(photo, "format", str, lambda f: f if f in ("jpeg", "png") else check.fail(f"photo format {f!r}"))
        check.field(
            photo,
            "file",
            str,
            lambda f, p=photo: (
                f if f == f"photos/{p['sha256']}.{extension(p['format'])}" else check.fail(f"photo file {f!r}")
            ),
        )
        for key in ("size_bytes", "width", "height"):
            check.field(photo, key, int)
        check.field(photo, "role", str, check_role)
        check.field(
            photo,
            "original_name",
            str,
            lambda n: n if len(n) <= 255 and not _UNSAFE_NAME.search(n) else check.fail(f"original name {n!r}"),
        )
        check.field(photo, "added_at", str, check.timestamp)
    versions = check.list(manifest.get("token_versions"), "token_versions", MAX_TOKEN_VERSIONS)
    for version in versions:
        check.object(version, "a token version entry")
        check.field(version, "sha256", str, check.sha256)
        check.field(
            version,
            "file",
            str,
            lambda f, v=version: f if f == f"tokens/{v['sha256']}.safetensors" else check.fail(f"token file {f!r}"),
        )
        for key in ("size_bytes", "number", "hidden_size"):
            check.field(version, key, int)
        check.field(version, "kind", str, check_version_kind)
        check.field(version, "base_fingerprint", str, check.sha256)
        check.field(version, "active", bool)
        check.object(version.get("metrics"), "metrics")
        check.field(version, "created_at", str, check.timestamp)
    if sorted(v["number"] for v in versions) != list(range(1, len(versions) + 1)):
        raise ArchiveError(f"{where}: token versions must be numbered 1 to {len(versions)}")
    active = [v for v in versions if v["active"]]
    if len(active) > 1:
        raise ArchiveError(f"{where}: more than one active token version")
    fingerprint = manifest.get("base_fingerprint")
    if fingerprint != (active[0]["base_fingerprint"] if active else None):
        raise ArchiveError(f"{where}: base_fingerprint does not match the active token version")
    if len({p["sha256"] for p in photos}) != len(photos):
        raise ArchiveError(f"{where}: the same photo is listed twice")
    return manifest


class _Checker:
    """Field checks that fail with an ArchiveError naming the manifest."""

    def __init__(self, where: str) -> None:
        self.where = where

    def fail(self, what: str) -> Any:
        raise ArchiveError(f"{self.where}: invalid {what}")

    def object(self, value: Any, what: str) -> dict[str, Any]:
        if not isinstance(value, dict):
            self.fail(f"{what} (expected an object)")
        return value

    def list(self, value: Any, what: str, maximum: int) -> list[Any]:
        if not isinstance(value, list) or len(value) > maximum:
            self.fail(f"{what} (expected a list of at most {maximum})")
        return value

    def field(self, obj: dict[str, Any], key: str, kind: type, check: Callable[[Any], Any] | None = None) -> Any:
        value = obj.get(key)
        if not isinstance(value, kind) or (kind is int and (isinstance(value, bool) or value < 0)):
            self.fail(f"{key} {value!r}")
        if check is not None:
            try:
                check(value)
            except ArchiveError:
                raise
            except (StoreError, ValueError) as exc:
                raise ArchiveError(f"{self.where}: invalid {key}: {exc}") from exc
        return value

    def sha256(self, value: str) -> str:
        return value if re.fullmatch(r"[0-9a-f]{64}", value) else self.fail(f"sha256 {value!r}")

    def timestamp(self, value: str) -> str:
        datetime.fromisoformat(value)
        return value
