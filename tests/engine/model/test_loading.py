"""Loading: the demo model through the real code path, fingerprints, and clear refusals."""

from __future__ import annotations

import shutil
from pathlib import Path

import psutil
import pytest
import torch
from safetensors.torch import load_file, save_file

from engine.errors import InsufficientMemoryError, ModelNotFoundError
from engine.model import loading as model_loading
from engine.model import memory
from engine.model.fingerprint import model_fingerprint
from engine.model.loading import LoadedModel, demo_model_dir, load_model


def test_demo_loads_through_the_checkpoint_path(demo: LoadedModel) -> None:
    assert demo.is_demo and demo.source == "demo"
    assert demo.model.config.model_type == "chameleon"
    assert demo.image_tokenizer.tokens_per_image == 64
    assert demo.image_tokenizer.resolution == 32
    assert not any(p.requires_grad for p in demo.model.parameters())
    assert len(demo.fingerprint) == 64


def test_precision_quantizes_only_real_models_on_cuda_unless_told() -> None:
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert model_loading.precision(cpu, is_demo=False) == (False, torch.float32)
    assert model_loading.precision(cuda, is_demo=False) == (True, torch.bfloat16)
    assert model_loading.precision(cuda, is_demo=True) == (False, torch.bfloat16)
    assert model_loading.precision(cuda, False, quantize=False, dtype=torch.float16) == (False, torch.float16)
    assert model_loading.precision(cpu, True, quantize=True) == (True, torch.float32)


def test_fingerprint_is_stable_across_quantization(demo: LoadedModel) -> None:
    quantized = load_model("demo", device="cpu", quantize=True)
    assert quantized.quantized
    assert type(quantized.model.model.layers[0].mlp.up_proj).__name__ == "Linear4bit"
    assert quantized.fingerprint == demo.fingerprint


def test_fingerprint_changes_with_the_weights(tmp_path: Path, demo: LoadedModel) -> None:
    other = tmp_path / "other"
    shutil.copytree(demo_model_dir(), other)
    weights = load_file(other / "model.safetensors")
    weights["model.embed_tokens.weight"] = weights["model.embed_tokens.weight"] + 0.01
    save_file(weights, other / "model.safetensors", metadata={"format": "pt"})
    (other / model_loading.DEMO_MARKER).unlink()
    loaded = load_model(str(other), device="cpu")
    assert not loaded.is_demo
    assert loaded.fingerprint != demo.fingerprint
    assert loaded.fingerprint == model_fingerprint(loaded.model)


def test_the_demo_marker_says_which_notice_a_demo_carries(tmp_path: Path) -> None:
    """Only a marker with `"trained": true` gets the trained demo's notice; any other marker gets the
    untrained one, which claims nothing; no marker, no demo."""
    assert model_loading.demo_notice(demo_model_dir()) == model_loading.TRAINED_DEMO
    marker = tmp_path / model_loading.DEMO_MARKER
    for text in ('{"what": "random weights"}', '{"trained": "yes"}', "[]", "not json"):
        marker.write_text(text)
        assert model_loading.demo_notice(tmp_path) == model_loading.UNTRAINED_DEMO, text
    marker.unlink()
    assert model_loading.demo_notice(tmp_path) is None


def test_missing_folder_is_named(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFoundError, match="does not exist"):
        load_model(str(tmp_path / "nowhere"), device="cpu")


def test_checkpoint_without_vqgan_names_the_file(tmp_path: Path) -> None:
    folder = tmp_path / "anole"
    shutil.copytree(demo_model_dir(), folder)
    (folder / "vqgan_decoder.safetensors").unlink()
    with pytest.raises(ModelNotFoundError, match=r"tokenizer/vqgan\.ckpt"):
        load_model(str(folder), device="cpu")


def test_folder_without_weights_lists_what_is_missing(tmp_path: Path) -> None:
    folder = tmp_path / "empty"
    folder.mkdir()
    with pytest.raises(ModelNotFoundError) as info:
        load_model(str(folder), device="cpu")
    message = str(info.value)
    for name in ("config.json", "tokenizer.json", "model weights", "vqgan.ckpt"):
        assert name in message


def test_hub_id_not_downloaded_is_a_clear_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ModelNotFoundError, match="nor a hub model in the local Hugging Face cache"):
        load_model("leloy/Anole-7b-v0.1-hf", device="cpu")


def test_refuses_when_memory_will_not_fit(monkeypatch: pytest.MonkeyPatch) -> None:
    class Tiny:
        available = 1024

    monkeypatch.setattr(psutil, "virtual_memory", lambda: Tiny())
    with pytest.raises(InsufficientMemoryError, match="will not fit"):
        load_model("demo", device="cpu")


def test_memory_estimate_for_the_full_size_model() -> None:
    from transformers import ChameleonConfig

    config = ChameleonConfig(vocabulary_map={"<image>": 8711}, vq_config={})
    quantizable, other = memory.parameter_counts(config)
    assert 6.0e9 < quantizable + other < 7.5e9
    four_bit = memory.estimate_memory(config, torch.device("cpu"), torch.bfloat16, quantize=True)
    full = memory.estimate_memory(config, torch.device("cpu"), torch.bfloat16, quantize=False)
    assert 4 * 2**30 < four_bit.needed < 9 * 2**30 < full.needed


def test_random_full_size_path_quantizes_and_draws_on_cpu() -> None:
    """The benchmark's random-weights path, on the demo's shape: 4-bit decoder layers, a usable model."""
    from engine.inference.assistant import Assistant
    from engine.inference.generation import Sampling

    config = model_loading.read_config(demo_model_dir())
    loaded = model_loading.random_model(config, torch.device("cpu"), quantize=True)
    linear = loaded.model.model.layers[0].self_attn.q_proj
    assert type(linear).__name__ == "Linear4bit" and linear.weight.bnb_quantized
    assert not linear.support_avx512bf16_for_cpu
    picture = Assistant(loaded).generate("a dog", Sampling(seed=0))
    assert picture.tokens.shape == (loaded.image_tokenizer.tokens_per_image,)
