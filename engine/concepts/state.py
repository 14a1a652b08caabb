"""A concept's learned state: 33 embedding rows and 33 output-head rows, saved as safetensors.

Layout and metadata are described in docs/formats.md. Loading checks the format, the shapes, that the
values are finite, and that the state was made for the loaded base model (its fingerprint).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_bytes
from safetensors.torch import save as save_bytes

from engine.atomic_write import write_atomic
from engine.concepts.layout import N_GENERATION, N_UNDERSTANDING, SLOT_SIZE
from engine.errors import ConceptStateError

FORMAT = "familiar.concept/1"
MAX_STATE_BYTES = 64 * 2**20


@dataclass
class ConceptState:
    """The learned rows of one concept, on CPU in float32."""

    name: str
    embed: torch.Tensor
    head: torch.Tensor
    base_fingerprint: str

    @property
    def hidden_size(self) -> int:
        return int(self.embed.shape[1])

    def to_bytes(self) -> bytes:
        metadata = {
            "format": FORMAT,
            "base_fingerprint": self.base_fingerprint,
            "name": self.name,
            "hidden_size": str(self.hidden_size),
            "n_generation": str(N_GENERATION),
            "n_understanding": str(N_UNDERSTANDING),
        }
        tensors = {
            "embed": self.embed.detach().float().cpu().contiguous(),
            "head": self.head.detach().float().cpu().contiguous(),
        }
        return save_bytes(tensors, metadata=metadata)

    def save(self, path: Path) -> None:
        """Write atomically: a temporary file in the same folder, fsynced, then renamed."""
        write_atomic(path, self.to_bytes())

    @classmethod
    def from_bytes(
        cls, data: bytes, expected_fingerprint: str | None = None, source: str = "concept state"
    ) -> ConceptState:
        """Parse and validate; refuse a state made for another base model when a fingerprint is given."""
        if len(data) > MAX_STATE_BYTES:
            raise ConceptStateError(f"{source} is {len(data)} bytes, too large for a concept state")
        try:
            tensors = load_bytes(data)
            metadata = _metadata(data)
        except (SafetensorError, ValueError, UnicodeDecodeError) as exc:
            raise ConceptStateError(f"{source} is not a valid safetensors file: {exc}") from None
        if metadata.get("format") != FORMAT:
            raise ConceptStateError(f"{source} is not a Familiar concept state (format {metadata.get('format')!r})")
        missing = {"embed", "head"} - tensors.keys()
        if missing:
            raise ConceptStateError(f"{source} lacks tensors: {', '.join(sorted(missing))}")
        embed, head = tensors["embed"], tensors["head"]
        if embed.ndim != 2 or embed.shape[0] != SLOT_SIZE or embed.shape != head.shape:
            raise ConceptStateError(
                f"{source} has rows of shape {tuple(embed.shape)} and {tuple(head.shape)}; "
                f"expected [{SLOT_SIZE}, hidden]"
            )
        if not (torch.isfinite(embed).all() and torch.isfinite(head).all()):
            raise ConceptStateError(f"{source} contains NaN or infinite values")
        fingerprint = metadata.get("base_fingerprint", "")
        if expected_fingerprint is not None and fingerprint != expected_fingerprint:
            raise ConceptStateError(
                f"{source} was made for another base model (fingerprint {fingerprint[:12]}..., loaded model "
                f"{expected_fingerprint[:12]}...); retrain the concept on this model"
            )
        return cls(name=metadata.get("name", ""), embed=embed.float(), head=head.float(), base_fingerprint=fingerprint)

    @classmethod
    def load(cls, path: Path, expected_fingerprint: str | None = None) -> ConceptState:
        try:
            size = path.stat().st_size
            if size > MAX_STATE_BYTES:
                raise ConceptStateError(f"{path} is {size} bytes, too large for a concept state")
            data = path.read_bytes()
        except OSError as exc:
            raise ConceptStateError(f"cannot read concept state {path}: {exc.strerror or exc}") from None
        return cls.from_bytes(data, expected_fingerprint, source=str(path))


def _metadata(data: bytes) -> dict[str, str]:
    if len(data) < 8:
        raise ValueError("file too short")
    length = int.from_bytes(data[:8], "little")
    if length > len(data) - 8:
        raise ValueError("header length exceeds the file")
    header = json.loads(data[8 : 8 + length])
    metadata = header.get("__metadata__", {}) if isinstance(header, dict) else {}
    return {str(k): str(v) for k, v in metadata.items()}
