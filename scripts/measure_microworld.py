"""Measure what the micro-world base model can do (engine/microworld/abilities.py): prints the figures, and
writes them as JSON only where -o says.

python scripts/measure_microworld.py [--model demo] [--count 200] [--threads 2] [-o docs/results/microworld_model.json]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from engine.inference.assistant import Assistant
from engine.microworld.abilities import measure
from engine.microworld.reader import load_reader
from engine.model.loading import load_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="demo")
    parser.add_argument("--count", type=int, default=200, help="scenes per ability")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2, help="torch threads")
    parser.add_argument("-o", "--output", type=Path, default=None, help="write the figures here as JSON")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    started = time.monotonic()
    loaded = load_model(args.model, device="cpu")
    results = measure(Assistant(loaded), load_reader(), args.count, args.seed, lambda m: print(m, flush=True))
    results.update(
        command="python scripts/measure_microworld.py"
        + ("" if args.model == "demo" else f" --model {args.model}")
        + f" --count {args.count}"
        + ("" if args.seed == 0 else f" --seed {args.seed}"),
        model=args.model,
        fingerprint=loaded.fingerprint,
        seconds=round(time.monotonic() - started, 1),
    )
    if args.output is not None:
        args.output.write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8")
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
