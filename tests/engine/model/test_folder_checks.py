"""Model specs never reach the network unless a download is allowed; configs are judged by arithmetic."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

import huggingface_hub
import pytest
import torch
from huggingface_hub import constants
from transformers import ChameleonConfig

from engine.errors import EngineError, ModelNotFoundError
from engine.model import memory
from engine.model.chameleon import FamiliarChameleon
from engine.model.folder_checks import check_config_values, expected_shapes
from engine.model.loading import demo_model_dir, read_config, resolve_model_dir


@pytest.mark.parametrize(
    "spec",
    [
        "./no-such-model",
        "~/no-such-model-familiar",
        "models/nested/no-such-model",
        "models\\no-such-model",
        "/no/such/model",
    ],
)
def test_a_path_that_does_not_exist_is_named(spec: str, no_hub: list[Any]) -> None:
    with pytest.raises(ModelNotFoundError, match=r"model folder .* does not exist"):
        resolve_model_dir(spec)
    assert no_hub == []


def test_a_hub_shaped_spec_whose_first_part_is_a_folder_here_is_a_path(no_hub: list[Any], tmp_path: Path) -> None:
    (tmp_path / "models").mkdir()
    with pytest.raises(ModelNotFoundError, match=r"model folder models/Anole-7b does not exist \(looked for /"):
        resolve_model_dir("models/Anole-7b")
    assert no_hub == []


def test_a_hub_id_is_looked_up_only_in_the_local_cache(no_hub: list[Any], tmp_path: Path) -> None:
    with pytest.raises(ModelNotFoundError, match="Familiar downloads nothing on its own") as info:
        resolve_model_dir("leloy/Anole-7b-v0.1-hf")
    assert str(tmp_path / "hub-cache") in str(info.value) and "\n" not in str(info.value)
    snapshot = tmp_path / "hub-cache" / "models--leloy--Anole-7b-v0.1-hf" / "snapshots" / ("a" * 40)
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").write_text("{}")
    (snapshot.parents[1] / "refs").mkdir()
    (snapshot.parents[1] / "refs" / "main").write_text("a" * 40)
    assert resolve_model_dir("leloy/Anole-7b-v0.1-hf") == snapshot
    assert no_hub == []


def test_a_hub_id_is_downloaded_only_when_allowed(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub-cache"))
    asked: list[str] = []

    def download(repo_id: str, **kwargs: Any) -> str:
        asked.append(repo_id)
        assert kwargs == {}
        return str(tmp_path)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", download)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ModelNotFoundError, match="downloads nothing"):
        resolve_model_dir("org/model")
    assert asked == []
    assert resolve_model_dir("org/model", allow_download=True) == tmp_path and asked == ["org/model"]


def _demo_raw() -> dict[str, Any]:
    return json.loads((demo_model_dir() / "config.json").read_text())


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"num_hidden_layers": 100_000}, "num_hidden_layers must be an integer from 1 to 512, not 100000"),
        ({"hidden_size": -256}, "hidden_size must be an integer from 1 to 65536, not -256"),
        ({"num_attention_heads": 0}, "num_attention_heads must be an integer from 1"),
        ({"num_key_value_heads": 3}, "must be a multiple of num_key_value_heads 3"),
        ({"num_attention_heads": 3}, "hidden_size 256 must split into 3 heads"),
        ({"num_attention_heads": 256, "num_key_value_heads": 256}, "heads of an even size"),
        ({"vocab_size": True}, "vocab_size must be an integer"),
        ({"max_position_embeddings": 2**40}, "max_position_embeddings must be an integer"),
        ({"rms_norm_eps": -1}, "rms_norm_eps must be a number between 0 and 1"),
        ({"vocab_size": 600}, "vocabulary_map has 750 id(s) outside the vocabulary of 600"),
        ({"eos_token_id": 5000}, "eos_token_id 5000 is outside the vocabulary"),
        ({"vq_config": {"channel_multiplier": [1] * 20}}, "vq_config.channel_multiplier must be 1 to 8"),
        ({"vq_config": {"base_channels": 48}}, "vq_config.base_channels 48 must be a multiple of 32"),
        (
            {"vq_config": {"resolution": 30, "channel_multiplier": [1, 2, 2]}},
            "resolution 30 must be a multiple of 2**2",
        ),
        ({"vq_config": {"num_res_blocks": -1}}, "vq_config.num_res_blocks must be an integer from 0"),
        ({"vq_config": []}, "vq_config must be an object"),
    ],
)
def test_config_values_are_checked_by_arithmetic(change: dict[str, Any], reason: str) -> None:
    with pytest.raises(EngineError, match=f"is not a usable Chameleon config: .*{re.escape(reason)}"):
        check_config_values({**_demo_raw(), **change}, Path("config.json"))


def test_the_demo_and_the_full_size_configs_pass() -> None:
    check_config_values(_demo_raw(), Path("config.json"))
    check_config_values({"model_type": "chameleon"}, Path("config.json"))
    assert read_config(demo_model_dir()).hidden_size == _demo_raw()["hidden_size"]


@pytest.mark.parametrize(
    "change",
    [
        {},
        {"num_key_value_heads": 2},
        {"attention_bias": True, "mlp_bias": True},
        {"swin_norm": True},
        {"tie_word_embeddings": True},
    ],
)
def test_parameter_counts_and_shapes_match_the_built_model(change: dict[str, Any]) -> None:
    config = read_config(demo_model_dir())
    for name, value in change.items():
        setattr(config, name, value)
    with torch.device("meta"):
        model = FamiliarChameleon(config)
    quantizable = sum(m.weight.numel() for m in model.model.layers.modules() if isinstance(m, torch.nn.Linear))
    assert memory.parameter_counts(config) == (quantizable, sum(p.numel() for p in model.parameters()) - quantizable)
    shapes = {key: list(tensor.shape) for key, tensor in model.state_dict().items()}
    if config.tie_word_embeddings:
        shapes.pop("lm_head.weight")
    assert expected_shapes(config) == shapes


def test_counting_a_deep_model_does_not_build_it() -> None:
    config = ChameleonConfig(vocabulary_map={"<image>": 8711}, vq_config={}, num_hidden_layers=100_000)
    started = time.monotonic()
    quantizable, _ = memory.parameter_counts(config)
    assert time.monotonic() - started < 5
    assert quantizable == 100_000 * (4 * 4096 * 4096 + 3 * 4096 * 11008)
