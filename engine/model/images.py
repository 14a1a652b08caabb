"""Reading user images safely and converting them to and from the VQ model's pixel tensors."""

from __future__ import annotations

import functools
import io
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from engine.errors import ImageError

MAX_PIXELS = 80_000_000
"""Largest image accepted (width x height); bigger files are refused as likely decompression bombs."""
MIN_SIDE = 16
"""Smallest accepted width and height, in pixels."""
HEIC_INSTALL = "pip install 'familiar[heic]'"
"""How to add HEIC support (the optional pillow-heif package)."""
_HEIF_BRANDS = {b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"mif1", b"msf1"}


@functools.cache
def heif_available() -> bool:
    """Whether HEIC photos can be read: the optional pillow-heif package is installed (its opener is then
    registered with Pillow)."""
    try:
        from pillow_heif import register_heif_opener
    except ImportError:
        return False
    register_heif_opener()
    return True


def _looks_like_heif(source: Path | io.BytesIO) -> bool:
    if isinstance(source, io.BytesIO):
        head = source.getvalue()[:12]
    else:
        with open(source, "rb") as file:
            head = file.read(12)
    return head[4:8] == b"ftyp" and head[8:12] in _HEIF_BRANDS


def _flatten_to_rgb(image: Image.Image) -> Image.Image:
    """RGB copy of ``image``; any transparency is composited onto white."""
    has_alpha = image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in image.info
    if not has_alpha:
        return image.convert("RGB")
    rgba = image.convert("RGBA")
    white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    return Image.alpha_composite(white, rgba).convert("RGB")


def open_image(source: Path | bytes) -> Image.Image:
    """Decode a file or bytes into an upright RGB image, or raise ``ImageError`` saying why not.

    JPEG, PNG, WebP and what else Pillow reads; HEIC where the optional pillow-heif is installed (otherwise
    the error says how to install it). EXIF orientation is applied, transparency is composited onto white, and
    the whole image is
    decoded up front so that truncated files are caught here. Images over ``MAX_PIXELS`` or with
    a side under ``MIN_SIDE`` are refused.
    """
    if isinstance(source, bytes | bytearray):
        name, stream = "The image data", io.BytesIO(source)
    else:
        path = Path(source)
        if not path.is_file():
            raise ImageError(f"{path} does not exist or is not a file.")
        name, stream = str(path), path
    heif_available()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(stream) as image:
                width, height = image.size
                if width * height > MAX_PIXELS:
                    raise ImageError(
                        f"{name} is {width}x{height} pixels, over the {MAX_PIXELS // 1_000_000} megapixel "
                        "limit (a possible decompression bomb); scale it down first."
                    )
                if min(width, height) < MIN_SIDE:
                    raise ImageError(
                        f"{name} is only {width}x{height} pixels; images need at least {MIN_SIDE} pixels on each side."
                    )
                image.load()
                return _flatten_to_rgb(ImageOps.exif_transpose(image))
    except ImageError:
        raise
    except UnidentifiedImageError as exc:
        if not heif_available() and _looks_like_heif(stream):
            raise ImageError(
                f"{name} is a HEIC photo; reading HEIC needs the optional pillow-heif package: {HEIC_INSTALL}"
            ) from exc
        raise ImageError(f"{name} is not an image in a format Familiar can read.") from exc
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageError(f"{name} declares an enormous size (a possible decompression bomb) and was refused.") from exc
    except Exception as exc:
        raise ImageError(f"{name} is truncated or corrupt and could not be decoded ({exc}).") from exc


def _square(image: Image.Image, fit: Literal["crop", "pad"]) -> Image.Image:
    width, height = image.size
    if fit == "crop":
        side = min(width, height)
        left, top = (width - side) // 2, (height - side) // 2
        return image.crop((left, top, left + side, top + side))
    side = max(width, height)
    canvas = Image.new("RGB", (side, side), (255, 255, 255))
    canvas.paste(image, ((side - width) // 2, (side - height) // 2))
    return canvas


def to_pixel_values(
    images: Sequence[Image.Image], resolution: int, fit: Literal["crop", "pad"] = "crop"
) -> torch.Tensor:
    """Images -> FloatTensor [B, 3, resolution, resolution] in [-1, 1] (``x / 127.5 - 1``).

    ``fit="crop"`` (the default) keeps the centred largest square and drops the rest, as Chameleon's
    own preprocessing does (resize the short side, centre crop): the subject fills the frame, at the
    cost of the edges of non-square photos. ``fit="pad"`` keeps the whole picture by adding white
    bars to make it square. Either way the square is then resized with LANCZOS. Non-RGB images are
    converted first (transparency onto white).
    """
    if fit not in ("crop", "pad"):
        raise ValueError(f"fit must be 'crop' or 'pad', not {fit!r}")
    arrays = []
    for image in images:
        square = _square(_flatten_to_rgb(image), fit)
        if square.size != (resolution, resolution):
            square = square.resize((resolution, resolution), Image.Resampling.LANCZOS)
        arrays.append(np.asarray(square, dtype=np.uint8))
    if not arrays:
        return torch.empty(0, 3, resolution, resolution)
    pixels = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).float()
    return pixels / 127.5 - 1.0


def to_pil(pixels: torch.Tensor) -> list[Image.Image]:
    """FloatTensor [B, 3, H, W] in [-1, 1] -> RGB images (values clamped, then rounded to 8 bits)."""
    values = ((pixels.detach().float().clamp(-1.0, 1.0) + 1.0) * 127.5).round().to(torch.uint8)
    return [Image.fromarray(array) for array in values.permute(0, 2, 3, 1).cpu().numpy()]
