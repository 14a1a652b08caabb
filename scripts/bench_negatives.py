"""The personalization benchmark with another count of training negatives than its 30 (session 41: the product's
200 against 40), which `familiar bench personalization` does not expose. Writes the results JSON to `-o` only.

    python scripts/bench_negatives.py 200 --conditions trained description_untrained text_prompt --seed 62 -o X.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from engine.inference.assistant import Assistant
from engine.microworld.benchmark import BenchSettings, run_seeds
from engine.microworld.reader import load_reader
from engine.model.loading import load_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("negatives", type=int, help="training negatives per concept (a fifth held out for scoring)")
    parser.add_argument("--conditions", nargs="+", default=["trained"], help="benchmark conditions (default: trained)")
    parser.add_argument("--concepts", type=int, default=16, help="concepts per seed (default: 16)")
    parser.add_argument("--seed", type=int, default=0, help="the first seed (default: 0)")
    parser.add_argument("--seeds", type=int, default=2, help="seeds to run (default: 2)")
    parser.add_argument("-o", "--output", type=Path, required=True, help="results JSON to write")
    args = parser.parse_args()
    torch.set_num_threads(2)
    settings = BenchSettings(
        concepts=args.concepts, seed=args.seed, train_negatives=args.negatives, conditions=tuple(args.conditions)
    )
    settings.validate()
    started = time.monotonic()
    results, _ = run_seeds(Assistant(load_model("demo", device="cpu")), load_reader(), settings, args.seeds, print)
    conditions = " ".join(args.conditions)
    results["command"] = (
        f"python scripts/bench_negatives.py {args.negatives} --conditions {conditions} --concepts {args.concepts} "
        f"--seed {args.seed} --seeds {args.seeds} -o {args.output}"
    )
    args.output.write_text(json.dumps(results, indent=1) + "\n")
    print(f"wrote {args.output} in {time.monotonic() - started:.0f} s")


if __name__ == "__main__":
    main()
