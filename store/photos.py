"""Photo intake: refuse what is not a sound photo, fix orientation, strip metadata, make thumbnails.

Pixels are re-encoded so that nothing but the picture (and its colour profile) is kept: EXIF (GPS,
camera serials, times), XMP, IPTC and comments are dropped. JPEG stays JPEG (quality 95), PNG stays
PNG; WebP and HEIC (HEIC only where the optional pillow-heif is installed) become JPEG, or PNG when
they have transparency. Pure functions on bytes: no database, no files written.
"""

from __future__ import annotations

import functools
import io
import struct
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageOps, UnidentifiedImageError

from store.errors import PhotoError
from store.files import sha256_hex

MAX_FILE_BYTES = 50 * 2**20
MAX_SIDE = 20_000
MAX_PIXELS = 80_000_000
MIN_SIDE = 64
THUMBNAIL_SIDE = 256
JPEG_QUALITY = 95
THUMBNAIL_QUALITY = 85

# What Pillow reports for a photo this module wrote; anything else in `info` is metadata.
_PLAIN_INFO = {
    "jfif",
    "jfif_version",
    "jfif_unit",
    "jfif_density",
    "dpi",
    "icc_profile",
    "adobe",
    "adobe_transform",
    "progressive",
    "progression",
    "transparency",
    "gamma",
    "srgb",
    "chromaticity",
    "aspect",
}
_HEIF_BRANDS = {b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"mif1", b"msf1"}
_PNG_MODES = {"1", "L", "LA", "P", "RGB", "RGBA", "I;16"}


@dataclass(frozen=True)
class CleanPhoto:
    """A photo ready to store: re-encoded bytes, their hash, and a JPEG thumbnail."""

    data: bytes
    format: str  # "jpeg" or "png"
    width: int
    height: int
    sha256: str
    source_sha256: str
    thumbnail: bytes
    original_name: str

    @property
    def ext(self) -> str:
        return extension(self.format)


def extension(fmt: str) -> str:
    return {"jpeg": "jpg", "png": "png"}[fmt]


@functools.cache
def heif_available() -> bool:
    """Whether HEIC photos can be read (the optional pillow-heif package is installed)."""
    try:
        from pillow_heif import register_heif_opener
    except ImportError:
        return False
    register_heif_opener()
    return True


def accepted_formats() -> tuple[str, ...]:
    return ("JPEG", "PNG", "WEBP", *(("HEIF",) if heif_available() else ()))


def read_photo_file(path: Path) -> bytes:
    """The bytes of a photo file, refusing missing, empty and oversized files before reading them."""
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise PhotoError(f"{path}: cannot read it ({exc.strerror or exc})") from exc
    if not path.is_file():
        raise PhotoError(f"{path}: not a file")
    if size == 0:
        raise PhotoError(f"{path}: the file is empty")
    if size > MAX_FILE_BYTES:
        raise PhotoError(f"{path}: {size / 2**20:.0f} MB is over the {MAX_FILE_BYTES // 2**20} MB limit for a photo")
    try:
        return path.read_bytes()
    except OSError as exc:
        raise PhotoError(f"{path}: cannot read it ({exc.strerror or exc})") from exc


def clean_photo(data: bytes, label: str) -> CleanPhoto:
    """Check and re-encode one photo; `label` (usually its path) names it in error messages."""
    if len(data) > MAX_FILE_BYTES:
        raise PhotoError(f"{label}: over the {MAX_FILE_BYTES // 2**20} MB limit for a photo")
    with _decoding(label, data):
        image = _open(data, label, accepted_formats(), min_side=MIN_SIDE)
        source_format = image.format
        icc = image.info.get("icc_profile")
        upright = ImageOps.exif_transpose(image)
        has_alpha = upright.mode in ("RGBA", "LA", "PA") or "transparency" in upright.info
        if source_format == "PNG" or (source_format in ("WEBP", "HEIF") and has_alpha):
            fmt, data_out = "png", _encode_png(upright, icc)
        else:
            fmt, data_out = "jpeg", _encode_jpeg(upright, icc)
        thumb = make_thumbnail(upright)
    return CleanPhoto(
        data=data_out,
        format=fmt,
        width=upright.width,
        height=upright.height,
        sha256=sha256_hex(data_out),
        source_sha256=sha256_hex(data),
        thumbnail=thumb,
        original_name=Path(label).name[:255],
    )


