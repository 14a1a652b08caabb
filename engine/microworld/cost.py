"""Cost against quality (`familiar bench cost`): the recipe's test quality after every epoch, against optimizer
steps and FLOPs, and the cheapest policy (fewer epochs, early stopping, fewer soft positives) that keeps the full
recipe's quality.

Each run (a benchmark concept of a seed; `trained` or `refined`; a share of the soft positives) trains every epoch
of the full recipe without early stopping, and every candidate (the start rows and each epoch's checkpoint) is
measured on the test renders as the benchmark measures its conditions. Training is deterministic and a shorter run
is a prefix of a longer one (a constant learning rate; each epoch's order depends on the seed and the epoch only),
so a cheaper policy, at most E epochs and stopping after P epochs without a better held-out score, is read off the
same run (`follow`): where it stops and which candidate its selection keeps come from the product's own selection
functions on the held-out scores, and its quality is that candidate's test measurement. The test renders choose
nothing but the policy itself (`cheapest`), which is the point of the study.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np
import torch

from engine.inference.assistant import Assistant
from engine.microworld.benchmark import (
    CONDITIONS,
    FULL_SOFT_POSITIVES,
    QUICK,
    BenchConcept,
    Benchmark,
    BenchSettings,
    Report,
    make_concepts,
    mean_and_error,
)
from engine.microworld.reader import AttributeReader
from engine.microworld.world import render
from engine.model.loading import loaded_training_shape
from engine.progress import Progress, ProgressCallback
from engine.training.cost import flop_per_token
from engine.training.data import describe_photos
from engine.training.personalization import Scored, best, epochs_without_improvement
from engine.training.recipe import DEFAULT, PAPER

FULL_EPOCHS = PAPER.epochs
"""The paper's epochs: the full recipe every policy is compared with."""
PATIENCES = (0, 1, 2, 3)
KEEP = 0.95
"""A policy keeps the full recipe's quality when both headline metrics reach this share of the full recipe's."""
HEADLINE = ("recognition_weighted", "generation_attribute_accuracy")
MEASURED = (*HEADLINE, "qa_accuracy", "generation_similarity")


@dataclass(frozen=True)
class CostSettings:
    """The benchmark's concepts and recipe at the full epochs; `shares` of the benchmark's soft positives to run
    (the first is the full recipe's), each for every condition."""

    bench: BenchSettings = field(
        default_factory=lambda: replace(QUICK, concepts=3, epochs=FULL_EPOCHS, soft_positives=FULL_SOFT_POSITIVES)
    )
    conditions: tuple[str, ...] = ("trained", "refined")
    shares: tuple[float, ...] = (1.0, DEFAULT.soft_positives / PAPER.soft_positives)
    """All the soft positives, and the default recipe's share of the paper's (a third)."""

    def validate(self) -> None:
        self.bench.validate()
        if not self.shares or self.shares[0] != 1.0 or any(not 0.0 <= s <= 1.0 for s in self.shares):
            raise ValueError("soft-positive shares are between 0 and 1, the first one 1 (the full recipe)")
        if not self.conditions or any(c not in ("trained", "refined") for c in self.conditions):
            raise ValueError("the cost benchmark runs the trained conditions: trained, refined")


def compute_parameters(model: torch.nn.Module) -> int:
    """Parameters every training token passes through: the decoder layers, the final norm and the output head (the
    embedding table is a lookup; the VQ model does not run in training)."""
    parts = (model.model.layers, model.model.norm, model.lm_head)  # type: ignore[union-attr]
    return sum(p.numel() for part in parts for p in part.parameters())


def follow(candidates: Sequence[Scored], epochs: int, patience: int, start_margin: float = 0.0) -> tuple[int, Scored]:
    """(epochs trained, candidate kept) of a run of at most `epochs` epochs with `patience` (0: none), read off
    `candidates`, the start rows then every epoch's checkpoint of a longer run without early stopping, as
    `personalize` would stop and choose with `start_margin` (`Recipe.start_margin`)."""
    seen = list(candidates[:1])
    for candidate in candidates[1 : epochs + 1]:
        seen.append(candidate)
        stale = epochs_without_improvement(seen, start_margin)
        if patience and candidate.checkpoint.epoch < epochs and stale >= patience:
            break
    return seen[-1].checkpoint.epoch, best(seen, start_margin)


