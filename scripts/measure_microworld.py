"""Measure what the micro-world base model can do (engine/microworld/abilities.py) and save the figures.

python scripts/measure_microworld.py [--model demo] [--count 200] [-o docs/results/microworld_model.json]
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

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="demo")
    parser.add_argument("--count", type=int, default=200, help="scenes per ability")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("-o", "--output", type=Path, default=ROOT / "docs" / "results" / "microworld_model.json")
    args = parser.parse_args()
    torch.set_num_threads(2)
    started = time.monotonic()
    loaded = load_model(args.model, device="cpu")
    results = measure(Assistant(loaded), load_reader(), args.count, args.seed, lambda m: print(m, flush=True))
    results.update(
        command=f"python scripts/measure_microworld.py --count {args.count}",
        model=loaded.source,
        fingerprint=loaded.fingerprint,
        seconds=round(time.monotonic() - started, 1),
    )
    args.output.write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8")
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
