"""Where training takes a concept's rows on the micro-world (session 42, docs/personalization.md, "Along the
training path"): each benchmark concept is trained once by the benchmark's recipe, then the start rows, the chosen
rows, the last epoch's rows and blends `start + a * (last - start)` are measured; each `--variant` trains again with
recipe changes and measures its last epoch's rows (no checkpoint selection). Besides the benchmark's metrics, each
is asked about the concept's own training photos and its held-out photo (`SEEN`). Writes the results JSON to `-o`
only.

    python scripts/bench_trajectory.py --seed 20 --seeds 2 --blends 0.25 0.5 0.75 1.5 -o X.json
    python scripts/bench_trajectory.py --seed 20 --variant 'no_soft={"soft_positives": 0}' \
        --variant 'anchor100={"anchor": 100}' -o Y.json

A variant's `anchor` (not a `Recipe` field) pulls the rows back towards the start rows after every optimizer step,
by `learning rate x anchor` of the distance (a decoupled L2 penalty towards the start, as AdamW's weight decay is
towards zero); this script patches `torch.optim.AdamW.step` for that while such a variant trains.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from engine.concepts.prompts import Prompts
from engine.concepts.state import ConceptState
from engine.inference.assistant import Assistant
from engine.microworld.benchmark import BenchConcept, Benchmark, BenchSettings, make_concepts, mean_and_error, render
from engine.microworld.reader import load_reader
from engine.model.loading import load_model
from engine.training.data import describe_photos
from engine.training.personalization import Personalized, Scored

SHOWN = ("recognition_weighted", "recognition_positive", "recognition_negative", "generation_attribute_accuracy")
SEEN = ("recognition_seen", "recognition_held_out")
"""The concept's own training photos (not their augmentations), and the one photo held out to score checkpoints."""


@contextmanager
def anchored(weight: float) -> Iterator[None]:
    """While inside, every AdamW step is followed by `p -= lr * weight * (p - p_start)`, where `p_start` is the
    parameter before that optimizer's first step."""
    original = torch.optim.AdamW.step
    starts: dict[int, list[list[torch.Tensor]]] = {}

    def step(self: torch.optim.AdamW, *args: Any, **kwargs: Any) -> Any:
        first = starts.setdefault(id(self), [[p.detach().clone() for p in g["params"]] for g in self.param_groups])
        out = original(self, *args, **kwargs)
        with torch.no_grad():
            for group, group_starts in zip(self.param_groups, first, strict=True):
                for parameter, start in zip(group["params"], group_starts, strict=True):
                    parameter.sub_(group["lr"] * weight * (parameter - start))
        return out

    torch.optim.AdamW.step = step  # type: ignore[method-assign]
    try:
        yield
    finally:
        torch.optim.AdamW.step = original  # type: ignore[method-assign]


def blend(start: ConceptState, end: ConceptState, share: float) -> ConceptState:
    """`start + share * (end - start)`, row by row."""
    return replace(
        start, embed=start.embed + share * (end.embed - start.embed), head=start.head + share * (end.head - start.head)
    )


class Trajectory:
    """Trains and measures one seed's concepts on a `Benchmark`."""

    def __init__(self, bench: Benchmark) -> None:
        self.bench = bench
        self.assistant = bench.assistant

    def train(
        self, concept: BenchConcept, descriptions: list[str], changes: dict[str, Any]
    ) -> tuple[Personalized, list[Scored]]:
        """One training run by the benchmark's recipe with `changes`, and every candidate it scored (step 0 first);
        the concept is left attached."""
        changes = dict(changes)
        weight = float(changes.pop("anchor", 0.0))
        recipe = replace(self.bench.settings.recipe(), **changes)
        loaded = self.assistant.loaded
        tokens = loaded.image_tokenizer
        self.assistant.prompts = Prompts(
            loaded.tokenizer, self.assistant.slots, tokens.boi_id, tokens.eoi_id, recipe.layout
        )
        scored: list[Scored] = []
        with anchored(weight):
            run = self.bench.train(concept, recipe, descriptions, on_checkpoint=scored.append)
        return run, sorted(scored, key=lambda s: s.checkpoint.step)

    def measure(self, concept: BenchConcept, key: str, state: ConceptState) -> dict[str, float]:
        self.assistant.slots.load(concept.name, state)
        subject = f"<{concept.name}>"
        names = [concept.name]
        metrics = self.bench.measure(concept, key, subject, f"A photo of {subject}.", names)
        seen = self.bench.yes_rate(subject, concept.train[:-1], names)
        held_out = self.bench.yes_rate(subject, concept.train[-1:], names)
        return {**metrics, "recognition_seen": seen, "recognition_held_out": held_out}

    def concept(
        self, concept: BenchConcept, blends: list[float], variants: dict[str, dict[str, Any]]
    ) -> dict[str, Any]:
        descriptions = describe_photos(self.assistant, [render(s) for s in concept.train[:-1]])
        try:
            run, scored = self.train(concept, descriptions, {})
            start, last = scored[0].checkpoint.state, scored[-1].checkpoint.state
            states = {"start": start, "chosen": run.chosen.checkpoint.state, "last": last}
            states |= {f"blend_{share:g}": blend(start, last, share) for share in blends}
            results: dict[str, Any] = {}
            for key, state in states.items():
                results[key] = {**self.measure(concept, key, state), "moved": moved(start, state)}
            for key, changes in variants.items():
                self.assistant.slots.detach(concept.name)
                _, other = self.train(concept, descriptions, changes)
                end = other[-1].checkpoint.state
                results[key] = {**self.measure(concept, key, end), "moved": moved(other[0].checkpoint.state, end)}
        finally:
            if concept.name in self.assistant.slots.names():
                self.assistant.slots.detach(concept.name)
            self.assistant.prompts = self.bench.base_prompts
        seed, step = self.bench.settings.seed, run.chosen.checkpoint.step
        return {"name": concept.name, "seed": seed, "chosen_step": step, "conditions": results}


