"""The served model: one loaded Assistant behind a lock (one model, so one generation at a time), the library's
concepts attached at their current versions as requests name them."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from desktop.server.api import ChatRequest, ImageRequest
from desktop.services.conversation import attach_current
from desktop.services.drawing import png_bytes
from store.library import Library
from store.models import Concept

if TYPE_CHECKING:
    from engine.inference.assistant import Assistant
    from engine.inference.generation import Cancelled


class ServedModel:
    """What the HTTP handlers call; every method that runs the model holds `lock` throughout."""

    def __init__(self, assistant: Assistant, model_id: str, library_dir: Path) -> None:
        self.assistant = assistant
        self.model_id = model_id
        self.library_dir = library_dir
        self.lock = threading.Lock()
        self.created = int(time.time())
        self._attached: dict[str, int] = {}

    def describe(self) -> dict[str, Any]:
        """The /v1/models entry; `notice` is the demo model's warning (None for a real model)."""
        return {
            "id": self.model_id,
            "object": "model",
            "created": self.created,
            "owned_by": "familiar",
            "demo": self.assistant.loaded.is_demo,
            "notice": self.assistant.notice,
        }

    def _attach(self, text: str, extra: list[str]) -> None:
        names = [*self.assistant.prompts.mentions(text), *extra]
        if names:
            with Library.open(self.library_dir) as library:
                attach_current(library, self.assistant, names, self._attached)

    def chat(self, request: ChatRequest, on_piece: Callable[[str], None], cancelled: Cancelled) -> None:
        """Answer the request, giving each piece of text to `on_piece` as it is sampled."""
        from engine.inference.generation import Sampling
        from engine.model.images import open_image

        image = open_image(request.image) if request.image is not None else None
        sampling = Sampling(temperature=request.temperature, top_p=request.top_p, seed=request.seed)
        with self.lock:
            self._attach(request.question, request.concepts)
            for piece in self.assistant.chat(request.question, image, sampling, request.max_tokens, cancelled):
                on_piece(piece)

    def draw(self, request: ImageRequest) -> tuple[bytes, int]:
        """One picture as PNG (with its prompt, seed and model in text chunks), and its seed."""
        from engine.inference.generation import Sampling

        sampling = Sampling(temperature=request.temperature, top_k=request.top_k, seed=request.seed)
        with self.lock:
            self._attach(request.prompt, request.concepts)
            picture = self.assistant.generate(request.prompt, sampling, guidance_scale=request.guidance)
        return png_bytes(picture, self.assistant.loaded.source), picture.seed

    def _entry(self, concept: Concept) -> dict[str, Any]:
        active = concept.active
        return {
            "name": concept.name,
            "object": "concept",
            "kind": concept.kind,
            "state": concept.state,
            "photos": concept.photo_count,
            "version": active.number if active else None,
            "usable": active is not None and active.base_fingerprint == self.assistant.loaded.fingerprint,
        }

    def concepts(self) -> list[dict[str, Any]]:
        """The library's concepts; `usable` says whether this model can attach one (learned on this model)."""
        with Library.open(self.library_dir) as library:
            return [self._entry(c) for c in library.concepts.list()]

    def concept(self, name: str) -> dict[str, Any]:
        with Library.open(self.library_dir) as library:
            return self._entry(library.concepts.get(name))
