"""The open_clip embedder: local weights only, normalised float32 output, batching, and no network."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import open_clip
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from engine.errors import EngineError
from engine.retrieval.embedder import load_embedder, load_embedder_for
from engine.retrieval.embedder_info import EmbedderInfo

TINY = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "head_width": 16, "patch_size": 16},
    "text_cfg": {"context_length": 8, "vocab_size": 64, "width": 16, "heads": 1, "layers": 1},
}


pytestmark = pytest.mark.usefixtures("no_sockets")  # every test here fails if anything opens a socket


def _images(count: int, size: int = 48) -> list[Image.Image]:
    rng = np.random.default_rng(0)
    return [Image.fromarray(rng.integers(0, 256, (size, size + 8, 3), dtype=np.uint8)) for _ in range(count)]


def test_demo_embedder_is_deterministic_normalised_and_batch_invariant() -> None:
    images = _images(7)
    first = load_embedder("demo")
    assert first.info.untrained and first.info.name == "demo"
    seen: list[tuple[int, int]] = []
    a = first.embed(images, batch_size=3, progress=lambda p: seen.append((p.step, p.total)))
    b = load_embedder("demo").embed(images, batch_size=32)
    assert a.dtype == np.float32 and a.shape == (7, first.dim)
    np.testing.assert_allclose(np.linalg.norm(a, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(a, b, atol=1e-5)
    assert seen == [(3, 7), (6, 7), (7, 7)]
    assert not np.allclose(a[0], a[1], atol=1e-2)


def test_demo_embedder_leaves_the_global_rng_alone() -> None:
    torch.manual_seed(5)
    expected = torch.rand(3)
    torch.manual_seed(5)
    load_embedder("demo")
    assert torch.equal(torch.rand(3), expected)


def test_default_embedder_without_weights_names_the_file_it_needs(no_sockets: list[Any]) -> None:
    with pytest.raises(EngineError, match=r"ViT-L-14 embedder needs its weights file.*--weights"):
        load_embedder()
    assert no_sockets == []


@pytest.mark.parametrize("name", ["hf-hub:laion/CLIP-ViT-B-32", "local-dir:/tmp", "no-such-model"])
def test_unknown_or_remote_model_names_are_refused(name: str) -> None:
    with pytest.raises(EngineError, match="unknown embedder"):
        load_embedder(name, weights="whatever.safetensors")


def test_missing_weights_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(EngineError, match="does not exist"):
        load_embedder("ViT-B-32", weights=tmp_path / "nope.safetensors", tag=None)


def test_unknown_release_tag_lists_the_known_ones(tmp_path: Path) -> None:
    weights = tmp_path / "w.safetensors"
    weights.write_bytes(b"")
    with pytest.raises(EngineError, match=r"known tags: .*openai"):
        load_embedder("ViT-B-32", weights=weights, tag="no-such-release")


@pytest.fixture
def tiny_model(monkeypatch: pytest.MonkeyPatch) -> torch.nn.Module:
    """A tiny architecture registered under a test-only name, with random weights."""
    monkeypatch.setitem(open_clip.factory._MODEL_CONFIGS, "Familiar-Tiny-Test", TINY)
    torch.manual_seed(1)
    return open_clip.create_model("Familiar-Tiny-Test", pretrained=None).eval()


@pytest.mark.parametrize("suffix", [".safetensors", ".pt"])
def test_weights_load_from_a_local_file(tiny_model: torch.nn.Module, tmp_path: Path, suffix: str) -> None:
    weights = tmp_path / f"tiny{suffix}"
    state = {key: value.contiguous() for key, value in tiny_model.state_dict().items()}
    if suffix == ".pt":
        torch.save({"state_dict": state}, weights)
    else:
        save_file(state, weights)
    embedder = load_embedder("Familiar-Tiny-Test", weights, tag=None)
    images = _images(3)
    preprocess = open_clip.image_transform(32, is_train=False)
    with torch.no_grad():
        expected = tiny_model.encode_image(torch.stack([preprocess(i) for i in images]), normalize=True).numpy()
    np.testing.assert_allclose(embedder.embed(images), expected, atol=1e-5)
    assert embedder.info == EmbedderInfo("Familiar-Tiny-Test", None, 32, untrained=False, weights_file=weights.name)


def test_weights_of_another_architecture_are_refused(tiny_model: torch.nn.Module, tmp_path: Path) -> None:
    weights = tmp_path / "tiny.safetensors"
    state = {key: value.contiguous() for key, value in tiny_model.state_dict().items()}
    state["visual.proj"] = torch.zeros(32, 8)
    save_file(state, weights)
    with pytest.raises(EngineError, match="does not hold Familiar-Tiny-Test image-tower weights"):
        load_embedder("Familiar-Tiny-Test", weights, tag=None)


def test_files_without_image_tower_weights_are_refused(tiny_model: torch.nn.Module, tmp_path: Path) -> None:
    weights = tmp_path / "text-only.safetensors"
    save_file({"token_embedding.weight": torch.zeros(4, 4)}, weights)
    with pytest.raises(EngineError, match="no image-tower weights"):
        load_embedder("Familiar-Tiny-Test", weights, tag=None)


def test_pickled_code_is_never_run(tiny_model: torch.nn.Module, tmp_path: Path) -> None:
    weights = tmp_path / "evil.pt"
    torch.save({"state_dict": {"visual.x": torch.zeros(1)}, "payload": Path("/")}, weights)
    with pytest.raises(EngineError, match="cannot read embedder weights"):
        load_embedder("Familiar-Tiny-Test", weights, tag=None)


def test_an_index_embedder_must_match_the_one_loaded() -> None:
    other = EmbedderInfo("demo", None, 32, untrained=True, weights_file=None)
    with pytest.raises(EngineError, match="cannot be compared"):
        load_embedder_for(other, None)
    assert load_embedder_for(load_embedder("demo").info, None).info.name == "demo"
