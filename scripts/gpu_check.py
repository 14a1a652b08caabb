"""The GPU check: the product's own loading, training, drawing, chat and instant-concept paths at Anole-7b's size
on one GPU, with times and per-phase memory peaks beside the memory model's predictions. Run by
`scripts/gpu_check.sh` (see docs/benchmarks.md); `--demo` runs the same steps at the demo model's size on the CPU.

No download: the checkpoint is written here with random weights (engine/model/synthetic.py) and loaded through
`load_model` (4-bit NF4 on CUDA, as a user's checkpoint is). Writes `gpu_check.json` into `--out`.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from engine.inference.assistant import Assistant
from engine.inference.generation import Sampling, sample_image_tokens, stream_text_tokens
from engine.model import memory
from engine.model.loading import LoadedModel, demo_model_dir, load_model, read_config
from engine.model.synthetic import chameleon_7b_config, write_random_model
from engine.training.data import ConceptData, build_samples
from engine.training.recipe import Recipe
from engine.training.trainer import Trainer

MICRO_BATCH = 4
GUIDANCE = 3.0


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


class Meter:
    """Wall time and the device's peak allocation of one phase (the peak counter reset at its start)."""

    def __init__(self, device: torch.device) -> None:
        self.device = device

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def run(self, what: Callable[[], Any]) -> tuple[Any, float, float | None]:
        """(result, seconds, peak GiB allocated during it; None on the CPU, where no per-phase counter exists)."""
        if self.device.type == "cuda":
            self.sync()
            torch.cuda.reset_peak_memory_stats(self.device)
        start = time.perf_counter()
        result = what()
        self.sync()
        seconds = time.perf_counter() - start
        peak = torch.cuda.max_memory_allocated(self.device) / 2**30 if self.device.type == "cuda" else None
        return result, seconds, peak


def bandwidth_gbs(device: torch.device, gib: float) -> float:
    """Device memory bandwidth from copying a `gib` buffer (read + write), median of 5 after a warm-up."""
    elements = int(gib * 2**30) // 4
    buffers = [torch.empty(elements, dtype=torch.float32, device=device) for _ in range(2)]
    meter = Meter(device)
    times = [meter.run(lambda: buffers[1].copy_(buffers[0]))[1] for _ in range(6)]
    buffers.clear()
    return 2 * elements * 4 / statistics.median(times[1:]) / 1e9


def decode_bytes_per_token(loaded: LoadedModel) -> int:
    """Bytes one decoding step must read: every weight except the input embedding table (one row is read), the
    VQ model, and the output head outside the image rows (the fast decoder reads only those inside a picture)."""
    total = 0
    for name, tensor in [*loaded.model.named_parameters(), *loaded.model.named_buffers()]:
        if "vqmodel" in name or "embed_tokens" in name:
            continue
        if "lm_head" in name:
            rows = len(loaded.image_tokenizer.image_token_ids)
            total += rows * tensor.shape[1] * tensor.element_size()
            continue
        total += tensor.numel() * tensor.element_size()
    return total


def photos(size: int, count: int) -> list[Image.Image]:
    return [Image.new("RGB", (size, size), (40 + 50 * i, 90, 160)) for i in range(count)]


def train_phase(assistant: Assistant, meter: Meter, steps: int, checkpointing: bool | None) -> dict[str, Any]:
    """`steps` training steps at `MICRO_BATCH` image samples a step; `checkpointing` None as the product chooses
    (`engine.model.memory.training_shape`), True forced on at `MICRO_BATCH`."""
    loaded = assistant.loaded
    if "bo" in assistant.slots.names():  # trained by the phase before: start afresh
        assistant.slots.detach("bo")
    assistant.attach(assistant.slots.initial_state("bo", loaded.tokenizer, "dog"))
    tokens = [row.tolist() for row in loaded.image_tokenizer.encode(photos(loaded.image_tokenizer.resolution, 4))]
    recipe = Recipe(
        epochs=steps,
        batch_size=MICRO_BATCH,
        micro_batch=MICRO_BATCH,
        recognition_per_photo=0,
        qa_repeats=0,
        generation_per_photo=1,
        augment=False,
        soft_positives=0,
        negatives=0,
    )
    samples = build_samples(assistant.prompts, ConceptData("bo", "pet", tokens), recipe)
    trainer = Trainer(assistant, "bo", samples, recipe)
    if checkpointing:
        trainer.micro_batch, trainer.checkpointing = MICRO_BATCH, True
    ticks: list[float] = []
    trainer_run = lambda: trainer.run(progress=lambda _p: (meter.sync(), ticks.append(time.perf_counter())))  # noqa: E731
    start = time.perf_counter()
    _, seconds, peak = meter.run(trainer_run)
    times = [b - a for a, b in zip([start, *ticks], ticks, strict=False)]
    length = max(len(s.ids) for s in samples)
    shape = memory.TrainingShape(trainer.micro_batch, trainer.checkpointing)
    predicted = memory.training_step(loaded.config, loaded.dtype, loaded.quantized, shape)
    return {
        "micro_batch": trainer.micro_batch,
        "checkpointing": trainer.checkpointing,
        "tokens_per_sample": length,
        "steps": len(times),
        "seconds_first_step": round(times[0], 3),
        "seconds_per_step": round(statistics.median(times[1:] or times), 3),
        "seconds": round(seconds, 2),
        "peak_gib": None if peak is None else round(peak, 3),
        "predicted_peak_gib": round(predicted.peak / 2**30, 3),
    }


