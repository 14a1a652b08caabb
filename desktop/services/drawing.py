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
    versions = []
    for name in assistant.prompts.mentions(prompt):
        active = library.concepts.get(name).active
        if active is not None:
            versions.append(active.id)
    return library.gallery.add(
        png_bytes(picture, assistant.loaded.source),
        prompt=prompt,
        seed=picture.seed,
        version_ids=versions,
        params={
            "model": assistant.loaded.source,
            "demo": picture.from_demo,
            "warning": picture.notice,
            **(params or {}),
        },
    )
