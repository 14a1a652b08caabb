"""Read a small safetensors file of our own (an Aligner, the attribute reader) after checking its size and its
`format` metadata, so that a wrong or oversized file is refused with a message naming it, before any tensor is read."""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open


def read_checked(
    path: Path, expected_format: str, max_bytes: int, what: str, kind: str, error: type[Exception]
) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """The tensors and metadata of `path`, a file of `expected_format` of at most `max_bytes`; anything else raises
    `error` naming `what` the file should be ("an Aligner") and `kind` ("a Familiar Aligner file")."""
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise error(f"cannot read {what} {path}: {exc.strerror or exc}") from None
    if size > max_bytes:
        raise error(f"{path} is {size} bytes, too large for {'an' if what[0] in 'aeiouAEIOU' else 'a'} {what}")
    try:
        with safe_open(path, framework="pt") as handle:
            metadata = dict(handle.metadata() or {})
            if metadata.get("format") != expected_format:
                raise error(f"{path} is not {kind} (format {metadata.get('format')!r})")
            names = handle.keys()  # a safe_open handle is not a mapping
            tensors = {key: handle.get_tensor(key) for key in names}
    except (SafetensorError, OSError) as exc:
        raise error(f"{path} is not a valid safetensors file: {exc}") from None
    return tensors, metadata