def image_phase(assistant: Assistant, meter: Meter, bandwidth: float | None, repeats: int) -> dict[str, Any]:
    loaded = assistant.loaded
    tokens = loaded.image_tokenizer
    prompt = [*assistant.prompts.prompt("A dog reading in a library"), tokens.boi_id]
    unconditional = [*assistant.prompts.prompt("", None, []), tokens.boi_id]
    concept = [
        *assistant.prompts.prompt("A photo of <bo> at the beach", None, ["bo"]),
        *assistant.prompts.self_prompt(["bo"], "image"),
        tokens.boi_id,
    ]

    def draw(ids: list[int], guidance: float, seed: int) -> torch.Tensor:
        return sample_image_tokens(
            loaded.model,
            ids,
            tokens.image_token_ids,
            tokens.tokens_per_image,
            Sampling(seed=seed),
            guidance_scale=guidance,
            unconditional_ids=unconditional if guidance != 1.0 else None,
        )

    result: dict[str, Any] = {"tokens_per_image": tokens.tokens_per_image}
    for case, ids, guidance in (("plain", prompt, 1.0), ("guided", prompt, GUIDANCE), ("concept", concept, 1.0)):
        if loaded.device.type == "cuda":
            draw(ids, guidance, 0)  # warm-up: compiles the decode step
        runs = [meter.run(lambda i=ids, g=guidance, s=seed: draw(i, g, s)) for seed in range(repeats)]
        result[f"{case}_seconds"] = round(statistics.median(r[1] for r in runs), 3)
        peaks = [r[2] for r in runs if r[2] is not None]
        result[f"{case}_peak_gib"] = round(max(peaks), 3) if peaks else None
    image_ids = runs[0][0]
    _, decode_seconds, _ = meter.run(lambda: tokens.decode(image_ids.unsqueeze(0)))
    result["vq_decode_seconds"] = round(decode_seconds, 3)
    per_token = decode_bytes_per_token(loaded)
    result["weight_bytes_per_token"] = per_token
    if bandwidth:
        floor = per_token * tokens.tokens_per_image / (bandwidth * 1e9)
        result["floor_seconds"] = round(floor, 3)
        result["plain_over_floor"] = round(result["plain_seconds"] / floor, 2)
        result["guided_over_floor"] = round(result["guided_seconds"] / (2 * floor), 2)
    return result


def text_phase(assistant: Assistant, meter: Meter, count: int) -> dict[str, Any]:
    model = assistant.loaded.model
    prompt = assistant.prompts.prompt("Describe the photo in detail.")
    blocked = assistant.loaded.image_tokenizer.image_token_ids

    def stream() -> int:
        return sum(1 for _ in stream_text_tokens(model, prompt, blocked, [], count, Sampling(seed=0)))

    stream()
    produced, seconds, _ = meter.run(stream)
    return {"tokens": produced, "tokens_per_second": round(produced / seconds, 1)}


