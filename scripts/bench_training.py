"""Training benchmark: seconds per optimizer step at batch 4 with full-length image samples, peak memory,
and the projected time of the default recipe for one concept.

    python scripts/bench_training.py                          # demo model, CPU
    python scripts/bench_training.py --full-size --device cuda  # Anole-7b shape, random weights, 4-bit

Every sample here is a full-length image sample (about 1,060 tokens), the most expensive kind, and the
projection assumes every step costs that much, so it is an upper bound (recognition samples are as long,
question-answer samples much shorter). Results are printed, and saved as JSON with --out.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import time
from pathlib import Path

import torch
from PIL import Image

from engine.inference.assistant import Assistant
from engine.model.loading import load_model
from engine.training.data import ConceptData, build_samples
from engine.training.recipe import DEFAULT, Recipe
from engine.training.trainer import Trainer

DEFAULT_PHOTOS = 5
AUGMENTED = 3


def default_recipe_samples(recipe: Recipe) -> int:
    """Samples in a recipe for 5 photos: augmented positives, negatives, ~20 QA, soft positives."""
    photos = DEFAULT_PHOTOS * AUGMENTED
    per_photo = recipe.recognition_per_photo + recipe.generation_per_photo
    return photos * per_photo + recipe.negatives + 20 + recipe.soft_positives


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--full-size", action="store_true", help="Anole-7b shape, random weights, 4-bit on CUDA")
    parser.add_argument("--work", type=Path, help="folder for the full-size checkpoint (kept; default: a temp)")
    parser.add_argument("--micro-batch", type=int, default=4)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--out", type=Path, help="also save the JSON here (the docs use docs/results/training.json)")
    args = parser.parse_args()
    device = torch.device(args.device)
    if args.full_size:
        from bench_engine import full_size_model

        loaded = full_size_model(device, args.work)
        what = "Anole-7b shape, random weights, 4-bit NF4 decoder layers, bf16 autocast, checkpointing"
    else:
        loaded = load_model("demo", device=args.device)
        what = "demo model (micro-world, hidden 256, 4 layers), float32"
    assistant = Assistant(loaded)
    assistant.attach(assistant.slots.initial_state("bo", loaded.tokenizer, "dog"))
    photos = [Image.new("RGB", (512, 512), (40 * i, 90, 160)) for i in range(4)]
    tokens = [row.tolist() for row in loaded.image_tokenizer.encode(photos)]
    config = Recipe(
        epochs=args.steps, micro_batch=args.micro_batch, recognition_per_photo=0, qa_repeats=0, generation_per_photo=1
    )
    samples = build_samples(assistant.prompts, ConceptData("bo", "pet", tokens), config)
    trainer = Trainer(assistant, "bo", samples, config)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times: list[float] = []
    last = [time.perf_counter()]

    def tick(_update: object) -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        now = time.perf_counter()
        times.append(now - last[0])
        last[0] = now

    trainer.run(progress=tick)
    per_step = statistics.median(times[1:]) if len(times) > 1 else times[0]
    peak = (
        torch.cuda.max_memory_allocated(device)
        if device.type == "cuda"
        else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    )
    recipe_samples = default_recipe_samples(DEFAULT)
    recipe_steps = -(-recipe_samples // DEFAULT.batch_size) * DEFAULT.epochs
    result = {
        "model": what,
        "device": str(device) if device.type == "cpu" else torch.cuda.get_device_name(device),
        "batch": config.batch_size,
        "micro_batch": config.micro_batch,
        "tokens_per_sample": len(samples[0].ids),
        "seconds_per_step": round(per_step, 3),
        "steps_per_second": round(1 / per_step, 3),
        "peak_memory_gib": round(peak / 2**30, 3),
        "default_recipe_samples": recipe_samples,
        "default_recipe_steps": recipe_steps,
        "projected_minutes_default_recipe": round(recipe_steps * per_step / 60, 1),
    }
    print(json.dumps(result, indent=2))
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
