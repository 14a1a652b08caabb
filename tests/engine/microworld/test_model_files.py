"""halve_weights: the micro-world model folder's weights stored as float16, loaded as before, and a weight float16
cannot hold refused with nothing rewritten."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from engine.microworld.model_files import WEIGHT_FILES, halve_weights
from engine.model.loading import demo_model_dir, load_model


def _float32_copy(folder: Path) -> Path:
    """The demo model with float32 weights that float16 cannot hold exactly, as an export made with --float32 has:
    each weight moved by a relative 1e-4 at most."""
    shutil.copytree(demo_model_dir(), folder)
    generator = torch.Generator().manual_seed(0)
    for name in WEIGHT_FILES:
        tensors = load_file(folder / name)
        for key, tensor in tensors.items():
            if tensor.is_floating_point():
                tensors[key] = tensor.float() * (1 + 1e-4 * torch.rand(tensor.shape, generator=generator))
        save_file(tensors, folder / name, metadata=_metadata(folder / name))
    return folder


def _metadata(path: Path) -> dict[str, str] | None:
    with safe_open(str(path), "pt") as weights:
        return weights.metadata()


def test_halved_weights_are_float16_roundings_and_load_like_the_float32_folder(tmp_path: Path) -> None:
    folder = _float32_copy(tmp_path / "model")
    before = {name: load_file(folder / name) for name in WEIGHT_FILES}
    metadata = {name: _metadata(folder / name) for name in WEIGHT_FILES}
    wide = load_model(str(folder), device="cpu")
    size = sum((folder / name).stat().st_size for name in WEIGHT_FILES)
    halve_weights(folder)
    assert sum((folder / name).stat().st_size for name in WEIGHT_FILES) < 0.51 * size
    for name in WEIGHT_FILES:
        after = load_file(folder / name)
        assert after.keys() == before[name].keys() and _metadata(folder / name) == metadata[name]
        for key, tensor in before[name].items():
            expected = tensor.half() if tensor.is_floating_point() else tensor
            assert torch.equal(after[key], expected), key
    assert json.loads((folder / "config.json").read_text())["dtype"] == "float16"
    narrow = load_model(str(folder), device="cpu")
    assert narrow.dtype == torch.float32
    ids = torch.tensor([[0, 5, 17, 42, 99]])
    with torch.no_grad():
        wide_logits, narrow_logits = (m.model(input_ids=ids).logits for m in (wide, narrow))
    assert not torch.equal(wide_logits, narrow_logits)
    torch.testing.assert_close(narrow_logits, wide_logits, atol=0.05, rtol=0.0)


def test_a_weight_beyond_float16_is_refused_and_nothing_is_rewritten(tmp_path: Path) -> None:
    folder = _float32_copy(tmp_path / "model")
    decoder = load_file(folder / WEIGHT_FILES[1])
    first = next(iter(decoder))
    decoder[first][0] = 1e6
    save_file(decoder, folder / WEIGHT_FILES[1], metadata=_metadata(folder / WEIGHT_FILES[1]))
    kept = {path.name: path.read_bytes() for path in folder.iterdir()}
    with pytest.raises(ValueError, match=f"{first} holds a value beyond float16's range"):
        halve_weights(folder)
    assert {path.name: path.read_bytes() for path in folder.iterdir()} == kept
