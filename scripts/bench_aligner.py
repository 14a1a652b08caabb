"""Aligner benchmark: seconds to make an instant concept from one photo (read and preprocess the photo, run
the image encoder, run the Aligner), first call and median, at demo sizes and at full size.

    python scripts/bench_aligner.py                    # CPU: demo sizes, then DINOv2-base and -large shapes
    python scripts/bench_aligner.py --device cuda      # the same on a GPU (DINOv2 in bfloat16)

On CPU every measurement is repeated for each torch thread count in `--threads` (default 1 and 2): on a
shared machine, more threads than free cores makes small models much slower, not faster.

Demo: the shipped demo Aligner, which reads photos with the micro-world attribute reader, bound to the demo
model. Full size: DINOv2-base (and -large)
configs with random weights and a paper-sized Aligner (16 queries, 4 blocks, hidden 1024) whose output is
Anole-7b's hidden size 4096, randomly initialized; timing does not depend on the weights. The photo is a
DreamBooth photo from shared/data/dreambooth when present, else a generated 512x512 picture. Results are
printed and saved as JSON (default docs/results/aligner.json).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
from PIL import Image
from transformers import Dinov2Config, Dinov2Model

from engine.aligner.model import (
    Aligner,
    AlignerConfig,
    DinoEncoder,
    LoadedAligner,
    demo_aligner_path,
    instant_state,
    load_aligner,
)
from engine.model.images import open_image
from engine.model.loading import load_model

PHOTO = Path(__file__).resolve().parents[2] / "shared" / "data" / "dreambooth" / "dog" / "00.jpg"
DINO_SHAPES = {
    "dinov2-base": {"hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12},
    "dinov2-large": {"hidden_size": 1024, "num_hidden_layers": 24, "num_attention_heads": 16},
}
TEXT_HIDDEN = 4096


def timed(call: Callable[[], object], device: torch.device, runs: int) -> tuple[float, float]:
    """(first call, median of `runs` further calls) in seconds."""

    def once() -> float:
        started = time.perf_counter()
        call()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return time.perf_counter() - started

    first = once()
    return first, statistics.median(once() for _ in range(runs))


def measure(aligner: LoadedAligner, photo: Path, device: torch.device, runs: int) -> dict[str, float]:
    """The whole instant concept from a file, and its parts: decoding the photo, the encoder with its
    preprocessing, the Aligner."""
    image = open_image(photo)
    size = aligner.aligner.config.image_size
    cls, patches = aligner.encoder.features([image], size)
    whole = timed(lambda: instant_state(aligner, photo, "bo", aligner.base_fingerprint), device, runs)
    with torch.no_grad():
        parts = {
            "read_photo_s": timed(lambda: open_image(photo), device, runs)[1],
            "encoder_s": timed(lambda: aligner.encoder.features([image], size), device, runs)[1],
            "aligner_s": timed(lambda: aligner.aligner(cls.to(device), patches.to(device)), device, runs)[1],
        }
    return {
        "first_call_s": round(whole[0], 4),
        "median_s": round(whole[1], 4),
        **{k: round(v, 4) for k, v in parts.items()},
    }


def by_threads(
    aligner: LoadedAligner, photo: Path, device: torch.device, args: argparse.Namespace
) -> dict[str, object]:
    """`measure` once per thread count on CPU, once on a GPU."""
    if device.type == "cuda":
        return measure(aligner, photo, device, args.runs)
    figures: dict[str, object] = {}
    for threads in args.threads:
        torch.set_num_threads(threads)
        figures[f"threads_{threads}"] = measure(aligner, photo, device, args.runs)
    return figures


def full_size(name: str, device: torch.device) -> LoadedAligner:
    torch.manual_seed(0)
    dino = Dinov2Model(Dinov2Config(image_size=224, patch_size=14, **DINO_SHAPES[name])).eval()
    if device.type == "cuda":
        dino = dino.to(torch.bfloat16)
    config = AlignerConfig(vision_hidden=dino.config.hidden_size, text_hidden=TEXT_HIDDEN)
    aligner = Aligner(config).to(device).eval()
    return LoadedAligner(aligner, DinoEncoder(dino.to(device), name), "random", {})


def parameters(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="torch CPU thread counts")
    parser.add_argument("--dino", nargs="*", default=list(DINO_SHAPES), choices=list(DINO_SHAPES))
    parser.add_argument("--out", type=Path, help="also save the JSON here (the docs use docs/results/aligner.json)")
    args = parser.parse_args()
    device = torch.device(args.device)
    with tempfile.TemporaryDirectory() as folder:
        photo = PHOTO
        if not photo.is_file():
            photo = Path(folder) / "photo.jpg"
            Image.new("RGB", (512, 512), (120, 90, 60)).save(photo)
        loaded = load_model("demo", device=args.device)
        started = time.perf_counter()
        demo = load_aligner(demo_aligner_path(), loaded.fingerprint, device=device)
        results: dict[str, object] = {
            "device": str(device),
            "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
            "torch": torch.__version__,
            "photo": "DreamBooth dog/00.jpg (512x512 JPEG)" if photo == PHOTO else "generated 512x512 JPEG",
            "demo": {
                "what": "micro-world attribute reader (32 px) + demo Aligner (hidden 128, 2 blocks)",
                "load_s": round(time.perf_counter() - started, 4),
                "encoder_parameters": parameters(demo.encoder.reader),
                "aligner_parameters": parameters(demo.aligner),
                **by_threads(demo, photo, device, args),
            },
        }
        for name in args.dino:
            aligner = full_size(name, device)
            results[name] = {
                "what": f"{name} shape, random weights, 224 px + Aligner (16 queries, 4 blocks, hidden 1024) "
                f"-> 33 rows of {TEXT_HIDDEN}",
                "encoder_parameters": parameters(aligner.encoder.model),
                "aligner_parameters": parameters(aligner.aligner),
                **by_threads(aligner, photo, device, args),
            }
            del aligner
    results["peak_memory_gib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 3)
    print(json.dumps(results, indent=2))
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