def instant_phase(loaded: LoadedModel, meter: Meter, work: Path, demo: bool) -> dict[str, Any]:
    """A random Aligner of the product's default size over a DINOv2 loaded as the product loads one."""
    from transformers import Dinov2Config, Dinov2Model

    from engine.aligner.model import Aligner, AlignerConfig, LoadedAligner, instant_state, load_dinov2

    folder = work / "dinov2"
    torch.manual_seed(0)
    dino_config = (
        Dinov2Config(hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=128)
        if demo
        else Dinov2Config()
    )
    Dinov2Model(dino_config).save_pretrained(folder)
    encoder = load_dinov2(folder, loaded.device)
    config = AlignerConfig(vision_hidden=encoder.hidden_size, text_hidden=loaded.config.hidden_size)
    aligner = Aligner(config).to(loaded.device).eval()
    bound = LoadedAligner(aligner, encoder, loaded.fingerprint, {})
    photo = photos(512, 1)[0]
    instant_state(bound, photo, "bo", loaded.fingerprint)  # warm-up
    runs = [meter.run(lambda: instant_state(bound, photo, "bo", loaded.fingerprint)) for _ in range(3)]
    return {
        "dinov2_hidden": encoder.hidden_size,
        "seconds": round(statistics.median(r[1] for r in runs), 4),
        "peak_gib": None if runs[0][2] is None else round(max(r[2] for r in runs), 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--demo", action="store_true", help="the demo model's size on the CPU (a rehearsal)")
    parser.add_argument("--out", type=Path, required=True, help="folder for gpu_check.json")
    parser.add_argument("--work", type=Path, default=None, help="folder for the random checkpoint (default: a temp)")
    parser.add_argument("--train-steps", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=None, help="draws per case (default: 2 on CUDA, 1 with --demo)")
    parser.add_argument("--text-tokens", type=int, default=64)
    args = parser.parse_args()
    repeats = args.repeats or (1 if args.demo else 2)
    device = torch.device("cpu" if args.demo else "cuda")
    if device.type == "cuda" and not torch.cuda.is_available():
        sys.exit("gpu_check: no CUDA device; use --demo to rehearse on the CPU")
    torch.set_num_threads(min(torch.get_num_threads(), 16))
    args.out.mkdir(parents=True, exist_ok=True)
    work = args.work or Path(tempfile.mkdtemp(prefix="familiar-gpu-check-"))
    meter = Meter(device)
    result: dict[str, Any] = {
        "mode": "demo" if args.demo else "full",
        "device": "cpu: " + (platform.processor() or platform.machine())
        if args.demo
        else torch.cuda.get_device_name(device),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }

    def save() -> None:
        (args.out / "gpu_check.json").write_text(json.dumps(result, indent=2) + "\n")

    try:
        if device.type == "cuda":
            result["bandwidth_gbs"] = round(bandwidth_gbs(device, 2.0), 1)
            log(f"bandwidth {result['bandwidth_gbs']} GB/s")
        config = read_config(demo_model_dir()) if args.demo else chameleon_7b_config()
        folder = work / "model"
        _, seconds, _ = meter.run(lambda: write_random_model(config, folder, device=device, report=log))
        result["checkpoint"] = {
            "seconds": round(seconds, 1),
            "gib": round(sum(f.stat().st_size for f in folder.iterdir()) / 2**30, 2),
        }
        save()
        log("loading")
        shape = memory.TrainingShape(MICRO_BATCH, memory.can_checkpoint(device))
        loaded, seconds, peak = meter.run(
            lambda: load_model(str(folder), device=str(device), train_micro_batch=MICRO_BATCH)
        )
        estimate = memory.estimate_memory(loaded.config, device, loaded.dtype, loaded.quantized, shape)
        result["load"] = {
            "seconds": round(seconds, 1),
            "quantized": loaded.quantized,
            "dtype": str(loaded.dtype).removeprefix("torch."),
            "peak_gib": None if peak is None else round(peak, 3),
            "predicted_weights_gib": round(
                memory.weight_bytes(loaded.config, loaded.dtype, loaded.quantized) / 2**30, 3
            ),
            "predicted_needed_gib": round(estimate.needed / 2**30, 3),
        }
        if device.type == "cuda":
            result["load"]["allocated_after_gib"] = round(torch.cuda.memory_allocated(device) / 2**30, 3)
        save()
        assistant = Assistant(loaded)
        for name, phase in (
            ("train", lambda: train_phase(assistant, meter, args.train_steps, None)),
            ("train_checkpointed", lambda: train_phase(assistant, meter, args.train_steps, True)),
            ("image", lambda: image_phase(assistant, meter, result.get("bandwidth_gbs"), repeats)),
            ("text", lambda: text_phase(assistant, meter, args.text_tokens)),
            ("instant", lambda: instant_phase(loaded, meter, work, args.demo)),
        ):
            log(name)
            try:
                result[name] = phase()
            except Exception as exc:  # one failing phase must not cost the others' figures
                result[name] = {"error": f"{type(exc).__name__}: {exc}"}
            save()
            log(f"{name}: {result[name]}")
    finally:
        result["max_rss_gib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2)
        save()
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
