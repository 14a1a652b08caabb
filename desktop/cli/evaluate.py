"""`familiar eval DATASET -o REPORT_DIR`: train every concept of a dataset in a temporary library and write
`report.md`, `results.json`, PNG charts and the generated pictures (see docs/evaluation.md)."""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from desktop.cli.charts import bar_chart, line_chart

DEMO_NOTE = (
    "**The demo model knows only the micro-world's 32x32 scenes of made-up creatures, not photos: on a photo "
    "dataset its answers and pictures are meaningless, so these figures measure nothing about the method.** "
    "Configure a real model (`--model PATH`) for meaningful numbers."
)


def register(sub: argparse._SubParsersAction) -> None:
    ev = sub.add_parser("eval", help="train and measure concepts from a dataset, and write a report")
    ev.add_argument(
        "dataset", type=Path, help="train/<name>/ + test/<name>/ (Yo'LLaVA) or <subject>/NN.jpg (DreamBooth)"
    )
    ev.add_argument("-o", "--output", type=Path, required=True, help="report folder (created)")
    ev.add_argument("--concepts", nargs="+", default=(), metavar="NAME", help="only these concepts (default: all)")
    ev.add_argument("--model", default="demo", help="'demo' (embedded), a model folder, or a hub id")
    ev.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    ev.add_argument("--clip", type=Path, help="open_clip model folder for CLIP-I and CLIP-T (skipped without)")
    ev.add_argument("--dino", type=Path, help="DINO ViT folder (e.g. dino-vits16) for the DINO score (skipped without)")
    ev.add_argument("--qa", type=Path, help="multiple-choice questions (JSON; see docs/evaluation.md)")
    ev.add_argument("--recipe", choices=("quick", "full"), default="quick", help="training data mix")
    ev.add_argument("--epochs", type=int, help="training epochs (default: 2 quick, 15 full)")
    ev.add_argument("--images", type=int, default=2, help="pictures generated per concept")
    ev.add_argument("--seed", type=int, default=0, help="training and drawing seed")
    ev.set_defaults(handler=run_eval)


def run_eval(args: argparse.Namespace) -> int:
    from desktop.cli.progress import progress_bar
    from desktop.services.evaluate import QUICK, EvalOptions, evaluate
    from desktop.services.personalize import TrainOptions
    from engine.errors import EngineError

    if args.images < 0 or (args.epochs is not None and args.epochs < 1):
        raise EngineError("--images must be 0 or more and --epochs 1 or more")
    train = QUICK if args.recipe == "quick" else TrainOptions()
    if args.epochs is not None:
        train = replace(train, epochs=args.epochs)
    options = EvalOptions(
        model=args.model,
        device=args.device,
        train=train,
        concepts=tuple(args.concepts),
        clip=args.clip,
        dino=args.dino,
        qa=args.qa,
        images=args.images,
        seed=args.seed,
    )
    args.output.mkdir(parents=True, exist_ok=True)
    results = evaluate(args.dataset, args.output, options, progress=progress_bar(lines_when_piped=True))
    write_report(results, args.output)
    means = ", ".join(f"{k} {v:.3f}" for k, v in results["mean"].items())
    print(f"wrote {args.output / 'report.md'} ({means})")
    return 0


def _f(value: Any) -> str:
    return f"{value:.3f}" if isinstance(value, float) else "-" if value is None else str(value)


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(_f(v) for v in row) + " |" for row in rows] + [""]


def _binomial_errors(recognition: dict[str, Any]) -> dict[str, float | None]:
    """Standard errors of the positive and negative accuracies (sqrt(p(1 - p) / n)) and of their mean."""
    errors: dict[str, float | None] = {}
    for key, count in (("positive", recognition["positives"]), ("negative", recognition["negatives"])):
        p = recognition[key]
        errors[key] = (p * (1 - p) / count) ** 0.5 if count else None
    both = [errors["positive"], errors["negative"]]
    errors["weighted"] = None if None in both else 0.5 * sum(e * e for e in both if e is not None) ** 0.5
    return errors


