"""`read_checked` refuses a missing, oversized, foreign or broken file with the caller's error, naming it."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from engine.safetensors_file import read_checked


class Refused(Exception):
    pass


def read(path: Path, max_bytes: int = 10_000) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    return read_checked(path, "test/1", max_bytes, "Aligner", "a test file", Refused)


def test_a_file_of_the_format_is_read(tmp_path: Path) -> None:
    path = tmp_path / "ok.safetensors"
    save_file({"w": torch.arange(4.0)}, path, metadata={"format": "test/1", "note": "x"})
    tensors, metadata = read(path)
    assert torch.equal(tensors["w"], torch.arange(4.0)) and metadata == {"format": "test/1", "note": "x"}


def test_anything_else_is_refused_with_the_callers_error(tmp_path: Path) -> None:
    with pytest.raises(Refused, match=r"cannot read Aligner .*missing"):
        read(tmp_path / "missing.safetensors")
    big = tmp_path / "big.safetensors"
    save_file({"w": torch.zeros(100)}, big, metadata={"format": "test/1"})
    with pytest.raises(Refused, match=r"is \d+ bytes, too large for an Aligner"):
        read(big, max_bytes=100)
    foreign = tmp_path / "foreign.safetensors"
    save_file({"w": torch.zeros(1)}, foreign, metadata={"format": "other/1"})
    with pytest.raises(Refused, match=r"is not a test file \(format 'other/1'\)"):
        read(foreign)
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00not json")
    with pytest.raises(Refused, match="is not a valid safetensors file"):
        read(broken)