def check_clean_photo(data: bytes, fmt: str, label: str) -> tuple[int, int, bytes]:
    """Check a photo from an archive, kept byte for byte: sound, of format `fmt`, carrying no metadata.

    Returns its width, height and thumbnail."""
    if fmt not in ("jpeg", "png"):
        raise PhotoError(f"{label}: unknown photo format {fmt!r}")
    with _decoding(label, data):
        image = _open(data, label, ("JPEG",) if fmt == "jpeg" else ("PNG",), min_side=MIN_SIDE)
        extra = set(image.info) - _PLAIN_INFO
        if extra or image.getexif():
            raise PhotoError(f"{label}: carries metadata ({', '.join(sorted(extra)) or 'EXIF'}); refused")
        return image.width, image.height, make_thumbnail(image)


def check_generated_image(data: bytes, label: str) -> tuple[str, int, int, bytes]:
    """Check a generated image (PNG or JPEG); returns its format, size and a thumbnail."""
    if len(data) > MAX_FILE_BYTES:
        raise PhotoError(f"{label}: over the {MAX_FILE_BYTES // 2**20} MB limit for an image")
    with _decoding(label, data):
        image = _open(data, label, ("PNG", "JPEG"), min_side=1)
        return ("png" if image.format == "PNG" else "jpeg"), image.width, image.height, make_thumbnail(image)


def make_thumbnail(image: Image.Image) -> bytes:
    """A JPEG at most THUMBNAIL_SIDE pixels a side; transparency goes on white."""
    thumb = image.copy()
    thumb.thumbnail((THUMBNAIL_SIDE, THUMBNAIL_SIDE), Image.Resampling.LANCZOS)
    if thumb.mode != "RGB":
        rgba = thumb.convert("RGBA")
        thumb = Image.new("RGB", rgba.size, (255, 255, 255))
        thumb.paste(rgba, mask=rgba.getchannel("A"))
    out = io.BytesIO()
    thumb.save(out, "JPEG", quality=THUMBNAIL_QUALITY)
    return out.getvalue()


def _open(data: bytes, label: str, formats: tuple[str, ...], *, min_side: int) -> Image.Image:
    image = Image.open(io.BytesIO(data), formats=formats)
    width, height = image.size
    if width > MAX_SIDE or height > MAX_SIDE or width * height > MAX_PIXELS:
        raise PhotoError(
            f"{label}: {width}x{height} pixels is too large (at most {MAX_SIDE} pixels a side and"
            f" {MAX_PIXELS // 1_000_000} megapixels)"
        )
    if min(width, height) < min_side:
        raise PhotoError(f"{label}: {width}x{height} pixels is too small (at least {min_side} pixels a side)")
    image.load()
    return image


@contextmanager
def _decoding(label: str, data: bytes) -> Iterator[None]:
    """Turn every way decoding can fail into a PhotoError; decompression bombs are errors, not warnings."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            yield
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise PhotoError(f"{label}: refused, the image would be too large to decode safely ({exc})") from exc
    except UnidentifiedImageError as exc:
        if data[4:8] == b"ftyp" and data[8:12] in _HEIF_BRANDS and not heif_available():
            raise PhotoError(f"{label}: HEIC photos need the optional pillow-heif package") from exc
        kinds = "JPEG, PNG, WebP" + (" or HEIC" if heif_available() else "")
        raise PhotoError(f"{label}: not a photo Familiar can read ({kinds})") from exc
    except (OSError, SyntaxError, ValueError, EOFError, struct.error) as exc:
        raise PhotoError(f"{label}: the image is damaged or truncated ({exc})") from exc


def _encode_jpeg(image: Image.Image, icc: bytes | None) -> bytes:
    if image.mode not in ("L", "RGB"):
        image = image.convert("RGB")
    image.info = {}  # Pillow would copy a JPEG comment from here
    out = io.BytesIO()
    image.save(out, "JPEG", quality=JPEG_QUALITY, **({"icc_profile": icc} if icc else {}))
    return out.getvalue()


def _encode_png(image: Image.Image, icc: bytes | None) -> bytes:
    transparency = image.info.get("transparency")
    if image.mode not in _PNG_MODES:
        image = image.convert("RGBA" if transparency is not None or "A" in image.mode else "RGB")
        transparency = None
    image.info = {}
    options: dict[str, object] = {"icc_profile": icc} if icc else {}
    if transparency is not None:
        options["transparency"] = transparency
    out = io.BytesIO()
    image.save(out, "PNG", **options)
    return out.getvalue()
