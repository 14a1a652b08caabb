"""Checks on a model folder before anything is built from it: config values, file integrity, weights vs config.

A crafted or damaged folder must fail in one sentence, at once: a config with absurd sizes must not make the
loader build a giant model to find out, a corrupt tokenizer or truncated weights file must not surface as a
library traceback, and weights that do not fit the config must not be silently replaced by random ones.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from transformers import ChameleonConfig, ChameleonVQVAEConfig

from engine.errors import EngineError, ModelNotFoundError
from engine.model.chameleon import FamiliarChameleon
from engine.model.vqgan import DECODER_FILE

WEIGHTS_FILE = "model.safetensors"
WEIGHTS_INDEX = "model.safetensors.index.json"
CONFIG_FILES = (
    "generation_config.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "chat_template.json",
)
"""JSON files the loaders read when present, besides config.json (read by ``read_config``), the weights index
(read by ``weight_files``) and tokenizer.json (checked by the tokenizers library itself)."""

MODEL_LIMITS = {
    "vocab_size": 2**21,
    "hidden_size": 2**16,
    "intermediate_size": 2**18,
    "num_hidden_layers": 512,
    "num_attention_heads": 2**12,
    "num_key_value_heads": 2**12,
    "max_position_embeddings": 2**20,
}
"""Inclusive upper bounds for the language model's sizes: far above any Chameleon, far below what hangs."""
VQ_LIMITS = {
    "embed_dim": 2**12,
    "num_embeddings": 2**17,
    "latent_channels": 2**12,
    "resolution": 2**12,
    "in_channels": 16,
    "base_channels": 2**12,
}
MAX_RES_BLOCKS = 16
MAX_LEVELS = 8
MAX_CHANNELS = 2**14


def one_line(error: BaseException) -> str:
    """An exception's message on one line."""
    return " ".join(str(error).split()) or type(error).__name__


