"""Load concepts from the library into an assistant: the active learned-token version of each."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from engine.errors import SlotError
from store.library import Library

if TYPE_CHECKING:
    from engine.inference.assistant import Assistant


def check_in_library(library: Library, names: Iterable[str]) -> None:
    """Refuse, before any model is loaded, a name that is not in the library or has no learned tokens yet."""
    for name in dict.fromkeys(n.lower() for n in names):
        concept = library.concepts.get(name)
        if concept.active is None:
            raise SlotError(f"<{concept.name}> has no learned tokens yet: run `familiar train {concept.name}` first")


def attach_from_library(library: Library, assistant: Assistant, names: Iterable[str]) -> list[str]:
    """Attach each named concept's active version (skipping ones already attached); returns the names.

    A concept without learned tokens, or trained on another base model, is a clear error.
    """
    from engine.concepts.state import ConceptState  # lazy: it imports torch

    attached = []
    for name in dict.fromkeys(n.lower() for n in names):
        if name in assistant.slots.names():
            continue
        check_in_library(library, [name])
        concept = library.concepts.get(name)
        data = library.tokens.read_bytes(concept.active)
        state = ConceptState.from_bytes(
            data, assistant.loaded.fingerprint, source=f"<{concept.name}> version {concept.active.number}"
        )
        state.name = concept.name.lower()
        assistant.attach(state)
        attached.append(state.name)
    return attached
