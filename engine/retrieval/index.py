"""The offline embedding index: a folder of unit vectors, their metadata and optional VQ tokens.

Layout (see docs/retrieval.md):
- ``embeddings.npy``: float16 [count, dim], L2-normalised, read memory-mapped;
- ``metadata.jsonl``: one JSON object per vector: ``source`` (path or URL), ``caption``, ``sha256``;
- ``vq_tokens.npy`` (optional): int32 [count, tokens_per_image], the image tokens for one base model;
- ``manifest.json``: format and version, the embedder, ``count`` and ``metadata_bytes``, the VQ tokens' model.

The manifest is the commit point. Rows are appended in chunks: data first, then the manifest is replaced
atomically, so a build killed at any moment leaves a valid index of the chunks it finished; bytes past the
committed extents are ignored when reading and cut off when the next build resumes.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

import numpy as np

from engine.errors import EngineError, ImageError
from engine.progress import Progress, ProgressCallback
from engine.retrieval.embedder_info import EmbedderInfo
from engine.retrieval.vector_search import Backend, exact_search

if TYPE_CHECKING:
    from PIL import Image

    from engine.model.image_tokens import ImageTokenizer
    from engine.retrieval.embedder import Embedder

FORMAT_NAME = "familiar-embedding-index"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
EMBEDDINGS = "embeddings.npy"
METADATA = "metadata.jsonl"
VQ_TOKENS = "vq_tokens.npy"
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"})
MAX_CAPTION_CHARS = 1000
NORM_TOLERANCE = 1e-2


@dataclass(frozen=True)
class IndexRecord:
    """One vector's metadata row."""

    source: str
    caption: str
    sha256: str


@dataclass(frozen=True)
class VqInfo:
    """Which base model's image tokenizer produced ``vq_tokens.npy``."""

    model_fingerprint: str
    tokens_per_image: int
    model: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "model_fingerprint": self.model_fingerprint,
            "tokens_per_image": self.tokens_per_image,
            "model": self.model,
        }


@dataclass(frozen=True)
class Manifest:
    embedder: EmbedderInfo
    count: int
    metadata_bytes: int
    vq: VqInfo | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT_NAME,
            "version": FORMAT_VERSION,
            "embedder": self.embedder.to_dict(),
            "count": self.count,
            "metadata_bytes": self.metadata_bytes,
            "vq": None if self.vq is None else self.vq.to_dict(),
            "updated": datetime.now(UTC).isoformat(timespec="seconds"),
        }

    @classmethod
    def read(cls, folder: Path) -> Manifest:
        path = folder / MANIFEST
        if not path.is_file():
            raise EngineError(
                f"{folder} is not an embedding index (no {MANIFEST}); build one with `familiar index build`"
            )
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            if data.get("format") != FORMAT_NAME:
                raise ValueError(f"format is {data.get('format')!r}, not {FORMAT_NAME!r}")
            if data.get("version") != FORMAT_VERSION:
                raise ValueError(f"version {data.get('version')!r} is not supported (this reads {FORMAT_VERSION})")
            vq = data.get("vq")
            manifest = cls(
                embedder=EmbedderInfo.from_dict(data["embedder"]),
                count=int(data["count"]),
                metadata_bytes=int(data["metadata_bytes"]),
                vq=None
                if vq is None
                else VqInfo(str(vq["model_fingerprint"]), int(vq["tokens_per_image"]), str(vq["model"])),
            )
        except (ValueError, KeyError, TypeError, AttributeError, EngineError) as exc:
            raise EngineError(f"{path} is not a valid index manifest: {exc}") from None
        if manifest.count < 0 or manifest.metadata_bytes < 0 or (manifest.vq and manifest.vq.tokens_per_image < 1):
            raise EngineError(f"{path} is not a valid index manifest: negative sizes")
        return manifest


@dataclass(frozen=True)
class Neighbour:
    """A search result: where the image is, what it is, and its cosine similarity to the query."""

    source: str
    caption: str
    sha256: str
    similarity: float
    row: int | None = None
    """Row in the offline index (its VQ tokens are ``index.vq_tokens[row]``); None for downloaded images."""
    url: str | None = None
    """Where a downloaded image came from; None for the offline index's own rows."""


