"""Draw a picture and keep it in the library's gallery, with the prompt, seed and concept versions used."""

from __future__ import annotations

import io
from typing import TYPE_CHECKING

from PIL.PngImagePlugin import PngInfo

from engine.progress import ProgressCallback
from store.library import Library
from store.models import GeneratedImage as StoredImage

if TYPE_CHECKING:
    from engine.inference.assistant import Assistant, GeneratedImage
    from engine.inference.generation import Cancelled, Sampling


def png_bytes(picture: GeneratedImage, model_source: str) -> bytes:
    """The picture as PNG with text chunks naming its prompt, seed, model (and the demo warning)."""
    info = PngInfo()
    info.add_text("familiar:prompt", picture.prompt)
    info.add_text("familiar:seed", str(picture.seed))
    info.add_text("familiar:model", model_source)
    if picture.notice:
        info.add_text("familiar:warning", f"made by the {picture.notice}")
    out = io.BytesIO()
    picture.image.save(out, format="PNG", pnginfo=info)
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
