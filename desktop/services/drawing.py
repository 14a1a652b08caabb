"""Draw a picture and keep it in the library's gallery, with the prompt, seed and concept versions used."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import TYPE_CHECKING

from PIL import Image
from PIL.PngImagePlugin import PngInfo

from engine.errors import EngineError
from engine.progress import ProgressCallback
from store.library import Library
from store.models import GeneratedImage as StoredImage

if TYPE_CHECKING:
    from engine.inference.assistant import Assistant, GeneratedImage
    from engine.inference.generation import Cancelled, Sampling


PICTURE_FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".webp": "WEBP"}
"""A picture file's extension -> the format it is written in."""
EXIF_DESCRIPTION = 0x010E
"""EXIF ImageDescription: where a JPEG or WebP picture keeps what a PNG keeps in its text chunks, as JSON."""
JPEG_QUALITY = 95


def picture_format(path: Path) -> str:
    """The format a picture written to `path` takes, from its extension; a clear error for any other."""
    found = PICTURE_FORMATS.get(path.suffix.lower())
    if found is None:
        shown = ", ".join(PICTURE_FORMATS)
        raise EngineError(f"cannot write a picture to {path}: the name must end in {shown}")
    return found


def _about(picture: GeneratedImage, model_source: str) -> dict[str, str]:
    about = {"familiar:prompt": picture.prompt, "familiar:seed": str(picture.seed), "familiar:model": model_source}
    if picture.notice:
        about["familiar:warning"] = f"made by the {picture.notice}"
    return about


def png_bytes(picture: GeneratedImage, model_source: str) -> bytes:
    """The picture as PNG with text chunks naming its prompt, seed, model (and the demo warning)."""
    return picture_bytes(picture, model_source, "PNG")


def picture_bytes(picture: GeneratedImage, model_source: str, fmt: str) -> bytes:
    """The picture as PNG, JPEG (quality 95) or WebP (lossless), naming its prompt, seed, model (and the demo
    warning): in PNG text chunks, or as JSON in the EXIF ImageDescription of a JPEG or WebP."""
    return _encode(picture.image, _about(picture, model_source), fmt)


def converted_png(png: bytes, fmt: str) -> bytes:
    """A picture from `png_bytes` (the server's) in `fmt`, with what its text chunks say about it kept."""
    if fmt == "PNG":
        return png
    image = Image.open(io.BytesIO(png))
    about = {key: value for key, value in getattr(image, "text", {}).items() if key.startswith("familiar:")}
    return _encode(image, about, fmt)


def _encode(image: Image.Image, about: dict[str, str], fmt: str) -> bytes:
    out = io.BytesIO()
    if fmt == "PNG":
        info = PngInfo()
        for key, value in about.items():
            info.add_text(key, value)
        image.save(out, format="PNG", pnginfo=info)
        return out.getvalue()
    exif = Image.Exif()
    exif[EXIF_DESCRIPTION] = json.dumps(about)  # ASCII, as EXIF text must be
    options = {"quality": JPEG_QUALITY} if fmt == "JPEG" else {"lossless": True}
    image.convert("RGB").save(out, format=fmt, exif=exif.tobytes(), **options)
    return out.getvalue()


def draw_into_gallery(
    library: Library,
    assistant: Assistant,
    prompt: str,
    sampling: Sampling | None = None,
    progress: ProgressCallback | None = None,
    cancelled: Cancelled | None = None,
    params: dict[str, object] | None = None,
) -> StoredImage:
    """Draw `prompt` (its mentioned concepts must already be attached) and store the PNG in the gallery."""
    picture = assistant.generate(prompt, sampling, progress=progress, cancelled=cancelled)
    return keep_in_gallery(library, assistant, picture, params)


def keep_in_gallery(
    library: Library, assistant: Assistant, picture: GeneratedImage, params: dict[str, object] | None = None
) -> StoredImage:
    """Store a drawn picture in the gallery, tied to the active versions of the library concepts it mentions."""
    return keep_png(
        library,
        png_bytes(picture, assistant.loaded.source),
        picture.prompt,
        picture.seed,
        {"model": assistant.loaded.source, "demo": picture.from_demo, "warning": picture.notice, **(params or {})},
    )


def keep_png(library: Library, png: bytes, prompt: str, seed: int, params: dict[str, object]) -> StoredImage:
    """Store a PNG drawn for `prompt` in the gallery, tied to the active versions of the library concepts it
    mentions (those a model loads for `<name>`; a name the library lacks ties nothing)."""
    from engine.concepts.prompts import MENTION

    versions = []
    for name in dict.fromkeys(found.group(1).lower() for found in MENTION.finditer(prompt)):
        found = library.find_concept(name)
        active = library.concepts.get(found[1]).active if found is not None else None
        if active is not None:
            versions.append(active.id)
    return library.gallery.add(png, prompt=prompt, seed=seed, version_ids=versions, params=params)
