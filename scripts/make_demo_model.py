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
from transformers import ChameleonConfig, ChameleonForConditionalGeneration, ChameleonVQVAEConfig

from engine.microworld.model_files import build_tokenizer, write_tokenizer
from engine.model_loading import DEMO_MARKER
from engine.vqgan import DECODER_FILE, VQGANDecoder, save_decoder

CODEBOOK_SIZE = 512
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


def build(out: Path, seed: int) -> None:
    """Write config, weights, tokenizer and VQGAN decoder of the demo model into `out`."""
    torch.manual_seed(seed)
    tokenizer = build_tokenizer(corpus(), TEXT_VOCAB)
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
    write_tokenizer(tokenizer, out)
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