def moved(start: ConceptState, state: ConceptState) -> float:
    """The mean L2 distance of the embedding rows from the start rows'."""
    return float((state.embed - start.embed).norm(dim=1).mean())


def summary(per_concept: list[dict[str, Any]]) -> dict[str, Any]:
    """Means over units and each condition minus the start rows, paired per unit (± standard error)."""
    out: dict[str, Any] = {}
    for key in per_concept[0]["conditions"]:
        row: dict[str, Any] = {}
        for metric in (*SHOWN, *SEEN, "qa_accuracy", "moved"):
            row[metric] = mean_and_error([u["conditions"][key][metric] for u in per_concept])
        for metric in ("recognition_weighted", "generation_attribute_accuracy"):
            diffs = [u["conditions"][key][metric] - u["conditions"]["start"][metric] for u in per_concept]
            row[f"{metric}_minus_start"] = mean_and_error(diffs)
        out[key] = row
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--concepts", type=int, default=16, help="concepts per seed (default: 16)")
    parser.add_argument("--seed", type=int, default=0, help="the first seed (default: 0)")
    parser.add_argument("--seeds", type=int, default=1, help="seeds to run (default: 1)")
    parser.add_argument(
        "--train-renders", type=int, default=4, help="renders per concept, the last held out (default: 4)"
    )
    parser.add_argument("--blends", type=float, nargs="*", default=[], help="shares of the way to the last epoch")
    parser.add_argument(
        "--variant", action="append", default=[], help="NAME=JSON recipe changes (and `anchor`), trained again"
    )
    parser.add_argument("-o", "--output", type=Path, required=True, help="results JSON to write")
    args = parser.parse_args()
    variants = {}
    for text in args.variant:
        name, _, changes = text.partition("=")
        variants[name] = json.loads(changes)
    torch.set_num_threads(2)
    started = time.monotonic()
    assistant = Assistant(load_model("demo", device="cpu"))
    reader = load_reader()
    per_concept = []
    for seed in range(args.seed, args.seed + args.seeds):
        settings = BenchSettings(
            concepts=args.concepts, seed=seed, train_renders=args.train_renders, conditions=("trained",)
        )
        trajectory = Trajectory(Benchmark(assistant, reader, settings))
        for concept in make_concepts(settings):
            unit = trajectory.concept(concept, args.blends, variants)
            per_concept.append(unit)
            line = " ".join(
                f"{k} {v['recognition_weighted']:.2f}/{v['generation_attribute_accuracy']:.2f}"
                for k, v in unit["conditions"].items()
            )
            print(f"seed {seed} <{concept.name}>: {line} ({time.monotonic() - started:.0f} s)", flush=True)
    results = {
        "command": shlex.join(["python", "scripts/bench_trajectory.py", *sys.argv[1:]]),
        "seconds": round(time.monotonic() - started, 1),
        "summary": summary(per_concept),
        "per_concept": per_concept,
    }
    args.output.write_text(json.dumps(results, indent=1) + "\n")
    for key, row in results["summary"].items():
        means = " ".join(f"{m} {row[m][0]:.3f}" for m in (*SHOWN, "moved"))
        rec, drawn = row["recognition_weighted_minus_start"], row["generation_attribute_accuracy_minus_start"]
        print(f"{key}: {means}; - start {rec[0]:+.3f} ± {rec[1]:.3f}, {drawn[0]:+.3f} ± {drawn[1]:.3f}")
    print(f"wrote {args.output} in {time.monotonic() - started:.0f} s")


if __name__ == "__main__":
    main()
