"""Engine benchmark: model load time, text tokens per second, seconds per image, peak memory.

    python scripts/bench_engine.py                       # the demo model on CPU
    python scripts/bench_engine.py --full-size --device cuda --bandwidth-gbs 3350
                                                         # Chameleon-7B shape, random weights, 4-bit NF4

The full-size run needs no download: it builds the architecture with random weights and quantizes the
decoder layers the same way loading a checkpoint does. Results are printed and saved as JSON
(default docs/results/engine.json).
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import time
from pathlib import Path

import torch
from transformers import ChameleonConfig

from engine.inference.assistant import Assistant
from engine.inference.generation import Sampling, sample_image_tokens, stream_text_tokens
from engine.model.loading import load_model, random_model

FULL_SIZE_VOCAB = 65536


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _peak_bytes(device: torch.device) -> int:
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def full_size_config() -> ChameleonConfig:
    """Chameleon-7B's shape, with a vocabulary map laid out like the real one (image tokens at 4..8195)."""
    vocabulary = {f"IMGIMG{''.join(chr(65 + int(d)) for d in str(i))}Z": 4 + i for i in range(8192)}
    vocabulary |= {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3, "<eoss>": 8196, "<racm3:break>": 8197}
    vocabulary |= {"<image>": 8711, "<reserved08706>": 8710}
    return ChameleonConfig(vocab_size=FULL_SIZE_VOCAB, vocabulary_map=vocabulary, vq_config={})


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
    parser.add_argument("--full-size", action="store_true", help="Chameleon-7B shape, random weights, 4-bit")
    parser.add_argument("--bandwidth-gbs", type=float, default=None, help="device memory bandwidth, GB/s")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--text-tokens", type=int, default=64)
    parser.add_argument("--out", type=Path, help="also save the JSON here (the docs use docs/results/engine.json)")
    args = parser.parse_args()
    device = torch.device(args.device)

    start = time.perf_counter()
    if args.full_size:
        loaded = random_model(full_size_config(), device, quantize=True)
        what = "Chameleon-7B shape, random weights, 4-bit NF4 decoder layers"
    else:
        loaded = load_model("demo", device=args.device)
        what = "demo model (micro-world, hidden 256, 4 layers), float32"
    _sync(device)
    load_seconds = time.perf_counter() - start
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
