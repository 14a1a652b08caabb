"""Random-weight model folders (engine/model/synthetic.py): what the full-size benchmarks and the GPU check load."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from engine.inference.assistant import Assistant
from engine.inference.generation import Sampling
from engine.model.loading import demo_model_dir, load_model, read_config
from engine.model.synthetic import chameleon_7b_config, tokenizer_for, write_random_model


def test_a_written_folder_loads_through_load_model_and_draws(tmp_path: Path) -> None:
    config = read_config(demo_model_dir())
    folder = write_random_model(config, tmp_path / "model", shard_bytes=4 * 2**20)
    index = json.loads((folder / "model.safetensors.index.json").read_text())
    shards = sorted(set(index["weight_map"].values()))
    assert len(shards) > 1 and all((folder / name).is_file() for name in shards)
    loaded = load_model(str(folder), device="cpu")
    assert not loaded.is_demo and loaded.config.hidden_size == config.hidden_size
    assert loaded.model.model.vqmodel.quantize.embedding.weight.dtype == torch.float32
    norms = [p for n, p in loaded.model.named_parameters() if n.endswith("input_layernorm.weight")]
    assert norms and all(bool((p == 1).all()) for p in norms)
    assistant = Assistant(loaded)
    picture = assistant.generate("A dog", Sampling(seed=0))
    assert picture.image.size[0] > 0 and len(picture.tokens) == loaded.image_tokenizer.tokens_per_image


def test_the_full_size_vocabulary_is_laid_out_like_chameleons() -> None:
    config = chameleon_7b_config()
    vocab = config.vocabulary_map
    assert config.vocab_size == len(vocab) == 65536
    assert vocab["IMGIMGAZ"] == 4 and vocab["IMGIMGIBJAZ"] == 4 + 8190
    assert (vocab["<eoss>"], vocab["<racm3:break>"]) == (8196, 8197)
    tokenizer = tokenizer_for(vocab)
    ids = tokenizer.encode("A dog <reserved10000>").ids
    assert vocab["<reserved10000>"] in ids and all(i >= 8196 for i in ids)
    assert tokenizer.decode(ids, skip_special_tokens=True).strip() == "A dog"