class CostBenchmark:
    """Runs `CostSettings` on one loaded micro-world model; `run` returns the results as a JSON-ready dict."""

    def __init__(
        self,
        assistant: Assistant,
        reader: AttributeReader,
        settings: CostSettings,
        report: Report | None = None,
        progress: ProgressCallback | None = None,
    ) -> None:
        settings.validate()
        self.assistant = assistant
        self.reader = reader
        self.settings = settings
        self.report = report or (lambda _m: None)
        self.progress = progress or (lambda _p: None)
        loaded = assistant.loaded
        recipe = settings.bench.recipe()
        shape = loaded_training_shape(loaded, recipe.batch_size, recipe.micro_batch)
        self.flop_per_token = flop_per_token(compute_parameters(loaded.model), shape.checkpointing)

    def run(self, seeds: int = 1) -> dict[str, Any]:
        """Every run of seeds `bench.seed .. bench.seed + seeds - 1`, with the policies read off each."""
        started = time.monotonic()
        settings = self.settings
        runs: list[dict[str, Any]] = []
        total = seeds * settings.bench.concepts * len(settings.conditions) * len(settings.shares)
        self.progress(Progress("benchmark", 0, total))
        for seed in range(settings.bench.seed, settings.bench.seed + seeds):
            bench = Benchmark(self.assistant, self.reader, replace(settings.bench, seed=seed))
            for concept in make_concepts(bench.settings):
                self.report(f"seed {seed}, <{concept.name}>: {concept.identity.describe()}")
                descriptions = describe_photos(self.assistant, [render(s) for s in concept.train[:-1]])
                for share in settings.shares:
                    for condition in settings.conditions:
                        runs.append(self.run_one(bench, concept, condition, share, descriptions))
                        left = (time.monotonic() - started) / len(runs) * (total - len(runs))
                        self.progress(Progress("benchmark", len(runs), total, eta_seconds=left))
        return {
            "settings": {
                **asdict(settings),
                "bench": {**asdict(settings.bench), "conditions": list(settings.bench.conditions)},
                "seeds": seeds,
            },
            "flop_per_token": self.flop_per_token,
            "seconds": round(time.monotonic() - started, 1),
            "runs": runs,
        }

    def run_one(
        self, bench: Benchmark, concept: BenchConcept, condition: str, share: float, descriptions: list[str]
    ) -> dict[str, Any]:
        """Train `concept` for every epoch by `condition`'s recipe with `share` of the soft positives, measure every
        candidate on the test renders, and read every policy off the run."""
        started = time.monotonic()
        recipe = CONDITIONS[condition].recipe(bench.settings.recipe())
        recipe = replace(recipe, patience=0, soft_positives=round(share * recipe.soft_positives))
        start = bench.instant_rows(concept) if CONDITIONS[condition].from_aligner else None
        candidates: list[Scored] = []
        subject = f"<{concept.name}>"
        try:
            trained = bench.train(concept, recipe, descriptions, start, on_checkpoint=candidates.append)
            measured = []
            for candidate in candidates:
                self.assistant.slots.load(concept.name, candidate.checkpoint.state)
                metrics = bench.measure(concept, condition, subject, f"A photo of {subject}.", [concept.name])
                measured.append({k: metrics[k] for k in MEASURED})
        finally:
            self.assistant.slots.detach(concept.name)
        steps_per_epoch = trained.steps // trained.epochs
        epoch_flop = trained.epoch_tokens * self.flop_per_token
        policies = {}
        for epochs in range(1, trained.epochs + 1):
            for patience in PATIENCES:
                ran, kept = follow(candidates, epochs, patience, recipe.start_margin)
                policies[f"{epochs}/{patience}"] = {"epochs": ran, "kept": kept.checkpoint.epoch}
        line = ", ".join(
            f"epoch {c.checkpoint.epoch} {m['recognition_weighted']:.2f}/{m['generation_attribute_accuracy']:.2f}"
            for c, m in zip(candidates, measured, strict=True)
        )
        self.report(f"  {condition}, soft positives x{share:g}: {line} ({time.monotonic() - started:.0f} s)")
        return {
            "seed": bench.settings.seed,
            "concept": concept.name,
            "condition": condition,
            "share": share,
            "soft_positives": recipe.soft_positives,
            "samples": trained.samples,
            "steps_per_epoch": steps_per_epoch,
            "epoch_tokens": trained.epoch_tokens,
            "epoch_flop": epoch_flop,
            "candidates": [
                {"epoch": c.checkpoint.epoch, "step": c.checkpoint.step, "held_out": c.metrics, "test": m}
                for c, m in zip(candidates, measured, strict=True)
            ],
            "policies": policies,
        }