def _chart_or_note(written: bool, name: str, missing: str) -> list[str]:
    return [f"![{name}]({name}.png)" if written else f"(No {name} chart: {missing}.)", ""]


def write_report(results: dict[str, Any], folder: Path) -> None:
    """`results.json`, `report.md` and its charts (recognition.png, similarity.png, training.png); a chart with
    nothing to show is not written, and the report says why."""
    (folder / "results.json").write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    per, names = results["concepts"], list(results["concepts"])
    keys = ("positive", "negative", "weighted")
    errors = {n: _binomial_errors(per[n]["recognition"]) for n in names}
    charts = {
        "recognition": bar_chart(
            folder / "recognition.png",
            "Recognition accuracy per concept (± standard error)",
            names,
            {k: [per[n]["recognition"][k] for n in names] for k in keys},
            {k: [errors[n][k] for n in names] for k in keys},
        ),
        "similarity": bar_chart(
            folder / "similarity.png",
            "Generated vs real: CLIP-I, CLIP-T, DINO",
            names,
            {
                label: [per[n].get(k) for n in names]
                for k, label in (("clip_i", "CLIP-I"), ("clip_t", "CLIP-T"), ("dino", "DINO"))
            },
        ),
        "training": line_chart(
            folder / "training.png",
            "Training loss per epoch",
            {n: [(p["epoch"], p["loss"]) for p in per[n]["training"]] for n in names},
            "epoch",
        ),
    }
    lines = [
        "# Familiar evaluation",
        "",
        f"Dataset `{results['dataset']}` ({results['layout']} layout), model `{results['model']}`, "
        f"{len(names)} concepts, recipe: {results['options']['train']['epochs']} epochs.",
        "",
    ]
    if results["demo"]:
        lines += [DEMO_NOTE, ""]
    lines += ["## Recognition", "", '"Is <name> in this photo?" over every concept\'s test photos.', ""]
    lines += _table(
        ["concept", "positive", "negative", "weighted", "positives", "negatives"],
        [
            [n, *(per[n]["recognition"][k] for k in ("positive", "negative", "weighted", "positives", "negatives"))]
            for n in names
        ],
    )
    lines += _chart_or_note(charts["recognition"], "recognition", "no concept was measured")
    if any("qa" in per[n] for n in names):
        lines += ["## Question answering (multiple choice)", ""]
        lines += _table(["concept", "accuracy"], [[n, per[n].get("qa")] for n in names])
    lines += ["## Generation", ""]
    lines += _table(
        ["concept", "CLIP-I", "CLIP-T", "DINO", "pictures"],
        [
            [n, *(per[n].get(k) for k in ("clip_i", "clip_t", "dino")), " ".join(f"![]({p})" for p in per[n]["images"])]
            for n in names
        ],
    )
    lines += [f"- {k} not measured: {why}" for k, why in results["skipped"].items()]
    lines += ["", *_chart_or_note(charts["similarity"], "similarity", "CLIP-I, CLIP-T and DINO were not measured")]
    lines += ["## Means over concepts", ""]
    lines += _table(["metric", "ours"], list(results["mean"].items()))
    lines += ["## Published figures (theirs, from the papers; not measured here)", ""]
    lines += _table(
        ["source", "metric", "value"], [[p["source"], p["metric"], p["value"]] for p in results["published"]]
    )
    lines += ["## Training", ""]
    lines += _table(
        ["concept", "epoch", "loss"], [[n, p["epoch"], p["loss"]] for n in names for p in per[n]["training"]]
    )
    lines += _chart_or_note(charts["training"], "training", "no training losses were recorded")
    lines += ["## Base model untouched", ""]
    base = results["base_model_untouched"]
    verdict = "passed" if base["passed"] else "FAILED"
    lines += [
        f"Logits on a fixed prompt with every concept detached vs the freshly loaded base model: {verdict} "
        f"(largest difference {base['max_abs_logit_difference']:.3g}).",
        "",
        "## Time",
        "",
    ]
    lines += _table(["phase", "seconds"], list(results["times_s"].items()))
    (folder / "report.md").write_text("\n".join(lines), encoding="utf-8")
