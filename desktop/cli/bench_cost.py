"""`familiar bench cost [--concepts N --seeds S] [--epochs E] [--shares 1 0.333] [-o RESULTS.json] [--docs REPORT.md]`:
test quality against optimizer steps and FLOPs for the trained and refined conditions, and the cheapest policy that
keeps the full recipe's quality (engine/microworld/cost.py), with that policy projected onto a 7B model. It prints
the choice; it writes files only where asked: the results to `-o`, the report (tables and charts beside it) to
`--docs`."""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path
from typing import Any

from desktop.cli.bench_shared import check_settings, load_microworld, save_results, saved_results, timed_lines
from desktop.cli.charts import line_chart
from desktop.cli.progress import progress_bar

UTILISATIONS = (0.40, 0.35)
"""Shares of a 4090-class GPU's bf16 peak the 7B projection is given at (docs/training.md says why)."""
LABELS = {"recognition_weighted": "recognition (weighted)", "generation_attribute_accuracy": "drawn attributes"}


def register(kinds: argparse._SubParsersAction) -> None:
    p = kinds.add_parser(
        "cost",
        help="test quality against optimizer steps and FLOPs, and the cheapest recipe that keeps the full one's",
    )
    p.add_argument("-o", "--output", type=Path, help="results JSON file to write (none unless given)")
    p.add_argument("--docs", type=Path, help="Markdown report to write, charts beside it (none unless given)")
    p.add_argument("--model", default="demo", help="a micro-world model (default: the embedded demo model)")
    p.add_argument("--concepts", type=int, default=3, help="concepts per seed (default 3)")
    p.add_argument("--seeds", type=int, default=1, help="seeds to run, from --seed on, each with its own concepts")
    p.add_argument("--seed", type=int, default=0, help="the first seed: concepts, training and drawing")
    p.add_argument("--epochs", type=int, help="the full recipe's epochs (default 15, the paper's)")
    p.add_argument(
        "--shares",
        type=float,
        nargs="+",
        metavar="SHARE",
        help="shares of the benchmark's soft positives to run, the first 1 (default: 1 0.333, the recipe's share)",
    )
    p.add_argument("--conditions", nargs="+", metavar="NAME", help="trained and/or refined (default: both)")
    p.add_argument("--threads", type=int, default=2, help="CPU threads for torch")
    p.add_argument("--report-only", action="store_true", help="write --docs from the results in -o; no training")
    p.set_defaults(handler=run_cost)


def run_cost(args: argparse.Namespace) -> int:
    from engine.inference.assistant import Assistant
    from engine.microworld.cost import CostBenchmark, CostSettings
    from engine.microworld.reader import load_reader

    if args.report_only:
        write_report(saved_results(args, "cost"), args.docs, args.output)
        print(f"wrote {args.docs}")
        return 0
    settings = CostSettings()
    bench = replace(settings.bench, seed=args.seed, concepts=args.concepts)
    if args.epochs is not None:
        bench = replace(bench, epochs=args.epochs)
    changes: dict[str, Any] = {"bench": bench}
    if args.shares:
        changes["shares"] = tuple(args.shares)
    if args.conditions:
        changes["conditions"] = tuple(args.conditions)
    settings = replace(settings, **changes)
    check_settings(settings, args.seeds)
    loaded = load_microworld(args, "cost benchmark")
    progress = progress_bar(lines_when_piped=True)
    results = CostBenchmark(Assistant(loaded), load_reader(), settings, timed_lines(progress), progress).run(args.seeds)
    results["choice"] = choose(results)
    save_results(results, args, loaded, "familiar bench cost" + _extra(args))
    if args.docs is not None:
        write_report(results, args.docs, args.output)
        print(f"wrote {args.docs}")
    print(describe_choice(results["choice"]))
    return 0


def _extra(args: argparse.Namespace) -> str:
    parts = [f" --concepts {args.concepts}" if args.concepts != 3 else ""]
    parts.append(f" --seed {args.seed}" if args.seed else "")
    parts.append(f" --seeds {args.seeds}" if args.seeds != 1 else "")
    parts.append(f" --epochs {args.epochs}" if args.epochs is not None else "")
    parts.append(f" --shares {' '.join(f'{s:g}' for s in args.shares)}" if args.shares else "")
    parts.append(f" --conditions {' '.join(args.conditions)}" if args.conditions else "")
    parts.append(f" -o {args.output}" if args.output is not None else "")
    parts.append(f" --docs {args.docs}" if args.docs is not None else "")
    return "".join(parts)


