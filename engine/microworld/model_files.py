"""The micro-world model's files: a Chameleon-layout tokenizer, the config, and the folder layout.

The folder is a Hugging Face model folder like a real checkpoint's (config, safetensors weights,
tokenizer, the VQGAN decoder in the original release's layout) plus the demo marker, so the product
loads it through exactly the same code path.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import ChameleonConfig, ChameleonVQVAEConfig

from engine.atomic_write import write_atomic
from engine.concepts.prompts import ASSISTANT, USER
from engine.microworld.world import Identity, sample_scene
from engine.model.synthetic import TOKENIZER_CONFIG, image_token_name
from engine.model.vqgan import DECODER_FILE
from engine.training.data import (
    DESCRIBE_QUESTIONS,
    FACT_QUESTIONS,
    NEGATIVE_ANSWERS,
    OPEN_QUESTIONS,
    POSITIVE_ANSWERS,
    RECOGNITION_QUESTIONS,
)

CODEBOOK_SIZE = 512
RESERVED_TOKENS = 200  # room for 6 concepts of 33 slot tokens each
TEXT_VOCAB = 900
VQ_CONFIG = {
    "resolution": 32,
    "base_channels": 32,
    "channel_multiplier": [1, 2, 2],
    "num_res_blocks": 1,
    "embed_dim": 32,
    "latent_channels": 32,
    "num_embeddings": CODEBOOK_SIZE,
    "attn_resolutions": [],
}
WEIGHT_FILES = ("model.safetensors", DECODER_FILE)
FLOAT16_MAX = torch.finfo(torch.float16).max
LM_SIZES = {"hidden_size": 256, "intermediate_size": 704, "num_hidden_layers": 4, "num_attention_heads": 4}


def special_tokens() -> list[str]:
    """All non-text tokens in id order, mirroring Chameleon's vocabulary layout."""
    head = ["<s>", "<pad>", "</s>", "<unk>"]
    images = [image_token_name(i) for i in range(CODEBOOK_SIZE)]
    markers = ["<eoss>", "<racm3:break>", "<reserved08706>", "<image>"]
    reserved = [f"<reserved{10000 + i:05d}>" for i in range(RESERVED_TOKENS)]
    return head + images + markers + reserved


def the(identity: Identity) -> str:
    """How the world's text names a creature: `the red striped circle with a blue hat`."""
    return f"the {identity.describe()}"


def corpus(seed: int = 0, scenes: int = 4000) -> list[str]:
    """Text the BPE is trained on: the world's captions and answers, and the product's own phrasings."""
    rng = random.Random(seed)
    lines = [USER, ASSISTANT]
    for _ in range(scenes):
        scene = sample_scene(rng)
        name = the(scene.identity)
        lines += [scene.prompt(), *(f"{q} {a}" for q, a in scene.questions())]
        lines += [rng.choice(RECOGNITION_QUESTIONS).format(n=name), rng.choice(POSITIVE_ANSWERS).format(n=name)]
        lines.append(rng.choice(NEGATIVE_ANSWERS).format(n=name))
    product = RECOGNITION_QUESTIONS + POSITIVE_ANSWERS + NEGATIVE_ANSWERS + OPEN_QUESTIONS + DESCRIBE_QUESTIONS
    product += [q for kind in FACT_QUESTIONS.values() for q in kind.values()]
    lines += [line.format(n="bo") for line in product]
    lines += [f"<bo>'s {key} is {value}." for key in ("colour", "shape", "pattern") for value in ("red", "circle")]
    return lines


def build_tokenizer(lines: list[str], text_vocab: int = TEXT_VOCAB) -> Tokenizer:
    """A byte-level BPE trained on `lines` whose first ids are Chameleon-style special tokens."""
    specials = special_tokens()
    tokenizer = Tokenizer(models.BPE(unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=len(specials) + text_vocab,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(lines, trainer=trainer)
    for expected_id, token in enumerate(specials):
        if tokenizer.token_to_id(token) != expected_id:
            raise RuntimeError(f"special token {token} did not get id {expected_id}")
    return tokenizer


def build_config(vocab: dict[str, int]) -> ChameleonConfig:
    return ChameleonConfig(
        vocab_size=len(vocab),
        num_key_value_heads=LM_SIZES["num_attention_heads"],
        max_position_embeddings=4096,
        bos_token_id=vocab["<s>"],
        eos_token_id=vocab["</s>"],
        pad_token_id=vocab["<pad>"],
        vq_config=ChameleonVQVAEConfig(**VQ_CONFIG).to_dict(),
        vocabulary_map=vocab,
        architectures=["ChameleonForConditionalGeneration"],
        **LM_SIZES,
    )


def write_tokenizer(tokenizer: Tokenizer, out: Path) -> None:
    tokenizer.save(str(out / "tokenizer.json"))
    (out / "tokenizer_config.json").write_text(json.dumps(TOKENIZER_CONFIG, indent=2) + "\n")


def halve_weights(folder: Path) -> None:
    """Store the folder's weights (language model, VQ encoder, VQGAN decoder) as float16, half the size; loading
    casts them to the compute dtype. A weight float16 cannot hold is refused before anything is rewritten."""
    halved: dict[str, tuple[dict[str, torch.Tensor], dict[str, str] | None]] = {}
    for name in WEIGHT_FILES:
        with safe_open(str(folder / name), "pt") as weights:
            tensors = {key: weights.get_tensor(key) for key in weights.keys()}  # noqa: SIM118 (safe_open is not iterable)
            metadata = weights.metadata()
        for key, tensor in tensors.items():
            if tensor.is_floating_point():
                if tensor.abs().max() > FLOAT16_MAX:
                    raise ValueError(f"{folder / name}: {key} holds a value beyond float16's range")
                tensors[key] = tensor.to(torch.float16)
        halved[name] = tensors, metadata
    for name, (tensors, metadata) in halved.items():
        write_atomic(folder / name, save(tensors, metadata=metadata))
    config = json.loads((folder / "config.json").read_text())
    config["dtype"] = "float16"
    write_atomic(folder / "config.json", (json.dumps(config, indent=2, sort_keys=True) + "\n").encode())
