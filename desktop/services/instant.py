"""Instant concepts for a library concept: the Aligner predicts its learned tokens from its first photo with the
model that is already loaded, and they are kept as an "instant" version (the start that training refines)."""

from __future__ import annotations

from collections.abc import Callable, MutableMapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from engine.errors import EngineError
from store.library import Library
from store.models import TokenVersion

if TYPE_CHECKING:
    from engine.aligner.model import LoadedAligner
    from engine.inference.assistant import Assistant


def cached_aligner(path: Path, assistant: Assistant, cache: MutableMapping[Any, Any]) -> LoadedAligner:
    """The Aligner at `path` for the loaded model, loaded once per file version; refuses one made for another
    base model (or whose image encoder is missing) with the Aligner's own message."""
    from engine.aligner.model import load_aligner  # lazy: it imports torch

    stat = path.stat()
    key = ("aligner", str(path.resolve()), stat.st_mtime_ns, stat.st_size, assistant.loaded.fingerprint)
    if key not in cache:
        cache[key] = load_aligner(path, assistant.loaded.fingerprint, None, assistant.loaded.device)
    return cache[key]


def add_instant_tokens(
    library: Library,
    assistant: Assistant,
    name: str,
    aligner_path: Path,
    cache: MutableMapping[Any, Any],
    report: Callable[[str], None] | None = None,
) -> TokenVersion:
    """Predict `name`'s rows from its first stored photo and add them as its active, instant version."""
    from engine.aligner.model import instant_state  # lazy: it imports torch

    tell = report or (lambda _message: None)
    concept = library.concepts.get(name)
    photos = library.concepts.photos(concept.name)
    if not photos:
        raise EngineError(f"<{concept.name}> has no photos to make instant tokens from")
    tell("loading the Aligner")
    if not aligner_path.is_file():
        raise EngineError(f"the Aligner file {aligner_path} does not exist")
    aligner = cached_aligner(aligner_path, assistant, cache)
    tell(f"predicting <{concept.name}>'s tokens from {photos[0].original_name}")
    state = instant_state(aligner, photos[0].path, concept.name, assistant.loaded.fingerprint)
    return library.tokens.add(concept.name, state.to_bytes(), kind="instant")