def choose(results: dict[str, Any]) -> dict[str, Any]:
    """The cheapest policy that keeps the full recipe's quality under every condition run, each condition's row for
    it and for the full recipe, and both projected onto 7B (the product's sample counts): the policy's with its share
    of soft positives and the epochs it ran here on average, the full recipe's with the epochs it ran here (the
    paper's 15 unless `--epochs` said otherwise)."""
    from engine.microworld.cost import cheapest, full_row, policy_key, policy_table
    from engine.training.cost import project_7b
    from engine.training.recipe import PAPER

    tables = {c: policy_table(results, c) for c in results["settings"]["conditions"]}
    key = cheapest(tables)
    share, epochs, patience = key
    rows = {c: next(r for r in rows if policy_key(r) == key) for c, rows in tables.items()}
    full = {c: full_row(rows) for c, rows in tables.items()}
    first = next(iter(tables))
    recipe = replace(PAPER, epochs=epochs, patience=patience, soft_positives=round(share * PAPER.soft_positives))
    full_recipe = replace(PAPER, epochs=results["settings"]["bench"]["epochs"])
    projections = {}
    for name, chosen, ran in (("chosen", recipe, rows[first]["epochs_run"]), ("full", full_recipe, full_recipe.epochs)):
        for utilisation in UTILISATIONS:
            p = project_7b(chosen, ran, utilisation)
            projections[f"{name}@{utilisation:g}"] = {
                "samples_per_epoch": p.samples_per_epoch,
                "steps_per_epoch": p.steps_per_epoch,
                "epochs": p.epochs,
                "flop": p.flop,
                "minutes": p.minutes,
                "total_minutes": p.total_minutes,
            }
    return {
        "share": share,
        "epochs": epochs,
        "patience": patience,
        "soft_positives_7b": recipe.soft_positives,
        "rows": rows,
        "full": full,
        "projection_7b": projections,
    }


def describe_choice(choice: dict[str, Any]) -> str:
    lines = [
        f"cheapest policy keeping the full recipe's quality: at most {choice['epochs']} epochs, patience "
        f"{choice['patience']}, soft positives x{choice['share']:g}"
    ]
    for condition, row in choice["rows"].items():
        full = choice["full"][condition]
        parts = ", ".join(f"{LABELS[m]} {row[m]:.3f} ({row[f'{m}_kept']:.0%} of {full[m]:.3f})" for m in LABELS)
        lines.append(f"  {condition}: {parts}; {row['steps']:.0f} steps against {full['steps']:.0f}")
    for key, p in choice["projection_7b"].items():
        total = f" ({p['total_minutes']:.0f} with describing and scoring)" if "total_minutes" in p else ""
        lines.append(f"  7B, {key}: {p['flop']:.2g} FLOP, {p['minutes']:.0f} minutes on a 4090-class GPU{total}")
    return "\n".join(lines)


def write_report(results: dict[str, Any], docs: Path, output: Path | None) -> None:
    """The Markdown report at `docs` with its charts beside it (`<stem>-<metric>-<x>.png`)."""
    from engine.microworld.cost import curves, policy_table

    folder = docs.parent
    folder.mkdir(parents=True, exist_ok=True)
    settings, choice = results["settings"], results["choice"]
    lines = [
        "# Cost against quality (micro-world)",
        "",
        f"Made by `{results['command']}` in {results['seconds'] / 60:.1f} minutes on {results['machine']}. "
        + (f"Raw numbers: `{output}`." if output is not None else "Raw numbers were not saved (no `-o`)."),
        f"{settings['bench']['concepts']} concepts x {settings['seeds']} seeds; every run trains "
        f"{settings['bench']['epochs']} epochs without early stopping and every candidate is measured on the test "
        f"renders; {results['flop_per_token']:.3g} FLOP per training token on this model.",
        "",
        "## Quality against steps and FLOPs (every epoch, no selection)",
        "",
    ]
    for metric, label in LABELS.items():
        for x, x_label in (("steps", "optimizer steps"), ("flop", "FLOP")):
            chart = folder / f"{docs.stem}-{metric}-{x}.png"
            points = curves(results, metric, x)
            if x == "flop":
                points = {k: [(f / 1e12, y) for f, y in v] for k, v in points.items()}
                x_label = "TFLOP (this model)"
            if line_chart(chart, f"{label}: mean over runs, by epoch", points, x_label):
                lines += [f"![{label} against {x}]({chart.name})", ""]
    lines += [
        "## The cheapest policy that keeps the full recipe's quality",
        "",
        "```",
        describe_choice(choice),
        "```",
        "",
    ]
    lines += [
        "## Policies",
        "",
        "| condition | soft positives | epochs at most | patience | epochs run | steps |"
        " recognition | drawn attributes | kept (rec. / drawn) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for condition in settings["conditions"]:
        for row in policy_table(results, condition):
            if row["epochs"] in (1, 2, 3, 4, 6, 8, 10, 15) or row["epochs"] == settings["bench"]["epochs"]:
                lines.append(
                    f"| {condition} | x{row['share']:g} | {row['epochs']} | {row['patience']} | "
                    f"{row['epochs_run']:.1f} | {row['steps']:.0f} | {row['recognition_weighted']:.3f} | "
                    f"{row['generation_attribute_accuracy']:.3f} | {row['recognition_weighted_kept']:.0%} / "
                    f"{row['generation_attribute_accuracy_kept']:.0%} |"
                )
    docs.write_text("\n".join([*lines, ""]), encoding="utf-8")
