"""A model folder of any Chameleon shape with random weights, written one tensor at a time: what the benchmarks and
the GPU check load through `load_model` (NF4 quantization included) where no checkpoint can be downloaded.

The folder has the layout of a real Hugging Face conversion: `config.json` with a full vocabulary map, sharded
safetensors weights in bfloat16 with their index, a tokenizer laid out like Chameleon's (special tokens, the image
tokens, the image markers, reserved tokens, a byte-level alphabet), and the VQGAN decoder. The model is built on
the meta device, so no full copy of the weights is ever in memory: each tensor is drawn, written into its shard and
dropped.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors.torch import save_file
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import ChameleonConfig, ChameleonVQVAEConfig

from engine.model.chameleon import FamiliarChameleon
from engine.model.folder_checks import WEIGHTS_INDEX
from engine.model.vqgan import DECODER_FILE, VQGANDecoder, save_decoder

IMAGE_TOKENS_START = 4
MARKERS = ("<eoss>", "<racm3:break>", "<reserved08706>", "<image>")
TOKENIZER_CONFIG = {
    "tokenizer_class": "PreTrainedTokenizerFast",
    "bos_token": "<s>",
    "eos_token": "</s>",
    "pad_token": "<pad>",
    "unk_token": "<unk>",
    "sep_token": "<reserved08706>",
    "add_bos_token": False,
    "model_max_length": 4096,
}
SHARD_BYTES = 2 * 2**30
INIT_STD = 0.02


def chameleon_7b_config(max_position_embeddings: int = 4096) -> ChameleonConfig:
    """Anole-7b's (Chameleon-7B's) shape: hidden 4096, 32 layers of 32 heads, MLP 11008, 65,536 tokens of which
    8,192 are image tokens, 512-pixel pictures of 32 x 32 tokens."""
    vq = ChameleonVQVAEConfig()
    vocab = vocabulary(65536, vq.num_embeddings)
    return ChameleonConfig(
        vocab_size=len(vocab),
        hidden_size=4096,
        intermediate_size=11008,
        num_hidden_layers=32,
        num_attention_heads=32,
        num_key_value_heads=32,
        max_position_embeddings=max_position_embeddings,
        bos_token_id=vocab["<s>"],
        eos_token_id=vocab["</s>"],
        pad_token_id=vocab["<pad>"],
        vq_config=vq.to_dict(),
        vocabulary_map=vocab,
        architectures=["ChameleonForConditionalGeneration"],
    )


def image_token_name(index: int) -> str:
    """Chameleon's name for image token `index`: its digits as letters (0 -> A), e.g. 12 -> IMGIMGBCZ."""
    return "IMGIMG" + "".join(chr(ord("A") + int(d)) for d in str(index)) + "Z"


def vocabulary(vocab_size: int, image_tokens: int) -> dict[str, int]:
    """Chameleon's layout: `<s> <pad> </s> <unk>`, the image tokens from id 4, the image markers, then reserved
    tokens (free for concept slots) and the byte-level alphabet at the end."""
    names = ["<s>", "<pad>", "</s>", "<unk>"]
    names += [image_token_name(i) for i in range(image_tokens)]
    names += list(MARKERS)
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    reserved = vocab_size - len(names) - len(alphabet)
    if reserved < 200:
        raise ValueError(f"a vocabulary of {vocab_size} has no room for {image_tokens} image tokens and the alphabet")
    names += [f"<reserved{10000 + i:05d}>" for i in range(reserved)] + alphabet
    return {name: i for i, name in enumerate(names)}


def tokenizer_for(vocab: dict[str, int]) -> Tokenizer:
    """A byte-level tokenizer over `vocab` with no merges: text becomes one token a byte (longer prompts than a
    trained tokenizer's, which a benchmark only pays for in a few dozen tokens)."""
    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    specials = [name for name in vocab if name.startswith("<") and name.endswith(">")]
    tokenizer.add_special_tokens(specials)
    return tokenizer


def write_random_model(
    config: ChameleonConfig,
    folder: Path,
    *,
    seed: int = 0,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.bfloat16,
    shard_bytes: int = SHARD_BYTES,
    report: Callable[[str], None] | None = None,
) -> Path:
    """Write a loadable model folder of `config`'s shape with random weights (drawn on `device`) and return it."""
    folder.mkdir(parents=True, exist_ok=True)
    say = report or (lambda _m: None)
    generator = torch.Generator(device=device).manual_seed(seed)
    with torch.device("meta"):
        model = FamiliarChameleon(config)
    weight_map: dict[str, str] = {}
    shard: dict[str, torch.Tensor] = {}
    size = total = 0
    names: list[str] = []

    def flush() -> None:
        nonlocal shard, size
        if shard:
            name = f"model-{len(names) + 1:05d}.safetensors"
            save_file(shard, folder / name, metadata={"format": "pt"})
            names.append(name)
            weight_map.update(dict.fromkeys(shard, name))
            say(f"wrote {name} ({size / 2**30:.1f} GiB)")
            shard, size = {}, 0

    for name, meta in model.state_dict().items():
        held = torch.float32 if ".vqmodel." in f".{name}" else dtype
        shard[name] = _draw(name, meta.shape, held, device, generator).cpu()
        nbytes = shard[name].numel() * shard[name].element_size()
        size, total = size + nbytes, total + nbytes
        if size >= shard_bytes:
            flush()
    flush()
    renamed = {old: f"model-{i + 1:05d}-of-{len(names):05d}.safetensors" for i, old in enumerate(names)}
    for old, new in renamed.items():
        (folder / old).replace(folder / new)
    index = {"metadata": {"total_size": total}, "weight_map": {k: renamed[v] for k, v in weight_map.items()}}
    (folder / WEIGHTS_INDEX).write_text(json.dumps(index, indent=1) + "\n")
    config.save_pretrained(folder)
    tokenizer_for(config.vocabulary_map).save(str(folder / "tokenizer.json"))
    (folder / "tokenizer_config.json").write_text(json.dumps(TOKENIZER_CONFIG, indent=2) + "\n")
    torch.manual_seed(seed)
    save_decoder(VQGANDecoder(config.vq_config), folder / DECODER_FILE)
    return folder


def _draw(
    name: str, shape: torch.Size, dtype: torch.dtype, device: torch.device | str, generator: torch.Generator
) -> torch.Tensor:
    """Norm weights 1, biases 0, every other tensor normal with `INIT_STD` (as the models initialise)."""
    if name.endswith(".bias") or len(shape) == 0:
        return torch.zeros(shape, dtype=dtype, device=device)
    if "norm" in name and name.endswith(".weight") and len(shape) <= 2:
        return torch.ones(shape, dtype=dtype, device=device)
    values = torch.empty(shape, dtype=torch.float32, device=device).normal_(0, INIT_STD, generator=generator)
    return values.to(dtype)
