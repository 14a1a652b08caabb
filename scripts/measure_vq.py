"""Measure a VQ image tokenizer alone: the attribute reader on fresh raw renders and on their round trip
(encode to 64 tokens, decode), with the commonest misreadings per identity attribute. Prints the figures and
writes them as JSON only where -o says.

python scripts/measure_vq.py FOLDER [--count 600] [--threads 2] [-o FILE]

FOLDER is an exported model (model.safetensors) or a train_microworld work folder (vq_encoder.safetensors).
"""

from __future__ import annotations

import argparse
import json
import random
from collections import Counter
from pathlib import Path

import torch
from PIL import Image
from safetensors.torch import load_file
from transformers import ChameleonVQVAEConfig
from transformers.models.chameleon.modeling_chameleon import ChameleonVQVAE

from engine.microworld import model_files
from engine.microworld.abilities import read_right
from engine.microworld.pretrain import scene_pixels
from engine.microworld.reader import load_reader
from engine.microworld.world import IDENTITY, render, sample_scene
from engine.model.vqgan import load_decoder

PREFIX = "model.vqmodel."


def load_vq(folder: Path) -> ChameleonVQVAE:
    vqmodel = ChameleonVQVAE(ChameleonVQVAEConfig(**model_files.VQ_CONFIG)).eval()
    if (folder / "vq_encoder.safetensors").is_file():
        vqmodel.load_state_dict(load_file(folder / "vq_encoder.safetensors"))
    else:
        weights = load_file(folder / "model.safetensors")
        vqmodel.load_state_dict({k[len(PREFIX) :]: v for k, v in weights.items() if k.startswith(PREFIX)})
    return vqmodel


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", type=Path)
    parser.add_argument("--count", type=int, default=600, help="fresh scenes")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2, help="torch threads")
    parser.add_argument("-o", "--output", type=Path, default=None, help="write the figures here as JSON")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    vqmodel = load_vq(args.folder)
    decoder = load_decoder(args.folder, vqmodel.config).eval()
    rng = random.Random(f"familiar-vq-{args.seed}")
    scenes = [sample_scene(rng) for _ in range(args.count)]
    with torch.no_grad():
        codes = vqmodel.encode(scene_pixels(scenes)).image_tokens.reshape(len(scenes), -1)
        decoded = decoder(codes).permute(0, 2, 3, 1).clamp(-1, 1)
    pictures = [Image.fromarray(((p + 1) * 127.5).round().byte().numpy()) for p in decoded]
    reader = load_reader()
    reads = reader.read(pictures)
    misread = {
        a: Counter(
            f"{s.attributes()[a]} as {r[a]}" for s, r in zip(scenes, reads, strict=True) if s.attributes()[a] != r[a]
        )
        for a in IDENTITY
    }
    results = {
        "raw": read_right(reader, [render(s) for s in scenes], scenes),
        "round_trip": read_right(reader, pictures, scenes),
        "misread": {a: dict(c.most_common(6)) for a, c in misread.items()},
        "command": f"python scripts/measure_vq.py {args.folder} --count {args.count}"
        + ("" if args.seed == 0 else f" --seed {args.seed}"),
    }
    print(json.dumps(results, indent=2))
    if args.output is not None:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