def policy_table(results: dict[str, Any], condition: str) -> list[dict[str, Any]]:
    """Every (share, epochs, patience) policy of `condition`: its mean test metrics over the runs (each run's kept
    candidate), its mean steps and FLOPs, and its quality relative to the full recipe (share 1, every epoch, no
    early stopping) on each headline metric."""
    runs = [r for r in results["runs"] if r["condition"] == condition]
    rows = []
    for share in results["settings"]["shares"]:
        group = [r for r in runs if r["share"] == share]
        for key in group[0]["policies"]:
            epochs, patience = (int(part) for part in key.split("/"))
            ran = [r["policies"][key]["epochs"] for r in group]
            kept = [r["candidates"][r["policies"][key]["kept"]]["test"] for r in group]
            row = {
                "share": share,
                "epochs": epochs,
                "patience": patience,
                "epochs_run": float(np.mean(ran)),
                "steps": float(np.mean([n * r["steps_per_epoch"] for n, r in zip(ran, group, strict=True)])),
                "flop": float(np.mean([n * r["epoch_flop"] for n, r in zip(ran, group, strict=True)])),
            }
            for metric in MEASURED:
                row[metric], row[f"{metric}_stderr"] = mean_and_error([k[metric] for k in kept])
            rows.append(row)
    full = full_row(rows)
    for row in rows:
        for metric in HEADLINE:
            row[f"{metric}_kept"] = row[metric] / full[metric] if full[metric] else 1.0
    return rows


def full_row(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The full recipe's row of a `policy_table`: every soft positive, the most epochs, no early stopping."""
    return max((r for r in rows if r["share"] == 1.0 and r["patience"] == 0), key=lambda r: r["epochs"])


def cheapest(tables: dict[str, Sequence[dict[str, Any]]], keep: float = KEEP) -> tuple[float, int, int]:
    """The policy (its `policy_key`) with the fewest FLOPs for the first condition of `tables` (condition: its
    `policy_table`) whose headline metrics keep `keep` of the full recipe's under every condition; among equal
    FLOPs, the better quality. The full recipe where nothing cheaper keeps it."""
    kept = [{policy_key(r) for r in rows if all(r[f"{m}_kept"] >= keep for m in HEADLINE)} for rows in tables.values()]
    good = set.intersection(*kept)
    first = [r for r in next(iter(tables.values())) if policy_key(r) in good]
    return policy_key(min(first, key=lambda r: (r["flop"], -sum(r[m] for m in HEADLINE))))


def policy_key(row: dict[str, Any]) -> tuple[float, int, int]:
    """(share of soft positives, epochs at most, patience): what a policy changes in the recipe."""
    return row["share"], row["epochs"], row["patience"]


def curves(results: dict[str, Any], metric: str, x: str = "steps") -> dict[str, list[tuple[float, float]]]:
    """Mean test `metric` of every candidate epoch (no selection) against mean `x` ("steps" or "flop") reached,
    per condition and share."""
    out: dict[str, list[tuple[float, float]]] = {}
    for condition in results["settings"]["conditions"]:
        for share in results["settings"]["shares"]:
            group = [r for r in results["runs"] if r["condition"] == condition and r["share"] == share]
            if not group:
                continue
            label = condition if share == 1.0 else f"{condition}, soft positives x{share:g}"
            points = []
            for index in range(min(len(r["candidates"]) for r in group)):
                epoch = group[0]["candidates"][index]["epoch"]
                per = "steps_per_epoch" if x == "steps" else "epoch_flop"
                where = float(np.mean([epoch * r[per] for r in group]))
                points.append((where, float(np.mean([r["candidates"][index]["test"][metric] for r in group]))))
            out[label] = points
    return out