def read_json(path: Path) -> Any:
    """The JSON value in ``path``, or ModelNotFoundError saying why it cannot be read."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise ModelNotFoundError(f"{path} is not readable JSON ({one_line(exc)})") from None


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _sizes(values: Mapping[str, Any], limits: Mapping[str, int], where: str, problems: list[str]) -> None:
    for name, limit in limits.items():
        value = values[name]
        if not _is_int(value) or not 1 <= value <= limit:
            problems.append(f"{where}{name} must be an integer from 1 to {limit}, not {value!r}")


def check_config_values(raw: Mapping[str, Any], source: Path) -> None:
    """Refuse a Chameleon ``config.json`` (``raw``, with the library's defaults for absent keys) whose sizes are
    not positive integers within bounds, whose heads do not divide the hidden size, or whose token ids fall
    outside the vocabulary; by arithmetic only, nothing is built."""
    values = {name: raw.get(name, getattr(ChameleonConfig, name)) for name in MODEL_LIMITS}
    problems: list[str] = []
    _sizes(values, MODEL_LIMITS, "", problems)
    if not problems:
        hidden, heads, kv_heads = values["hidden_size"], values["num_attention_heads"], values["num_key_value_heads"]
        if hidden % heads or (hidden // heads) % 2:
            problems.append(f"hidden_size {hidden} must split into {heads} heads of an even size")
        if heads % kv_heads:
            problems.append(f"num_attention_heads {heads} must be a multiple of num_key_value_heads {kv_heads}")
    eps = raw.get("rms_norm_eps", ChameleonConfig.rms_norm_eps)
    if isinstance(eps, bool) or not isinstance(eps, int | float) or not 0 < eps < 1:
        problems.append(f"rms_norm_eps must be a number between 0 and 1, not {eps!r}")
    vocab = values["vocab_size"]
    if _is_int(vocab) and vocab >= 1:
        problems += _token_id_problems(raw, vocab)
    vq = raw.get("vq_config")
    if vq is None:
        vq = {}
    if not isinstance(vq, dict):
        problems.append(f"vq_config must be an object, not {type(vq).__name__}")
    else:
        problems += _vq_problems(vq)
    if problems:
        raise EngineError(f"{source} is not a usable Chameleon config: " + "; ".join(problems))


def _token_id_problems(raw: Mapping[str, Any], vocab: int) -> list[str]:
    problems = []
    mapping = raw.get("vocabulary_map")
    if mapping is not None and not isinstance(mapping, dict):
        problems.append("vocabulary_map must be an object of token -> id")
    elif mapping:
        outside = [token for token, index in mapping.items() if not _is_int(index) or not 0 <= index < vocab]
        if outside:
            problems.append(
                f"vocabulary_map has {len(outside)} id(s) outside the vocabulary of {vocab} "
                f"(e.g. {outside[0]!r}: {mapping[outside[0]]!r})"
            )
    for name in ("pad_token_id", "bos_token_id", "eos_token_id"):
        value = raw.get(name)
        ids = value if isinstance(value, list) else [value]
        if value is not None and not all(_is_int(i) and 0 <= i < vocab for i in ids):
            problems.append(f"{name} {value!r} is outside the vocabulary of {vocab}")
    return problems


def _vq_problems(raw: Mapping[str, Any]) -> list[str]:
    values = {name: raw.get(name, getattr(ChameleonVQVAEConfig, name)) for name in VQ_LIMITS}
    problems: list[str] = []
    _sizes(values, VQ_LIMITS, "vq_config.", problems)
    blocks = raw.get("num_res_blocks", ChameleonVQVAEConfig.num_res_blocks)
    if not _is_int(blocks) or not 0 <= blocks <= MAX_RES_BLOCKS:
        problems.append(f"vq_config.num_res_blocks must be an integer from 0 to {MAX_RES_BLOCKS}, not {blocks!r}")
    levels = raw.get("channel_multiplier", ChameleonVQVAEConfig.channel_multiplier)
    if (
        not isinstance(levels, list | tuple)
        or not 1 <= len(levels) <= MAX_LEVELS
        or not all(_is_int(m) and m >= 1 for m in levels)
    ):
        problems.append(f"vq_config.channel_multiplier must be 1 to {MAX_LEVELS} positive integers, not {levels!r}")
    elif not problems:
        channels, resolution = values["base_channels"], values["resolution"]
        if channels % 32 or channels * max(levels) > MAX_CHANNELS:
            problems.append(
                f"vq_config.base_channels {channels} must be a multiple of 32 (GroupNorm uses 32 "
                f"groups) and, times the largest multiplier, at most {MAX_CHANNELS}"
            )
        if resolution % 2 ** (len(levels) - 1):
            problems.append(f"vq_config.resolution {resolution} must be a multiple of 2**{len(levels) - 1}")
    attention = raw.get("attn_resolutions")
    if attention is not None and not (isinstance(attention, list) and all(_is_int(r) for r in attention)):
        problems.append(f"vq_config.attn_resolutions must be a list of integers, not {attention!r}")
    return problems


def weight_files(path: Path) -> list[Path]:
    """The safetensors files the model's weights are read from (the shards an index names, or the single file);
    empty when there are none. A shard the index names but the folder lacks is an error."""
    index = path / WEIGHTS_INDEX
    if not index.is_file():
        return [path / WEIGHTS_FILE] if (path / WEIGHTS_FILE).is_file() else []
    contents = read_json(index)
    weight_map = contents.get("weight_map") if isinstance(contents, dict) else None
    if not isinstance(weight_map, dict) or not all(isinstance(name, str) for name in weight_map.values()):
        raise ModelNotFoundError(f"{index} has no weight_map of tensor -> file")
    names = sorted(set(weight_map.values()))
    missing = [name for name in names if not (path / name).is_file() or Path(name).name != name]
    if missing:
        raise ModelNotFoundError(
            f"{path} lacks {len(missing)} of the {len(names)} weight shards its index names "
            f"(e.g. {missing[0]}); the download or copy is incomplete"
        )
    return [path / name for name in names]


def tensor_shapes(file: Path) -> dict[str, list[int]]:
    """Each tensor's shape from a safetensors header, refusing a truncated or corrupt file (reads no data)."""
    try:
        with safe_open(str(file), framework="pt") as handle:  # not iterable: it needs .keys()
            return {key: list(handle.get_slice(key).get_shape()) for key in handle.keys()}  # noqa: SIM118
    except Exception as exc:  # safetensors raises its own SafetensorError, and OSError for unreadable files
        raise ModelNotFoundError(
            f"{file} is not a readable safetensors file, probably truncated or corrupt ({one_line(exc)})"
        ) from None


def check_tokenizer(file: Path) -> None:
    """Refuse a ``tokenizer.json`` the tokenizers library cannot load."""
    from tokenizers import Tokenizer

    try:
        Tokenizer.from_file(str(file))
    except Exception as exc:  # tokenizers reports every failure as a plain Exception
        raise ModelNotFoundError(f"{file} is not a usable tokenizer ({one_line(exc)})") from None


def one_layer_model(config: ChameleonConfig) -> FamiliarChameleon:
    """The model of ``config`` with a single decoder layer, on the meta device (no memory, milliseconds)."""
    one_layer = copy.deepcopy(config)
    one_layer.num_hidden_layers = 1
    with torch.device("meta"):
        return FamiliarChameleon(one_layer)


def expected_shapes(config: ChameleonConfig) -> dict[str, list[int]]:
    """Every tensor a checkpoint of ``config`` holds and its shape: one layer's, repeated for every layer."""
    shapes = {}
    for key, tensor in one_layer_model(config).state_dict().items():
        if key.startswith("model.layers.0."):
            for layer in range(config.num_hidden_layers):
                shapes[f"model.layers.{layer}.{key.removeprefix('model.layers.0.')}"] = list(tensor.shape)
        else:
            shapes[key] = list(tensor.shape)
    if config.tie_word_embeddings:
        shapes.pop("lm_head.weight", None)
    return shapes


def check_weights(files: list[Path], config: ChameleonConfig) -> None:
    """Refuse weights that lack a tensor ``config`` needs or hold one of another shape (the loader would fill
    the first with random values)."""
    found: dict[str, list[int]] = {}
    for file in files:
        found.update(tensor_shapes(file))
    expected = expected_shapes(config)
    missing = [key for key in expected if key not in found]
    mismatched = [
        f"{key} is {found[key]} in the file but {shape} by config.json"
        for key, shape in expected.items()
        if key in found and found[key] != shape
    ]
    if missing or mismatched:
        where = files[0].parent
        parts = []
        if missing:
            parts.append(f"{len(missing)} of {len(expected)} tensors are missing (e.g. {missing[0]})")
        if mismatched:
            parts.append(f"{len(mismatched)} have another shape (e.g. {mismatched[0]})")
        raise ModelNotFoundError(f"the weights in {where} do not match its config.json: " + "; ".join(parts))


def check_model_files(path: Path, config: ChameleonConfig) -> None:
    """Refuse a complete model folder whose files are damaged or do not fit ``config``: JSON that does not
    parse, a tokenizer that does not load, a truncated or corrupt safetensors file, weights lacking a tensor or
    holding one of another shape. Reads headers only, builds nothing."""
    for name in CONFIG_FILES:
        if (path / name).is_file():
            read_json(path / name)
    check_tokenizer(path / "tokenizer.json")
    if (path / DECODER_FILE).is_file():
        tensor_shapes(path / DECODER_FILE)
    check_weights(weight_files(path), config)
