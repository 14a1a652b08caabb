"""Build the embedded demo model in resources/demo-model: a tiny, untrained Chameleon.

It has the real architecture (ChameleonForConditionalGeneration with its VQ encoder), a byte-level BPE
tokenizer laid out like Chameleon's (special tokens, IMGIMG image tokens, reserved tokens for concept
slots, `<reserved08706>` as separator, `<image>`), random weights, and a VQGAN decoder in the original
release's layout. It is loaded by exactly the same code as a real checkpoint. Rerun to rebuild:

    python scripts/make_demo_model.py [--out resources/demo-model] [--seed 0]
"""

from __future__ import annotations

import argparse
import itertools
import json
import shutil
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import ChameleonConfig, ChameleonForConditionalGeneration, ChameleonVQVAEConfig

from engine.model_loading import DEMO_MARKER
from engine.vqgan import DECODER_FILE, VQGANDecoder, save_decoder

CODEBOOK_SIZE = 512
RESERVED_TOKENS = 200  # room for 6 concepts of 33 slot tokens each
TEXT_VOCAB = 1200

VQ_CONFIG = {
    "resolution": 512,
    "base_channels": 32,
    "channel_multiplier": [1, 1, 2, 2, 2],
    "num_res_blocks": 1,
    "embed_dim": 32,
    "latent_channels": 32,
    "num_embeddings": CODEBOOK_SIZE,
    "attn_resolutions": [],
}


def image_token_name(index: int) -> str:
    """Chameleon's spelling of codebook index `index`: IMGIMG + digits as letters A-J + Z."""
    return "IMGIMG" + "".join(chr(ord("A") + int(d)) for d in str(index)) + "Z"


def special_tokens() -> list[str]:
    """All non-text tokens in id order, mirroring Chameleon's vocabulary layout."""
    head = ["<s>", "<pad>", "</s>", "<unk>"]
    images = [image_token_name(i) for i in range(CODEBOOK_SIZE)]
    markers = ["<eoss>", "<racm3:break>", "<reserved08706>", "<image>"]
    reserved = [f"<reserved{10000 + i:05d}>" for i in range(RESERVED_TOKENS)]
    return head + images + markers + reserved


def corpus() -> list[str]:
    """A small English corpus for the text BPE: the phrasings the product's prompts use."""
    subjects = ["dog", "cat", "person", "bike", "toy", "backpack", "plushie", "sneaker", "mug", "bowl"]
    colours = ["red", "blue", "green", "brown", "black", "white", "yellow", "grey", "pink", "orange"]
    places = ["library", "beach", "park", "kitchen", "garden", "city street", "forest", "snow", "desk"]
    lines = [
        "Is {s} in this photo? Answer with yes or no.",
        "Can you see {s} in this image?",
        "What is {s} doing in this photo?",
        "Describe {s} in detail.",
        "What colour is {s}?",
        "A photo of a {c} {s} in the {p}.",
        "A {c} {s} reading in a {p}.",
        "Yes, {s} is in the photo.",
        "No, {s} is not in this photo.",
        "The {s} is {c} and sits in the {p}.",
        "This is my {s}. It is {c}.",
    ]
    return [template.format(s=s, c=c, p=p) for template, s, c, p in itertools.product(lines, subjects, colours, places)]


def build_tokenizer() -> Tokenizer:
    """Train a byte-level BPE whose first ids are Chameleon-style special tokens."""
    specials = special_tokens()
    tokenizer = Tokenizer(models.BPE(unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=len(specials) + TEXT_VOCAB,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(corpus(), trainer=trainer)
    for expected_id, token in enumerate(specials):
        assert tokenizer.token_to_id(token) == expected_id, token
    return tokenizer


def build(out: Path, seed: int) -> None:
    """Write config, weights, tokenizer and VQGAN decoder of the demo model into `out`."""
    torch.manual_seed(seed)
    tokenizer = build_tokenizer()
    vocab = tokenizer.get_vocab()
    vq_config = ChameleonVQVAEConfig(**VQ_CONFIG)
    config = ChameleonConfig(
        vocab_size=len(vocab),
        hidden_size=64,
        intermediate_size=176,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=4096,
        bos_token_id=vocab["<s>"],
        eos_token_id=vocab["</s>"],
        pad_token_id=vocab["<pad>"],
        vq_config=vq_config.to_dict(),
        vocabulary_map=vocab,
    )
    model = ChameleonForConditionalGeneration(config).eval()
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    model.save_pretrained(out)
    tokenizer.save(str(out / "tokenizer.json"))
    tokenizer_config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": "<s>",
        "eos_token": "</s>",
        "pad_token": "<pad>",
        "unk_token": "<unk>",
        "sep_token": "<reserved08706>",
        "add_bos_token": False,
        "model_max_length": 4096,
    }
    (out / "tokenizer_config.json").write_text(json.dumps(tokenizer_config, indent=2) + "\n")
    save_decoder(VQGANDecoder(vq_config), out / DECODER_FILE)
    marker = {
        "what": "Familiar's embedded demo model: real Chameleon architecture, tiny, random weights.",
        "warning": "Untrained: its words and pictures are noise until a real model is configured.",
        "seed": seed,
        "built_by": "scripts/make_demo_model.py",
    }
    (out / DEMO_MARKER).write_text(json.dumps(marker, indent=2) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "resources" / "demo-model")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    build(args.out, args.seed)
    total = sum(f.stat().st_size for f in args.out.iterdir())
    print(f"demo model written to {args.out} ({total / 1e6:.1f} MB)")


if __name__ == "__main__":
    main()
