"""Concept state files (learned tokens) checked without torch: the safetensors header, then the values.

A safetensors file is an 8-byte little-endian header length, a JSON header, then the tensor bytes.
The layout Familiar expects is in docs/formats.md: float32 tensors `embed` and `head` of shape
[33, hidden_size] and string metadata naming the format and the base model's fingerprint. Every value
must be finite and at most MAX_ABS_VALUE in size (learned rows are far below 10): a state that would
only fail, or draw noise, once the engine loads it is refused when it enters the library.
"""

from __future__ import annotations

import json
import re
import struct
from dataclasses import dataclass

import numpy as np

from store.errors import TokenFileError

FORMAT = "familiar.concept/1"
SLOT_SIZE = 33  # identifier + 16 generation + 16 understanding tokens
MAX_STATE_BYTES = 64 * 2**20
MAX_HEADER_BYTES = 1 * 2**20
MAX_ABS_VALUE = 1e4
_FINGERPRINT = re.compile(r"[0-9a-f]{64}")
_DTYPE_BYTES = {"F32": 4}


@dataclass(frozen=True)
class StateHeader:
    """What the store needs to know about a concept state file."""

    base_fingerprint: str
    hidden_size: int
    name: str  # the concept's name when the file was written (it may have been renamed since)


def read_state_header(data: bytes, label: str = "learned-token file") -> StateHeader:
    """Validate a whole concept state file's structure and return its header facts."""
    if len(data) > MAX_STATE_BYTES:
        raise TokenFileError(f"{label}: {len(data)} bytes is over the {MAX_STATE_BYTES // 2**20} MB limit")
    if len(data) < 8:
        raise TokenFileError(f"{label}: too short to be a safetensors file")
    (header_len,) = struct.unpack("<Q", data[:8])
    if header_len > MAX_HEADER_BYTES or 8 + header_len > len(data):
        raise TokenFileError(f"{label}: not a safetensors file (bad header length {header_len})")
    try:
        header = json.loads(data[8 : 8 + header_len])
    except (UnicodeDecodeError, ValueError) as exc:
        raise TokenFileError(f"{label}: not a safetensors file (header is not JSON)") from exc
    if not isinstance(header, dict):
        raise TokenFileError(f"{label}: not a safetensors file (header is not an object)")
    metadata = header.pop("__metadata__", None)
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise TokenFileError(f"{label}: no string metadata; not a Familiar concept state")
    if metadata.get("format") != FORMAT:
        raise TokenFileError(f"{label}: format is {metadata.get('format')!r}, expected {FORMAT!r}")
    fingerprint = metadata.get("base_fingerprint", "")
    if not _FINGERPRINT.fullmatch(fingerprint):
        raise TokenFileError(f"{label}: base_fingerprint must be 64 lowercase hex digits")
    hidden = _positive_int(metadata.get("hidden_size"), f"{label}: hidden_size")
    if (metadata.get("n_generation"), metadata.get("n_understanding")) != ("16", "16"):
        raise TokenFileError(f"{label}: expected 16 generation and 16 understanding tokens")
    if set(header) != {"embed", "head"}:
        raise TokenFileError(f"{label}: expected tensors 'embed' and 'head', found {sorted(header)}")
    spans = _check_tensors(header, hidden, len(data) - 8 - header_len, label)
    for name, (begin, end) in spans.items():
        _check_values(data[8 + header_len + begin : 8 + header_len + end], name, label)
    return StateHeader(fingerprint, hidden, metadata.get("name", ""))


def _check_tensors(header: dict[str, object], hidden: int, data_len: int, label: str) -> dict[str, tuple[int, int]]:
    """Check dtypes, shapes and offsets; returns each tensor's byte span within the data."""
    spans = {}
    for name in ("embed", "head"):
        info = header[name]
        if not isinstance(info, dict):
            raise TokenFileError(f"{label}: tensor {name!r} has no description")
        if info.get("dtype") not in _DTYPE_BYTES:
            raise TokenFileError(f"{label}: tensor {name!r} is {info.get('dtype')}, expected F32")
        if info.get("shape") != [SLOT_SIZE, hidden]:
            raise TokenFileError(f"{label}: tensor {name!r} has shape {info.get('shape')}, expected [33, {hidden}]")
        offsets = info.get("data_offsets")
        if (
            not isinstance(offsets, list)
            or len(offsets) != 2
            or not all(isinstance(o, int) and not isinstance(o, bool) for o in offsets)
        ):
            raise TokenFileError(f"{label}: tensor {name!r} has bad data offsets")
        begin, end = offsets
        if not 0 <= begin <= end <= data_len or end - begin != SLOT_SIZE * hidden * _DTYPE_BYTES[info["dtype"]]:
            raise TokenFileError(f"{label}: tensor {name!r} data does not match its shape or the file")
        spans[name] = (begin, end)
    first, second = sorted(spans.values())
    if first[0] != 0 or first[1] > second[0] or second[1] != data_len:
        raise TokenFileError(f"{label}: tensor data overlaps or leaves unexplained bytes")
    return spans


def _check_values(raw: bytes, name: str, label: str) -> None:
    values = np.frombuffer(raw, dtype="<f4")
    if not np.isfinite(values).all():
        raise TokenFileError(f"{label}: tensor {name!r} holds NaN or infinite values")
    largest = float(np.abs(values).max(initial=0.0))
    if largest > MAX_ABS_VALUE:
        raise TokenFileError(
            f"{label}: tensor {name!r} holds a value of {largest:.3g}, over the {MAX_ABS_VALUE:g} limit"
        )


def _positive_int(value: str | None, what: str) -> int:
    if value is None or not (value.isascii() and value.isdigit()) or int(value) == 0:
        raise TokenFileError(f"{what} must be a positive whole number, got {value!r}")
    return int(value)
