"""Train the micro-world's attribute reader and measure it on held-out scenes.

    python scripts/train_reader.py                      # seed 0, 3000 steps of 64 fresh scenes, 1 thread

Writes the reader to resources/microworld-reader.safetensors, and to docs/results/microworld_reader.json its
held-out accuracy per attribute (on clean renders, through a mild blur, through blur plus pixel noise, and under
three stronger corruptions) and its embedding's similarity figures. Held-out scenes come from their own seed,
never the training seed. On a shared machine keep --threads at 1 or 2: more threads than free cores makes a
small CNN much slower.
"""

from __future__ import annotations

import argparse
import io
import json
import platform
import random
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageFilter

from engine.microworld.reader import (
    AttributeReader,
    accuracy,
    held_out_scenes,
    load_reader,
    train_reader,
)
from engine.microworld.world import one_change, render, sample_pose

ROOT = Path(__file__).resolve().parents[1]
BLUR_RADIUS = 0.7
NOISE_STD = 6.0


def blur(image: Image.Image) -> Image.Image:
    """A mild Gaussian blur (PIL radius 0.7 px), about what a VQ decoder's softness looks like at 32x32."""
    return image.filter(ImageFilter.GaussianBlur(BLUR_RADIUS))


def blur_noise(seed: int):
    """The mild blur plus Gaussian pixel noise (std 6 of 255), deterministic from `seed`."""
    rng = np.random.default_rng(seed)

    def transform(image: Image.Image) -> Image.Image:
        pixels = np.asarray(blur(image), dtype=np.float32) + rng.normal(0.0, NOISE_STD, (32, 32, 3))
        return Image.fromarray(np.clip(np.rint(pixels), 0, 255).astype(np.uint8), "RGB")

    return transform


def strong_blur(image: Image.Image) -> Image.Image:
    """A stronger Gaussian blur (radius 1.3 px), beyond the training augmentation's range."""
    return image.filter(ImageFilter.GaussianBlur(1.3))


def down_up(image: Image.Image) -> Image.Image:
    """Bilinear round trip through 16x16: half the resolution, like a coarse VQ decoder."""
    return image.resize((16, 16), Image.Resampling.BILINEAR).resize((32, 32), Image.Resampling.BILINEAR)


def jpeg(image: Image.Image) -> Image.Image:
    """JPEG at quality 50 (blocky colour artefacts; not in the training augmentation)."""
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=50)
    buffer.seek(0)
    with Image.open(buffer) as decoded:
        return decoded.convert("RGB")


def similarity(reader: AttributeReader, count: int, seed: int) -> dict[str, float]:
    """Mean cosine similarity of a scene's embedding to: the same creature in another pose, the creature with
    one identity attribute changed (same pose), and an unrelated random scene."""
    rng = random.Random(seed)
    scenes = held_out_scenes(count, seed)
    other_pose = [sample_pose(s.identity, rng) for s in scenes]
    changed = [type(s)(one_change(s.identity, rng), s.size, s.position, s.background, s.dx, s.dy) for s in scenes]
    unrelated = held_out_scenes(count, seed + 1)
    base = reader.embed([render(s) for s in scenes])

    def mean_cos(others: list) -> float:
        return round(float((base * reader.embed([render(s) for s in others])).sum(axis=1).mean()), 4)

    return {
        "same_identity_other_pose": mean_cos(other_pose),
        "one_identity_change_same_pose": mean_cos(changed),
        "unrelated_scene": mean_cos(unrelated),
    }


def rounded(figures: dict[str, float]) -> dict[str, float]:
    return {k: round(v, 4) for k, v in figures.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--no-augmentation", action="store_true", help="train on clean renders only")
    parser.add_argument("--threads", type=int, default=1, choices=[1, 2], help="torch CPU threads")
    parser.add_argument("--held-out", type=int, default=2000, help="held-out scenes to measure on")
    parser.add_argument("--held-out-seed", type=int, default=12345)
    parser.add_argument("--out", type=Path, default=ROOT / "resources" / "microworld-reader.safetensors")
    parser.add_argument("--results", type=Path, default=ROOT / "docs" / "results" / "microworld_reader.json")
    args = parser.parse_args()
    if args.held_out_seed == args.seed:
        parser.error("--held-out-seed must differ from --seed")
    torch.set_num_threads(args.threads)

    reader, report = train_reader(
        seed=args.seed,
        steps=args.steps,
        batch=args.batch,
        lr=args.lr,
        augmentation=not args.no_augmentation,
        progress=lambda p: print(f"step {p.step}/{p.total}: loss {p.loss:.4f}", flush=True),
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    reader.save(args.out, extra={"training": json.dumps({k: v for k, v in report.items() if k != "losses"})})
    reader = load_reader(args.out)  # measure what was written

    started = time.perf_counter()
    scenes = held_out_scenes(args.held_out, args.held_out_seed)
    results = {
        "command": "python " + " ".join([Path(__file__).relative_to(ROOT).as_posix(), *sys.argv[1:]]),
        "reader": str(args.out.relative_to(ROOT)) if args.out.is_relative_to(ROOT) else str(args.out),
        "file_bytes": args.out.stat().st_size,
        "training": report,
        "held_out": {"scenes": args.held_out, "seed": args.held_out_seed},
        "accuracy_clean": rounded(accuracy(reader, scenes)),
        "accuracy_blur": rounded(accuracy(reader, scenes, blur)),
        "accuracy_blur_noise": rounded(accuracy(reader, scenes, blur_noise(args.held_out_seed))),
        "accuracy_stress": {
            "blur_1.3": rounded(accuracy(reader, scenes, strong_blur)),
            "down_up_16": rounded(accuracy(reader, scenes, down_up)),
            "jpeg_50": rounded(accuracy(reader, scenes, jpeg)),
        },
        "chance": rounded({name: 1 / len(values) for name, values in reader.config.values.items()}),
        "embedding_cosine": similarity(reader, 500, args.held_out_seed + 7),
        "corruptions": (
            f"blur: PIL GaussianBlur({BLUR_RADIUS}); blur_noise: that plus N(0, {NOISE_STD}/255) noise; stress: "
            "GaussianBlur(1.3), bilinear 32->16->32, JPEG quality 50"
        ),
        "machine": {"platform": platform.platform(), "torch": torch.__version__, "threads": args.threads},
    }
    results["evaluate_seconds"] = round(time.perf_counter() - started, 1)
    args.results.parent.mkdir(parents=True, exist_ok=True)
    args.results.write_text(json.dumps(results, indent=2) + "\n")
    for key in ("accuracy_clean", "accuracy_blur", "accuracy_blur_noise"):
        print(key, json.dumps(results[key]))
    for key, figures in results["accuracy_stress"].items():
        print(f"stress {key}: mean {figures['mean']}, identity_exact {figures['identity_exact']}")
    print("embedding_cosine", json.dumps(results["embedding_cosine"]))
    print(f"trained in {report['train_seconds']} s ({report['parameters']} parameters); wrote {args.out}")


if __name__ == "__main__":
    main()
