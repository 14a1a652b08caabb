"""One chat turn for the desktop app: load the mentioned concepts' current versions, let the model choose
between answering and drawing (or follow the user's choice), stream the answer or draw into the gallery."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from desktop.services.drawing import draw_into_gallery
from desktop.services.library_concepts import attach_from_library
from engine.errors import EngineError
from engine.inference.requests import drawing_prompt
from engine.progress import ProgressCallback
from store.library import Library
from store.models import GeneratedImage as StoredImage

if TYPE_CHECKING:
    from engine.inference.assistant import Assistant
    from engine.inference.generation import Cancelled

MODES = ("auto", "answer", "draw")


@dataclass(frozen=True)
class Reply:
    """What a turn produced: streamed text (kind "text") or a stored picture (kind "image")."""

    kind: str
    text: str = ""
    image: StoredImage | None = None


def attach_current(library: Library, assistant: Assistant, names: list[str], attached: dict[str, int]) -> None:
    """Attach each named concept's active version, replacing a stale one (retrained since it was loaded)
    and freeing the slots of concepts this turn does not mention when the slots run out.

    `attached` maps loaded names to the version ids loaded; it is updated in place."""
    wanted = []
    for name in dict.fromkeys(n.lower() for n in names):
        concept = library.concepts.get(name)
        if concept.active is None:
            raise EngineError(f"<{concept.name}> is not trained yet: train it (Training view) before mentioning it")
        if name in assistant.slots.names() and attached.get(name) != concept.active.id:
            assistant.slots.detach(name)
        wanted.append((name, concept.active.id))
    missing = [name for name, _ in wanted if name not in assistant.slots.names()]
    spare = [n for n in assistant.slots.names() if n not in dict(wanted)]
    free = assistant.slots.capacity - len(assistant.slots.names())
    for name in spare[: max(0, len(missing) - free)]:
        assistant.slots.detach(name)
        attached.pop(name, None)
    attach_from_library(library, assistant, missing)
    attached.update(wanted)


def take_turn(
    library: Library,
    assistant: Assistant,
    attached: dict[str, int],
    question: str,
    photo: Path | None,
    mode: str,
    on_text: Callable[[str], None],
    on_drawing: ProgressCallback,
    cancelled: Cancelled | None = None,
) -> Reply:
    """Answer `question` (about `photo`, if given) or draw it; `mode` is auto (a request to draw is drawn, else
    the model decides; `Assistant.drawing_for`), answer or draw. A request to draw ("Draw <bo> at the beach") is
    drawn from the description it asks for ("A photo of <bo> at the beach.").

    Text pieces go to `on_text` as they are sampled; drawing reports its progress to `on_drawing`."""
    from engine.model.images import open_image  # lazy: it imports torch

    if mode not in MODES:
        raise EngineError(f"unknown chat mode {mode!r}: choose one of {', '.join(MODES)}")
    if not question.strip():
        raise EngineError("write a question or a description first")
    attach_current(library, assistant, assistant.prompts.mentions(question), attached)
    image = open_image(photo) if photo is not None else None
    if mode == "draw":
        drawn: str | None = drawing_prompt(question) or question
    else:
        drawn = assistant.drawing_for(question, image) if mode == "auto" else None
    if drawn is not None:
        stored = draw_into_gallery(
            library, assistant, drawn, progress=on_drawing, cancelled=cancelled, params={"via": "chat"}
        )
        return Reply(kind="image", image=stored)
    pieces = []
    for piece in assistant.chat(question, image, cancelled=cancelled):
        pieces.append(piece)
        on_text(piece)
    return Reply(kind="text", text="".join(pieces))
