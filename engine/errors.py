"""Errors the engine raises for bad input or an unusable setup; each message is meant for the user."""


class EngineError(Exception):
    """Base class: something the user can fix (a path, a file, a setting)."""


class ModelNotFoundError(EngineError):
    """A model folder, file or hub id is missing or incomplete."""


class InsufficientMemoryError(EngineError):
    """The model will not fit in the chosen device's memory."""


class ImageError(EngineError):
    """An image file could not be read or is not acceptable."""


class ConceptStateError(EngineError):
    """A concept's learned-state file is malformed or belongs to another base model."""


class SlotError(EngineError):
    """No free concept slot, or a concept name that is not loaded."""
