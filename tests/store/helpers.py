"""Shared test helpers: photo and state-file factories, library snapshots."""

from __future__ import annotations

import functools
import io
import random
import sqlite3
import struct
import zlib
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image, ImageCms
from safetensors.numpy import save

if TYPE_CHECKING:
    from store.library import Library

DREAMBOOTH = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "dreambooth"
FINGERPRINT = "ab" * 32


def dreambooth(subject: str, count: int) -> list[Path]:
    """The first `count` real photos of a DreamBooth subject (the caller skips when absent)."""
    return sorted((DREAMBOOTH / subject).glob("*.jpg"))[:count]


def noise_image(size: tuple[int, int] = (160, 120), seed: int = 0, mode: str = "RGB") -> Image.Image:
    """A small image whose pixels depend on `seed`, so different seeds never collide as duplicates."""
    rng = random.Random(seed)
    pixels = bytes(rng.getrandbits(8) for _ in range(size[0] * size[1] * len(mode)))
    return Image.frombytes(mode, size, pixels)


def write_image(
    path: Path, seed: int = 0, fmt: str = "JPEG", size: tuple[int, int] = (160, 120), alpha: bool = False, **options
) -> Path:
    """Write a noise image file; `options` go to Pillow's save (exif=..., comment=..., pnginfo=...)."""
    noise_image(size, seed, "RGBA" if alpha else "RGB").save(path, fmt, **options)
    return path


def image_bytes(image: Image.Image, fmt: str = "PNG") -> bytes:
    out = io.BytesIO()
    image.save(out, fmt)
    return out.getvalue()


def state_bytes(hidden: int = 8, fingerprint: str = FINGERPRINT, seed: int = 0, **metadata: str) -> bytes:
    """A concept state file as the engine writes it, made with safetensors itself (no torch).

    safetensors orders header keys at random, so results are cached: the same arguments give the same bytes.
    """
    return _state_bytes(hidden, fingerprint, seed, tuple(sorted(metadata.items())))


@functools.cache
def _state_bytes(hidden: int, fingerprint: str, seed: int, metadata: tuple[tuple[str, str], ...]) -> bytes:
    rng = np.random.default_rng(seed)
    tensors = {
        "embed": rng.standard_normal((33, hidden)).astype(np.float32),
        "head": rng.standard_normal((33, hidden)).astype(np.float32),
    }
    meta = {
        "format": "familiar.concept/1",
        "base_fingerprint": fingerprint,
        "name": "bo",
        "hidden_size": str(hidden),
        "n_generation": "16",
        "n_understanding": "16",
        **dict(metadata),
    }
    return save(tensors, metadata=meta)


def stored_files(root: Path) -> dict[str, bytes]:
    """Every file of a library except the database, by relative path, with its bytes."""
    skip = {"library.db", "library.db-wal", "library.db-shm"}
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file() and p.name not in skip
    }


def rows(root: Path) -> dict[str, list[tuple]]:
    """Every row of every table, read through a fresh connection (what a crash would leave)."""
    with sqlite3.connect(root / "library.db") as conn:
        tables = [t for (t,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")]
        return {t: conn.execute(f"SELECT * FROM {t} ORDER BY rowid").fetchall() for t in tables}


PROFILE_TEXT = "GPS 51.5N owner Jane Doe"  # 24 characters: the length of the copyright text it replaces


def tagged_profile() -> bytes:
    """An ICC profile whose red and blue primaries are swapped and whose copyright tag carries private text:
    converting with it turns red pixels blue, and keeping it would keep the text."""
    data = bytearray(ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes())
    (count,) = struct.unpack(">I", data[128:132])
    tags = {bytes(data[132 + 12 * i : 136 + 12 * i]): 132 + 12 * i for i in range(count)}
    red, blue = tags[b"rXYZ"], tags[b"bXYZ"]
    data[red + 4 : red + 12], data[blue + 4 : blue + 12] = data[blue + 4 : blue + 12], data[red + 4 : red + 12]
    (offset,) = struct.unpack(">I", data[tags[b"cprt"] + 4 : tags[b"cprt"] + 8])
    text = PROFILE_TEXT.encode("utf-16-be")
    data[offset + 28 : offset + 28 + len(text)] = text
    return bytes(data)


def big_png(path: Path, width: int, height: int) -> Path:
    """A 16-bit RGB PNG of `width` x `height` black pixels, written row by row (small on disk, huge decoded)."""
    compressor = zlib.compressobj(1)
    row = bytes(1 + width * 6)
    body = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()
    header = struct.pack(">IIBBBBB", width, height, 16, 2, 0, 0, 0)
    chunks = [(b"IHDR", header), (b"IDAT", body), (b"IEND", b"")]
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + b"".join(struct.pack(">I", len(d)) + k + d + struct.pack(">I", zlib.crc32(k + d)) for k, d in chunks)
    )
    return path


def with_history(library: Library, tmp_path: Path) -> None:
    """rex with photos, an instant and a trained version, a finished run with a checkpoint and a picture."""
    library.concepts.add("rex", [write_image(tmp_path / f"rex{i}.jpg", seed=10 + i) for i in range(3)], kind="pet")
    library.tokens.add("rex", state_bytes(seed=1), kind="instant")
    run = library.runs.start(library.runs.create("rex", {"epochs": 1}).id)
    (library.runs.folder(run.id) / "optimizer.bin").write_bytes(b"adam")
    library.tokens.add_from_checkpoint(library.runs.add_checkpoint(run.id, state_bytes(seed=2), step=5, epoch=1).id)
    library.runs.finish(run.id, "done")
    picture = (tmp_path / "rex0.jpg").read_bytes()
    library.gallery.add(picture, prompt="<rex> at the beach", seed=1, version_ids=[library.tokens.active("rex").id])
