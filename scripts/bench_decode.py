"""Image decoding benchmark: seconds per image for the reference loop and the fast decoder.

    python scripts/bench_decode.py                         # the demo model on CPU, printed only
    python scripts/bench_decode.py --guidance 3 --out docs/results/decode.json

Both paths draw one image for the same prompt and seed, after one warm-up image each, alternating; the
figure is the median over `--repeats` images. The script also checks that both drew the same tokens.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch

from engine.inference.assistant import Assistant
from engine.inference.generation import Sampling, sample_image_tokens
from engine.model.loading import load_model


def _timed(draw: Callable[[], torch.Tensor], device: torch.device) -> tuple[float, torch.Tensor]:
    """Seconds for one call, and its tokens."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    tokens = draw()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start, tokens


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="demo", help="a model folder, or 'demo' (default)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--guidance", type=float, default=1.0, help="classifier-free guidance scale")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, help="also save the results as JSON here")
    args = parser.parse_args()

    assistant = Assistant(load_model(args.model, device=args.device))
    model, tokens = assistant.loaded.model, assistant.loaded.image_tokenizer
    device = model.get_input_embeddings().weight.device
    prompt = [*assistant.prompts.prompt("A red creature on a hill", None, []), tokens.boi_id]
    unconditional = [*assistant.prompts.prompt("", None, []), tokens.boi_id]

    def draw(reference: bool) -> torch.Tensor:
        return sample_image_tokens(
            model,
            prompt,
            tokens.image_token_ids,
            tokens.tokens_per_image,
            Sampling(seed=args.seed),
            guidance_scale=args.guidance,
            unconditional_ids=unconditional,
            reference=reference,
        )

    paths = {"reference": lambda: draw(True), "fast": lambda: draw(False)}
    times: dict[str, list[float]] = {name: [] for name in paths}
    drawn = {name: path() for name, path in paths.items()}  # warm-up
    for _ in range(args.repeats):  # interleaved, so both paths see the same load on a shared machine
        for name, path in paths.items():
            seconds, drawn[name] = _timed(path, device)
            times[name].append(seconds)
    reference_s, fast_s = (statistics.median(times[name]) for name in paths)
    reference_tokens, fast_tokens = drawn["reference"], drawn["fast"]
    results = {
        "model": args.model,
        "device": str(device),
        "threads": torch.get_num_threads(),
        "platform": platform.platform(),
        "torch": torch.__version__,
        "tokens_per_image": tokens.tokens_per_image,
        "guidance_scale": args.guidance,
        "repeats": args.repeats,
        "reference_s_per_image": reference_s,
        "fast_s_per_image": fast_s,
        "speedup": reference_s / fast_s,
        "same_tokens": bool(torch.equal(reference_tokens, fast_tokens)),
    }
    print(
        f"{args.model} on {device}, {tokens.tokens_per_image} tokens per image, guidance {args.guidance}: "
        f"reference {reference_s:.3f} s/image, fast {fast_s:.3f} s/image, "
        f"speed-up {results['speedup']:.2f}x, same tokens: {results['same_tokens']}"
    )
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
