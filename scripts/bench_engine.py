"""Engine benchmark: model load time, text tokens per second, seconds per image, peak memory.

    python scripts/bench_engine.py                       # the demo model on CPU
    python scripts/bench_engine.py --full-size --device cuda --bandwidth-gbs 3350
                                                         # Anole-7b shape, random weights, 4-bit NF4

The full-size run needs no download: it writes a checkpoint of Anole-7b's shape with random weights, one tensor at
a time (engine/model/synthetic.py), and loads it with `load_model`, 4-bit NF4 on CUDA as a user's checkpoint is.
Results are printed, and saved as JSON with --out. `scripts/gpu_check.sh` runs this and more in one go.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import tempfile
import time
from pathlib import Path

import torch

from engine.inference.assistant import Assistant
from engine.inference.generation import Sampling, sample_image_tokens, stream_text_tokens
from engine.model.loading import LoadedModel, load_model
from engine.model.synthetic import chameleon_7b_config, write_random_model


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _peak_bytes(device: torch.device) -> int:
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def full_size_model(device: torch.device, work: Path | None) -> LoadedModel:
    """Anole-7b's shape with random weights, written to `work` (default: a temporary folder) and loaded from it."""
    folder = Path(work or tempfile.mkdtemp(prefix="familiar-7b-")) / "model"
    if not (folder / "config.json").is_file():
        write_random_model(chameleon_7b_config(), folder, device=device, report=print)
    return load_model(str(folder), device=str(device))


def weight_bytes_per_token(model: torch.nn.Module) -> int:
    """Bytes of weights one decoding step reads: every parameter and buffer except the input embedding
    table (one row is read) and the VQ model (not used while decoding)."""
    total = 0
    for name, tensor in [*model.named_parameters(), *model.named_buffers()]:
        if "vqmodel" in name or "embed_tokens" in name:
            continue
        total += tensor.numel() * tensor.element_size()
    return total


def bench_text(assistant: Assistant, tokens: int) -> float:
    model = assistant.loaded.model
    prompt = assistant.prompts.prompt("Describe the photo in detail.")
    blocked = assistant.loaded.image_tokenizer.image_token_ids
    start = time.perf_counter()
    produced = sum(1 for _ in stream_text_tokens(model, prompt, blocked, [], tokens, Sampling(seed=0)))
    _sync(assistant.loaded.device)
    return produced / (time.perf_counter() - start)


def bench_image(assistant: Assistant, repeats: int) -> tuple[float, float]:
    """(seconds to sample one image's tokens, seconds to decode them to pixels)."""
    tokens = assistant.loaded.image_tokenizer
    prompt = [*assistant.prompts.prompt("A dog reading in a library"), tokens.boi_id]
    sample_times, decode_times = [], []
    for seed in range(repeats):
        start = time.perf_counter()
        ids = sample_image_tokens(
            assistant.loaded.model, prompt, tokens.image_token_ids, tokens.tokens_per_image, Sampling(seed=seed)
        )
        _sync(assistant.loaded.device)
        sample_times.append(time.perf_counter() - start)
        start = time.perf_counter()
        tokens.decode(ids.unsqueeze(0))
        _sync(assistant.loaded.device)
        decode_times.append(time.perf_counter() - start)
    return statistics.median(sample_times), statistics.median(decode_times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--full-size", action="store_true", help="Anole-7b shape, random weights, 4-bit on CUDA")
    parser.add_argument("--work", type=Path, help="folder for the full-size checkpoint (kept; default: a temp)")
    parser.add_argument("--bandwidth-gbs", type=float, default=None, help="device memory bandwidth, GB/s")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--text-tokens", type=int, default=64)
    parser.add_argument("--out", type=Path, help="also save the JSON here (the docs use docs/results/engine.json)")
    args = parser.parse_args()
    device = torch.device(args.device)

    start = time.perf_counter()
    if args.full_size:
        loaded = full_size_model(device, args.work)
        what = "Anole-7b shape, random weights, loaded by load_model (4-bit NF4 decoder layers on CUDA)"
    else:
        loaded = load_model("demo", device=args.device)
        what = "demo model (micro-world, hidden 256, 4 layers), float32"
    _sync(device)
    load_seconds = time.perf_counter() - start
    load_peak = _peak_bytes(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)  # the peak below is chat's and drawing's alone
    assistant = Assistant(loaded)

    text_rate = bench_text(assistant, args.text_tokens)
    sample_seconds, decode_seconds = bench_image(assistant, args.repeats)
    result: dict[str, object] = {
        "model": what,
        "device": str(device) if device.type == "cpu" else torch.cuda.get_device_name(device),
        "cpu": platform.processor() or platform.machine(),
        "torch_threads": torch.get_num_threads(),
        "load_seconds": round(load_seconds, 3),
        "text_tokens_per_second": round(text_rate, 1),
        "image_tokens": loaded.image_tokenizer.tokens_per_image,
        "image_sample_seconds": round(sample_seconds, 3),
        "image_decode_seconds": round(decode_seconds, 3),
        "load_peak_memory_gib": round(load_peak / 2**30, 3),
        "peak_memory_gib": round(_peak_bytes(device) / 2**30, 3),
    }
    if args.bandwidth_gbs:
        per_token = weight_bytes_per_token(loaded.model)
        floor = per_token * loaded.image_tokenizer.tokens_per_image / (args.bandwidth_gbs * 1e9)
        result |= {
            "weight_bytes_per_token": per_token,
            "bandwidth_floor_seconds_per_image": round(floor, 3),
            "image_seconds_over_floor": round(sample_seconds / floor, 2),
        }
    print(json.dumps(result, indent=2))
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