@dataclass
class Neighbours:
    """Ranked results, most similar first, with their embeddings (float32 [len(items), dim])."""

    items: list[Neighbour]
    embeddings: np.ndarray


def _header_offset(handle: BinaryIO) -> int:
    version = np.lib.format.read_magic(handle)
    if version != (1, 0):
        raise EngineError(f"unexpected .npy format version {version}")
    np.lib.format.read_array_header_1_0(handle)
    return handle.tell()


def _write_header(handle: BinaryIO, dtype: np.dtype, rows: int, width: int) -> int:
    handle.seek(0)
    header = {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False, "shape": (rows, width)}
    np.lib.format.write_array_header_1_0(handle, header)
    return handle.tell()


def _open_rows(path: Path, dtype: np.dtype, count: int, width: int) -> np.ndarray:
    """The first ``count`` rows of an .npy file, memory-mapped read-only (never unpickled)."""
    if not path.is_file():
        raise EngineError(f"the index is missing {path.name}")
    if count == 0:
        return np.empty((0, width), dtype=dtype)
    try:
        array = np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError) as exc:
        raise EngineError(f"cannot read {path}: {exc}") from None
    if array.dtype != dtype or array.ndim != 2 or array.shape[1] != width or array.shape[0] < count:
        raise EngineError(
            f"{path} holds {array.dtype} {list(array.shape)}; the manifest expects {dtype} with at least "
            f"{count} rows of {width}"
        )
    if not array.flags.c_contiguous:
        raise EngineError(f"{path} is not in C order")
    return array[:count]


def _parse_record(line: bytes, where: str) -> IndexRecord:
    try:
        data = json.loads(line)
        record = IndexRecord(source=data["source"], caption=data["caption"], sha256=data["sha256"])
    except (ValueError, KeyError, TypeError) as exc:
        raise EngineError(f"{where} is malformed: {exc}") from None
    if not all(isinstance(value, str) for value in (record.source, record.caption, record.sha256)):
        raise EngineError(f"{where} is malformed: source, caption and sha256 must be strings")
    return record


