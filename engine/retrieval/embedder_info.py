"""What produced a set of image embeddings; kept apart from the embedder so reading an index needs no torch."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from engine.errors import EngineError


@dataclass(frozen=True)
class EmbedderInfo:
    """What produced a set of embeddings; two sets are comparable only when these agree (bar the file name)."""

    name: str
    tag: str | None
    dim: int
    untrained: bool
    weights_file: str | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "tag": self.tag,
            "dim": self.dim,
            "untrained": self.untrained,
            "weights_file": self.weights_file,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EmbedderInfo:
        try:
            info = cls(
                name=str(data["name"]),
                tag=None if data.get("tag") is None else str(data["tag"]),
                dim=int(data["dim"]),
                untrained=bool(data["untrained"]),
                weights_file=None if data.get("weights_file") is None else str(data["weights_file"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise EngineError(f"malformed embedder description {data!r}: {exc}") from None
        if info.dim <= 0:
            raise EngineError(f"malformed embedder description {data!r}: dimension must be positive")
        return info

    def describe(self) -> str:
        label = self.name if self.tag is None else f"{self.name} ({self.tag})"
        if self.untrained:
            return f"{label}, dim {self.dim}, UNTRAINED random weights: similarities are noise, for testing only"
        return f"{label}, dim {self.dim}, weights {self.weights_file}"

    def check_compatible(self, other: EmbedderInfo) -> None:
        """Raise EngineError unless embeddings from ``other`` can be compared with these."""
        mine = (self.name, self.tag, self.dim, self.untrained)
        theirs = (other.name, other.tag, other.dim, other.untrained)
        if mine != theirs:
            raise EngineError(
                f"embeddings from {other.describe()} cannot be compared with embeddings from {self.describe()}"
            )
