"""Build the demo model's bundled offline subset (engine/microworld/subset.py): every micro-world identity in a
few poses, with the attribute reader's embeddings and the demo model's VQ tokens, in the index format.

python scripts/build_demo_subset.py -o resources/demo-subset [--poses 3] [--seed 0] [--model demo] [--replace]

Rerun it whenever the demo model or the reader is retrained: the subset's VQ tokens belong to one build of the
demo model (its fingerprint is in the manifest) and `familiar train` ignores a subset made for another.
"""

from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path

import torch

from engine.microworld.subset import DEFAULT_POSES, DEFAULT_SEED, build_subset, evaluated_scenes, subset_scenes
from engine.model.loading import load_model
from engine.retrieval.embedder import READER_EMBEDDER, load_embedder
from engine.retrieval.index import ImageTokenSource


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-o", "--output", type=Path, required=True, help="the index folder to create")
    parser.add_argument("--poses", type=int, default=DEFAULT_POSES, help="poses per identity (%(default)s)")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED, help="pose seed (%(default)s)")
    parser.add_argument("--model", default="demo", help="the micro-world model whose VQ tokens are stored")
    parser.add_argument("--reader", type=Path, help="attribute reader file (default: the shipped one)")
    parser.add_argument("--replace", action="store_true", help="remove an existing index at --output first")
    args = parser.parse_args()
    torch.set_num_threads(2)
    started = time.monotonic()
    if args.replace and args.output.exists():
        shutil.rmtree(args.output)
    loaded = load_model(args.model, device="cpu")
    embedder = load_embedder(READER_EMBEDDER, args.reader)
    scenes = subset_scenes(args.poses, args.seed, evaluated_scenes())
    tokens = ImageTokenSource(loaded.image_tokenizer, loaded.fingerprint, loaded.source)
    count = build_subset(args.output, scenes, embedder, tokens)
    size = sum(path.stat().st_size for path in args.output.iterdir())
    print(f"wrote {count} scenes to {args.output} ({size / 2**20:.2f} MiB) in {time.monotonic() - started:.0f} s")


if __name__ == "__main__":
    main()