class EmbeddingIndex:
    """A read-only view of an index folder; the vectors stay on disk, memory-mapped."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self.manifest = Manifest.read(self.path)
        self.embeddings = _open_rows(self.path / EMBEDDINGS, np.dtype(np.float16), self.count, self.embedder.dim)
        self.vq_tokens = (
            None
            if self.vq is None
            else _open_rows(self.path / VQ_TOKENS, np.dtype(np.int32), self.count, self.vq.tokens_per_image)
        )
        self._offsets: np.ndarray | None = None
        metadata = self.path / METADATA
        if not metadata.is_file() or metadata.stat().st_size < self.manifest.metadata_bytes:
            raise EngineError(f"{metadata} is missing or shorter than the manifest says")

    @property
    def count(self) -> int:
        return self.manifest.count

    @property
    def embedder(self) -> EmbedderInfo:
        return self.manifest.embedder

    @property
    def vq(self) -> VqInfo | None:
        return self.manifest.vq

    def _metadata_bytes(self) -> np.ndarray:
        if self.manifest.metadata_bytes == 0:
            return np.empty(0, dtype=np.uint8)
        return np.memmap(self.path / METADATA, dtype=np.uint8, mode="r", shape=(self.manifest.metadata_bytes,))

    def _line_offsets(self) -> np.ndarray:
        if self._offsets is None:
            ends = np.flatnonzero(self._metadata_bytes() == ord("\n"))
            if len(ends) != self.count:
                raise EngineError(f"{self.path / METADATA} has {len(ends)} rows; the manifest says {self.count}")
            self._offsets = np.concatenate([[0], ends + 1]).astype(np.int64)
        return self._offsets

    def records(self, rows: Sequence[int] | np.ndarray) -> list[IndexRecord]:
        """Metadata rows for the given row numbers."""
        offsets, data = self._line_offsets(), self._metadata_bytes()
        out = []
        for row in np.asarray(rows, dtype=np.int64).tolist():
            if not 0 <= row < self.count:
                raise IndexError(f"row {row} is outside the index (0..{self.count - 1})")
            line = data[offsets[row] : offsets[row + 1] - 1].tobytes()
            out.append(_parse_record(line, f"{self.path / METADATA} row {row}"))
        return out

    def iter_records(self) -> Iterator[IndexRecord]:
        with open(self.path / METADATA, "rb") as handle:
            for row in range(self.count):
                yield _parse_record(handle.readline(), f"{self.path / METADATA} row {row}")

    def search(self, queries: np.ndarray, k: int, backend: Backend = "auto") -> tuple[np.ndarray, np.ndarray]:
        """Exact top-k by cosine similarity: ``(scores, rows)`` [Q, min(k, count)], best first."""
        return exact_search(self.embeddings, queries, k, backend)

    def neighbours(self, query: np.ndarray, k: int, backend: Backend = "auto") -> Neighbours:
        """The ``k`` rows nearest one query vector, with their metadata and embeddings."""
        scores, rows = self.search(np.asarray(query, dtype=np.float32).reshape(1, -1), k, backend)
        records = self.records(rows[0])
        items = [
            Neighbour(r.source, r.caption, r.sha256, float(score), row=int(row))
            for r, score, row in zip(records, scores[0], rows[0], strict=True)
        ]
        return Neighbours(items, np.asarray(self.embeddings[rows[0]], dtype=np.float32))


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # Windows cannot open a directory; its replace is durable enough
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class IndexWriter:
    """Creates an index folder or reopens one to append to it; each ``append`` is one committed chunk."""

    def __init__(self, path: Path | str, embedder: EmbedderInfo, vq: VqInfo | None = None) -> None:
        self.path = Path(path)
        if (self.path / MANIFEST).is_file():
            self.manifest = Manifest.read(self.path)
            self.manifest.embedder.check_compatible(embedder)
            if self.manifest.vq != vq:
                have = "no VQ tokens" if self.manifest.vq is None else f"VQ tokens of model {self.manifest.vq.model}"
                want = "none" if vq is None else f"those of model {vq.model}"
                raise EngineError(
                    f"{self.path} holds {have}, but this build asks for {want}; build a new index instead"
                )
            self._truncate_to_committed()
        else:
            self._create(embedder, vq)

    @property
    def count(self) -> int:
        return self.manifest.count

    def _create(self, embedder: EmbedderInfo, vq: VqInfo | None) -> None:
        ours = {MANIFEST, MANIFEST + ".tmp", EMBEDDINGS, METADATA, VQ_TOKENS}
        if self.path.exists():
            if not self.path.is_dir():
                raise EngineError(f"{self.path} is a file; an index is a folder")
            strangers = sorted(p.name for p in self.path.iterdir() if p.name not in ours)
            if strangers:
                raise EngineError(
                    f"{self.path} is not empty and is not an index ({', '.join(strangers[:3])}...); "
                    "choose a new or empty folder"
                )
        self.path.mkdir(parents=True, exist_ok=True)
        with open(self.path / EMBEDDINGS, "wb") as handle:
            _write_header(handle, np.dtype(np.float16), 0, embedder.dim)
        if vq is not None:
            with open(self.path / VQ_TOKENS, "wb") as handle:
                _write_header(handle, np.dtype(np.int32), 0, vq.tokens_per_image)
        else:
            (self.path / VQ_TOKENS).unlink(missing_ok=True)
        (self.path / METADATA).write_bytes(b"")
        self.manifest = Manifest(embedder, 0, 0, vq)
        self._commit(self.manifest)

    def _arrays(self) -> list[tuple[Path, np.dtype, int]]:
        arrays = [(self.path / EMBEDDINGS, np.dtype(np.float16), self.manifest.embedder.dim)]
        if self.manifest.vq is not None:
            arrays.append((self.path / VQ_TOKENS, np.dtype(np.int32), self.manifest.vq.tokens_per_image))
        return arrays

    def _truncate_to_committed(self) -> None:
        """Cut off whatever a killed build wrote after the last committed chunk."""
        for path, dtype, width in self._arrays():
            with open(path, "r+b") as handle:
                offset = _header_offset(handle)
                if _write_header(handle, dtype, self.count, width) != offset:
                    raise EngineError(f"{path} has an unexpected header; rebuild the index")
                handle.truncate(offset + self.count * width * dtype.itemsize)
        with open(self.path / METADATA, "r+b") as handle:
            handle.truncate(self.manifest.metadata_bytes)

    def known_sha256(self) -> set[str]:
        return {record.sha256 for record in EmbeddingIndex(self.path).iter_records()}

    def append(
        self, embeddings: np.ndarray, records: Sequence[IndexRecord], vq_tokens: np.ndarray | None = None
    ) -> None:
        """Append and commit one chunk: unit vectors [n, dim], their records, and [n, tokens] VQ tokens if kept."""
        count, dim = self.count, self.manifest.embedder.dim
        embeddings = np.asarray(embeddings, dtype=np.float32)
        if embeddings.ndim != 2 or embeddings.shape != (len(records), dim):
            raise EngineError(f"expected embeddings [{len(records)}, {dim}], got {list(embeddings.shape)}")
        norms = np.linalg.norm(embeddings, axis=1)
        if not np.all(np.abs(norms - 1.0) < NORM_TOLERANCE):
            raise EngineError("embeddings must be L2-normalised")
        payloads = [embeddings.astype(np.float16)]
        if (vq_tokens is None) != (self.manifest.vq is None):
            raise EngineError("VQ tokens must be given exactly when the index keeps them")
        if self.manifest.vq is not None:
            tokens = np.asarray(vq_tokens)
            if tokens.shape != (len(records), self.manifest.vq.tokens_per_image):
                raise EngineError(
                    f"expected VQ tokens [{len(records)}, {self.manifest.vq.tokens_per_image}], "
                    f"got {list(tokens.shape)}"
                )
            payloads.append(tokens.astype(np.int32))
        for (path, dtype, width), payload in zip(self._arrays(), payloads, strict=True):
            with open(path, "r+b") as handle:
                offset = _header_offset(handle)
                handle.seek(offset + count * width * dtype.itemsize)
                handle.write(np.ascontiguousarray(payload, dtype=dtype).tobytes())
                _write_header(handle, dtype, count + len(records), width)
                handle.flush()
                os.fsync(handle.fileno())
        lines = b"".join(
            json.dumps({"source": r.source, "caption": r.caption, "sha256": r.sha256}).encode() + b"\n" for r in records
        )
        with open(self.path / METADATA, "r+b") as handle:
            handle.seek(self.manifest.metadata_bytes)
            handle.write(lines)
            handle.flush()
            os.fsync(handle.fileno())
        self._commit(
            Manifest(
                self.manifest.embedder,
                count + len(records),
                self.manifest.metadata_bytes + len(lines),
                self.manifest.vq,
            )
        )

    def _commit(self, manifest: Manifest) -> None:
        temporary = self.path / (MANIFEST + ".tmp")
        with open(temporary, "w", encoding="utf-8") as handle:
            json.dump(manifest.to_dict(), handle, indent=2)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, self.path / MANIFEST)
        _fsync_dir(self.path)
        self.manifest = manifest


@dataclass(frozen=True)
class ImageTokenSource:
    """A base model's image tokenizer, so the index stores each image's VQ tokens and training needs no pixels."""

    tokenizer: ImageTokenizer
    model_fingerprint: str
    model: str

    def info(self) -> VqInfo:
        return VqInfo(self.model_fingerprint, self.tokenizer.tokens_per_image, self.model)


@dataclass
class BuildReport:
    """What a build did; ``failed`` lists (path, reason) for image files that could not be read."""

    added: int = 0
    already_indexed: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)
    count: int = 0


def image_files(root: Path, exclude: Path | None = None) -> list[Path]:
    """Image files under ``root`` (recursive, sorted, by suffix), skipping hidden folders and ``exclude``."""
    found = []
    skip = exclude.resolve() if exclude is not None else None
    for folder, subfolders, files in os.walk(root):
        subfolders[:] = sorted(
            name
            for name in subfolders
            if not name.startswith(".") and (skip is None or (Path(folder) / name).resolve() != skip)
        )
        found.extend(Path(folder) / name for name in sorted(files) if Path(name).suffix.lower() in IMAGE_SUFFIXES)
    return found


def _caption(path: Path) -> str:
    """The caption in a sidecar ``<name>.txt`` beside the image, if there is one."""
    sidecar = path.with_suffix(".txt")
    if not sidecar.is_file():
        return ""
    try:
        return sidecar.read_text(encoding="utf-8", errors="replace").strip()[:MAX_CAPTION_CHARS]
    except OSError:
        return ""


@dataclass
class _Loaded:
    path: Path
    sha256: str = ""
    image: Image.Image | None = None
    error: str | None = None


def _load(path: Path, known: set[str]) -> _Loaded:
    try:
        data = path.read_bytes()
    except OSError as exc:
        return _Loaded(path, error=f"cannot be read ({exc.strerror or exc})")
    loaded = _Loaded(path, hashlib.sha256(data).hexdigest())
    if loaded.sha256 in known:
        return loaded
    from engine.model.images import open_image  # torch comes with it; reading an index does not need it

    try:
        loaded.image = open_image(data)
    except ImageError as exc:
        loaded.error = str(exc)
    return loaded


def build_index(
    source: Path | str,
    index_path: Path | str,
    embedder: Embedder,
    image_tokens: ImageTokenSource | None = None,
    chunk_size: int = 256,
    batch_size: int = 32,
    progress: ProgressCallback | None = None,
) -> BuildReport:
    """Index every image under ``source`` into ``index_path`` (created, or extended when it exists).

    Files whose sha256 is already indexed are skipped, so a rerun adds only new images and a killed build
    resumes where its last committed chunk ended. Unreadable image files are reported and skipped.
    Progress is an "indexing" event per batch, counting files.
    """
    source, index_path = Path(source), Path(index_path)
    if not source.is_dir():
        raise EngineError(f"{source} is not a folder")
    if chunk_size < 1 or batch_size < 1:
        raise EngineError("chunk_size and batch_size must be positive")
    writer = IndexWriter(index_path, embedder.info, None if image_tokens is None else image_tokens.info())
    known = writer.known_sha256()
    files = image_files(source, exclude=index_path)
    report = BuildReport()
    chunk: tuple[list[np.ndarray], list[IndexRecord], list[np.ndarray]] = ([], [], [])

    def flush() -> None:
        if chunk[1]:
            writer.append(
                np.concatenate(chunk[0]), chunk[1], np.concatenate(chunk[2]) if image_tokens is not None else None
            )
            report.added += len(chunk[1])
            for part in chunk:
                part.clear()

    with ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as pool:
        for start in range(0, len(files), batch_size):
            batch: list[_Loaded] = []
            images: list[Image.Image] = []
            for loaded in pool.map(lambda path: _load(path, known), files[start : start + batch_size]):
                if loaded.error is not None:
                    report.failed.append((str(loaded.path), loaded.error))
                elif loaded.sha256 in known or loaded.image is None:
                    report.already_indexed += 1
                else:
                    known.add(loaded.sha256)
                    batch.append(loaded)
                    images.append(loaded.image)
            if batch:
                chunk[0].append(embedder.embed(images, batch_size=batch_size))
                chunk[1].extend(
                    IndexRecord(str(loaded.path.resolve()), _caption(loaded.path), loaded.sha256) for loaded in batch
                )
                if image_tokens is not None:
                    chunk[2].append(image_tokens.tokenizer.encode(images).numpy().astype(np.int32))
            if len(chunk[1]) >= chunk_size:
                flush()
            if progress is not None:
                progress(Progress("indexing", min(start + batch_size, len(files)), len(files)))
    flush()
    report.count = writer.count
    return report
