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

from engine.microworld.abilities import read_right
from engine.microworld.pretrain import load_vq, scene_pixels
from engine.microworld.reader import load_reader
from engine.microworld.world import IDENTITY, render, sample_scene
from engine.model.images import to_pil


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", type=Path)
    parser.add_argument("--count", type=int, default=600, help="fresh scenes")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2, help="torch threads")
    parser.add_argument("-o", "--output", type=Path, default=None, help="write the figures here as JSON")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    vqmodel, decoder = load_vq(args.folder)
    rng = random.Random(f"familiar-vq-{args.seed}")
    scenes = [sample_scene(rng) for _ in range(args.count)]
    with torch.no_grad():
        codes = vqmodel.encode(scene_pixels(scenes)).image_tokens.reshape(len(scenes), -1)
        pictures = to_pil(decoder(codes))
    reader = load_reader()
    reads = reader.read(pictures)
    truth = [s.attributes() for s in scenes]
    misread = {
        a: Counter(f"{t[a]} as {r[a]}" for t, r in zip(truth, reads, strict=True) if t[a] != r[a]) for a in IDENTITY
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
