"""Photo intake: refuse what is not a sound photo, fix orientation, strip metadata, make thumbnails.

Pixels are re-encoded so that nothing but the picture is kept: EXIF (GPS, camera serials, times), XMP,
IPTC and comments are dropped, and an embedded ICC colour profile (which can carry any text) is applied,
converting the pixels to sRGB, then dropped too. JPEG stays JPEG (quality 95), PNG stays PNG; WebP and
HEIC (HEIC only where the optional pillow-heif is installed) become JPEG, or PNG when they have
transparency. Memory is bounded: the size and mode in the header decide, before any pixel is decoded,
whether a photo fits MAX_DECODED_BYTES; a larger JPEG is decoded scaled down by 2, 4 or 8 (libjpeg's
DCT scaling), any other format is refused. Pure functions on bytes: no database, no files written.
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

from PIL import Image, ImageCms, ImageOps, UnidentifiedImageError

from store.errors import PhotoError
from store.files import sha256_hex

MAX_FILE_BYTES = 50 * 2**20
MAX_SIDE = 20_000
MAX_PIXELS = 80_000_000
MAX_DECODED_BYTES = 192 * 2**20  # the pixels of one photo in memory (Pillow: 4 bytes a pixel for colour)
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
HEIC_INSTALL = "pip install 'familiar[heic]'"
"""How to add HEIC support (the optional pillow-heif package)."""
_HEIF_BRANDS = {b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"mif1", b"msf1"}
_PNG_MODES = {"1", "L", "LA", "P", "RGB", "RGBA", "I;16"}
_PROFILE_MODES = {"RGB": ("RGB", "RGBA"), "GRAY": ("L",), "CMYK": ("CMYK",)}  # what an ICC profile can convert
_SRGB = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB"))


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
        image = _open(data, label, accepted_formats(), min_side=MIN_SIDE, scale_down=True)
        source_format = image.format
        ImageOps.exif_transpose(image, in_place=True)
        image = _to_srgb(image)
        has_alpha = image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info
        thumb = make_thumbnail(image)
        if source_format == "PNG" or (source_format in ("WEBP", "HEIF") and has_alpha):
            fmt, data_out = "png", _encode_png(image)
        else:
            fmt, data_out = "jpeg", _encode_jpeg(image)
    return CleanPhoto(
        data=data_out,
        format=fmt,
        width=image.width,
        height=image.height,
        sha256=sha256_hex(data_out),
        source_sha256=sha256_hex(data),
        thumbnail=thumb,
        original_name=Path(label).name[:255],
    )


def carries_profile(path: Path) -> bool:
    """Whether a stored photo still has an ICC profile (kept by Familiar before it converted them);
    reads the header only. A file that cannot be read says no: reading it for real reports why."""
    try:
        with Image.open(path, formats=("JPEG", "PNG")) as image:
            return bool(image.info.get("icc_profile"))
    except (OSError, UnidentifiedImageError, SyntaxError, ValueError):
        return False


def strip_profile(data: bytes, fmt: str, label: str) -> bytes:
    """A JPEG or PNG without its ICC profile: `data` itself when it has none, else the pixels converted to
    sRGB and encoded again (for photos stored or exported before Familiar converted them on intake)."""
    formats = ("JPEG",) if fmt == "jpeg" else ("PNG",)
    with _decoding(label, data):
        if not Image.open(io.BytesIO(data), formats=formats).info.get("icc_profile"):
            return data
        image = _to_srgb(_open(data, label, formats, min_side=1))
        return _encode_jpeg(image) if fmt == "jpeg" else _encode_png(image)


def check_clean_photo(data: bytes, fmt: str, label: str) -> tuple[int, int, bytes]:
    """Check a photo from an archive, kept byte for byte: sound, of format `fmt`, carrying no metadata.

    Returns its width, height and thumbnail."""
    if fmt not in ("jpeg", "png"):
        raise PhotoError(f"{label}: unknown photo format {fmt!r}")
    with _decoding(label, data):
        image = Image.open(io.BytesIO(data), formats=("JPEG",) if fmt == "jpeg" else ("PNG",))
        width, height = image.size
        extra = set(image.info) - _PLAIN_INFO
        if extra or image.getexif():
            raise PhotoError(f"{label}: carries metadata ({', '.join(sorted(extra)) or 'EXIF'}); refused")
        image = _open(data, label, (image.format,), min_side=MIN_SIDE, scale_down=True)  # a check: scaled is enough
        return width, height, make_thumbnail(image)


def check_generated_image(data: bytes, label: str) -> tuple[str, int, int, bytes]:
    """Check a generated image (PNG or JPEG); returns its format, size and a thumbnail."""
    if len(data) > MAX_FILE_BYTES:
        raise PhotoError(f"{label}: over the {MAX_FILE_BYTES // 2**20} MB limit for an image")
    with _decoding(label, data):
        image = _open(data, label, ("PNG", "JPEG"), min_side=1)
        return ("png" if image.format == "PNG" else "jpeg"), image.width, image.height, make_thumbnail(image)


def make_thumbnail(image: Image.Image) -> bytes:
    """A JPEG at most THUMBNAIL_SIDE pixels a side; transparency goes on white."""
    scale = min(1.0, THUMBNAIL_SIDE / max(image.size))
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    thumb = image.resize(size, Image.Resampling.LANCZOS, reducing_gap=3.0)  # no full-size copy first
    if thumb.mode != "RGB":
        rgba = thumb.convert("RGBA")
        thumb = Image.new("RGB", rgba.size, (255, 255, 255))
        thumb.paste(rgba, mask=rgba.getchannel("A"))
    out = io.BytesIO()
    thumb.save(out, "JPEG", quality=THUMBNAIL_QUALITY)
    return out.getvalue()


def _open(data: bytes, label: str, formats: tuple[str, ...], *, min_side: int, scale_down: bool = False) -> Image.Image:
    """Open and decode an image, refusing from its header alone what is too large to decode (a JPEG over
    MAX_DECODED_BYTES is decoded scaled down instead when `scale_down`)."""
    image = Image.open(io.BytesIO(data), formats=formats)
    width, height = image.size
    if width > MAX_SIDE or height > MAX_SIDE or width * height > MAX_PIXELS:
        raise PhotoError(
            f"{label}: {width}x{height} pixels is too large (at most {MAX_SIDE} pixels a side and"
            f" {MAX_PIXELS // 1_000_000} megapixels)"
        )
    if min(width, height) < min_side:
        raise PhotoError(f"{label}: {width}x{height} pixels is too small (at least {min_side} pixels a side)")
    needed = width * height * (1 if image.mode in ("1", "L", "P") else 2 if image.mode.startswith("I;16") else 4)
    if needed > MAX_DECODED_BYTES:
        if not (scale_down and image.format == "JPEG"):
            raise PhotoError(
                f"{label}: {width}x{height} pixels ({image.mode}) would take {needed // 2**20} MB to decode, over"
                f" the {MAX_DECODED_BYTES // 2**20} MB limit; make it smaller first"
            )
        scale = 2
        while needed > MAX_DECODED_BYTES * scale * scale:
            scale *= 2
        image.draft(image.mode, (width // scale, height // scale))
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
            raise PhotoError(f"{label}: HEIC photos need the optional pillow-heif package: {HEIC_INSTALL}") from exc
        kinds = "JPEG, PNG, WebP" + (" or HEIC" if heif_available() else "")
        raise PhotoError(f"{label}: not a photo Familiar can read ({kinds})") from exc
    except (OSError, SyntaxError, ValueError, EOFError, struct.error) as exc:
        raise PhotoError(f"{label}: the image is damaged or truncated ({exc})") from exc


def _to_srgb(image: Image.Image) -> Image.Image:
    """The pixels converted from their embedded ICC profile to sRGB, with the profile dropped.

    An unreadable profile, or one that does not fit the pixels, is dropped without converting: the
    pixels are then taken as sRGB, the web's and most cameras' default."""
    icc = image.info.pop("icc_profile", None)
    if not icc:
        return image
    try:
        source = ImageCms.ImageCmsProfile(io.BytesIO(icc))
        space = source.profile.xcolor_space.strip()
        if space == "RGB" and (image.mode in ("P", "PA") or "transparency" in image.info):
            image = image.convert("RGBA" if image.mode == "PA" or "transparency" in image.info else "RGB")
        if image.mode not in _PROFILE_MODES.get(space, ()):
            return image
        return ImageCms.profileToProfile(image, source, _SRGB, outputMode="RGBA" if image.mode == "RGBA" else "RGB")
    except (ImageCms.PyCMSError, OSError, ValueError):
        return image


def _encode_jpeg(image: Image.Image) -> bytes:
    if image.mode not in ("L", "RGB"):
        image = image.convert("RGB")
    image.info = {}  # Pillow would copy a JPEG comment from here
    out = io.BytesIO()
    image.save(out, "JPEG", quality=JPEG_QUALITY)
    return out.getvalue()


def _encode_png(image: Image.Image) -> bytes:
    transparency = image.info.get("transparency")
    if image.mode not in _PNG_MODES:
        image = image.convert("RGBA" if transparency is not None or "A" in image.mode else "RGB")
        transparency = None
    image.info = {}  # Pillow would copy an ICC profile and more from here
    out = io.BytesIO()
    image.save(out, "PNG", **({"transparency": transparency} if transparency is not None else {}))
    return out.getvalue()
