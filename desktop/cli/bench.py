"""`familiar bench personalization [--quick] [--concepts N --seeds S] [-o RESULTS.json] [--docs REPORT.md]`: the
micro-world personalization benchmark (engine/microworld/benchmark.py) on the embedded demo model. It prints the
trained condition's headline and its paired differences; it writes files only where asked: the results to `-o`,
the report (tables, charts and example pictures beside it) to `--docs`."""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path
from typing import Any

from PIL import Image

from desktop.cli import bench_cost
from desktop.cli.bench_shared import check_settings, load_microworld, save_results, saved_results, timed_lines
from desktop.cli.charts import bar_chart
from desktop.cli.progress import progress_bar

SHOWN = (
    ("recognition_weighted", "recognition (weighted)"),
    ("recognition_positive", "recognition +"),
    ("recognition_negative", "recognition - (hard)"),
    ("recognition_negative_random", "recognition - (random)"),
    ("qa_accuracy", "QA"),
    ("generation_attribute_accuracy", "drawn attributes"),
    ("generation_similarity", "drawn similarity"),
)
BASELINES = ("trained", "untrained", "description_untrained", "instant", "refined", "text_prompt", "text_full")
ABLATIONS = (
    "trained",
    "class_word_start",
    "positives_only",
    "shared_prompt",
    "no_self_prompting",
    "tokens_4",
    "tokens_8",
)
TILE = 64


def register(sub: argparse._SubParsersAction) -> None:
    bench = sub.add_parser("bench", help="benchmarks")
    kinds = bench.add_subparsers(dest="benchmark", metavar="BENCHMARK", required=True)
    p = kinds.add_parser(
        "personalization",
        help="train micro-world concepts with the product's recipe and measure them against baselines",
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="5 concepts x 2 seeds, the baselines and the Aligner's conditions, no ablations",
    )
    p.add_argument("-o", "--output", type=Path, help="results JSON file to write (none unless given)")
    p.add_argument("--docs", type=Path, help="Markdown report to write, charts beside it (none unless given)")
    p.add_argument("--model", default="demo", help="a micro-world model (default: the embedded demo model)")
    p.add_argument("--concepts", type=int, help="concepts per seed (default: 5)")
    p.add_argument(
        "--seeds",
        type=int,
        help="seeds to run, from --seed on, each with its own concepts (default: 2 with --quick, else 1)",
    )
    p.add_argument("--epochs", type=int, help="training epochs per concept, at most (default: the product's)")
    p.add_argument(
        "--conditions",
        nargs="+",
        metavar="NAME",
        help="only these conditions (default: all; no ablations with --quick)",
    )
    p.add_argument("--seed", type=int, default=0, help="the first seed: concepts, training and drawing")
    p.add_argument("--threads", type=int, default=2, help="CPU threads for torch")
    p.add_argument("--report-only", action="store_true", help="write --docs from the results in -o; no training")
    p.set_defaults(handler=run_personalization)
    bench_cost.register(kinds)


def run_personalization(args: argparse.Namespace) -> int:
    from engine.inference.assistant import Assistant
    from engine.microworld.benchmark import QUICK, QUICK_SEEDS, BenchSettings, run_seeds
    from engine.microworld.reader import load_reader

    if args.report_only:
        write_report(saved_results(args, "benchmark"), args.docs, args.output, None)
        print(f"wrote {args.docs}")
        return 0
    settings = QUICK if args.quick else BenchSettings()
    if args.seeds is None:
        args.seeds = QUICK_SEEDS if args.quick else 1
    changes: dict[str, Any] = {"seed": args.seed}
    if args.concepts is not None:
        changes["concepts"] = args.concepts
    if args.epochs is not None:
        changes["epochs"] = args.epochs
    if args.conditions:
        changes["conditions"] = tuple(args.conditions)
    settings = replace(settings, **changes)
    check_settings(settings, args.seeds)
    loaded = load_microworld(args, "personalization benchmark")
    progress = progress_bar(lines_when_piped=True)
    say = timed_lines(progress)
    results, bench = run_seeds(Assistant(loaded), load_reader(), settings, args.seeds, say, progress)
    command = "familiar bench personalization" + (" --quick" if args.quick else "") + _extra(args)
    save_results(results, args, loaded, command)
    if args.docs is not None:
        write_report(results, args.docs, args.output, bench)
        print(f"wrote {args.docs}")
    head = results.get("conditions", {}).get("trained")
    if head:
        print(
            f"trained: recognition_weighted {head['recognition_weighted']:.3f}, "
            f"generation_attribute_accuracy {head['generation_attribute_accuracy']:.3f}"
        )
    for row in results["paired"]:
        if row["metric"] in HEADLINE:
            print(
                f"{row.get('condition', 'trained')} - {row['other']}: {row['metric']} "
                f"{row['mean']:+.3f} ± {row['stderr']:.3f} "
                f"({row['units']} concepts over {args.seeds} seeds)"
            )
    return 0


def _extra(args: argparse.Namespace) -> str:
    parts = [f" --concepts {args.concepts}" if args.concepts is not None else ""]
    parts.append(f" --epochs {args.epochs}" if args.epochs is not None else "")
    parts.append(f" --conditions {' '.join(args.conditions)}" if args.conditions else "")
    parts.append(f" --seed {args.seed}" if args.seed else "")
    parts.append(f" --seeds {args.seeds}" if args.seeds != 1 else "")
    parts.append(f" -o {args.output}" if args.output is not None else "")
    parts.append(f" --docs {args.docs}" if args.docs is not None else "")
    return "".join(parts)


def _cell(summary: dict[str, Any], key: str) -> str:
    error = summary.get(f"{key}_stderr")
    return f"{summary[key]:.3f}" if not error else f"{summary[key]:.3f} ± {error:.3f}"


def _table(conditions: dict[str, Any], names: tuple[str, ...]) -> list[str]:
    present = [n for n in names if n in conditions]
    lines = ["| condition | " + " | ".join(label for _, label in SHOWN) + " |", "|---" * (len(SHOWN) + 1) + "|"]
    for name in present:
        lines.append(f"| {name} | " + " | ".join(_cell(conditions[name], key) for key, _ in SHOWN) + " |")
    return [*lines, ""]


HEADLINE = ("recognition_weighted", "generation_attribute_accuracy")
CLAIMS = (
    ("trained", "untrained", "trained concepts beat the class word's untrained rows", HEADLINE),
    ("trained", "description_untrained", "training improves on its own start rows", HEADLINE),
    ("trained", "text_prompt", "trained concepts beat the user's text prompt", HEADLINE),
    ("instant", "untrained", "instant concepts beat the class word's untrained rows", HEADLINE),
    ("refined", "trained", "refined concepts match or beat trained ones", HEADLINE),
    ("trained", "positives_only", "paper: soft positives improve generation", (HEADLINE[1], "generation_similarity")),
    ("trained", "shared_prompt", "paper: dual prompts beat one shared prompt", HEADLINE),
    ("trained", "no_self_prompting", "paper: self-prompting helps", HEADLINE),
    ("trained", "tokens_4", "paper: 16 latent tokens beat fewer", HEADLINE),
    ("trained", "tokens_8", "paper: 16 latent tokens beat fewer", HEADLINE),
)
"""(condition, other, claim, metrics): the claim holds where condition minus other is positive."""


def _verdict(mean: float, error: float) -> str:
    if error == 0.0 and mean == 0.0:
        return "no difference"
    if abs(mean) <= 2 * error:
        return "within noise (difference under 2 standard errors)"
    return "holds" if mean > 0 else "reversed"


def _claims(results: dict[str, Any]) -> list[str]:
    """Each claim of `CLAIMS` whose two conditions were run, by paired differences over concepts."""
    from engine.microworld.benchmark import paired_difference

    conditions, concepts = results["conditions"], results["concepts"]
    claims = [c for c in CLAIMS if c[0] in conditions and c[1] in conditions]
    if not claims:
        return []
    lines = ["| claim | metric | condition - other (± s.e.) | verdict |", "|---|---|---|---|"]
    for condition, other, claim, keys in claims:
        for key in keys:
            mean, error = paired_difference(concepts, other, key, condition)
            lines.append(
                f"| {claim} (`{condition}` vs `{other}`) | {key} | {mean:+.3f} ± {error:.3f} | "
                f"{_verdict(mean, error)} |"
            )
    return [*lines, ""]


def _examples(results: dict[str, Any], bench: Any | None, path: Path) -> list[str]:
    """A grid per concept: its training photos, then one picture per condition (seed 0, unlabelled). Without
    `bench` (a report rewritten from saved results) the grid already at `path` is kept, if there is one."""
    from engine.microworld.benchmark import make_concepts
    from engine.microworld.world import render

    names = [n for n in BASELINES if n in results["conditions"]]
    header = ", ".join(["training photos"] * results["settings"]["train_renders"] + names)
    if bench is None:
        return (
            [f"![examples]({path.name})", "", f"Columns: {header}. One row per concept.", ""] if path.is_file() else []
        )
    concepts = make_concepts(bench.settings)
    columns = len(concepts[0].train) + len(names)
    grid = Image.new("RGB", (columns * TILE, len(concepts) * TILE), "white")
    for row, concept in enumerate(concepts):
        pictures = [render(s) for s in concept.train] + [bench.pictures[concept.name, name] for name in names]
        for column, picture in enumerate(pictures):
            grid.paste(picture.resize((TILE - 4, TILE - 4), Image.Resampling.NEAREST), (column * TILE, row * TILE))
    grid.save(path)
    return [f"![examples]({path.name})", "", f"Columns: {header}. One row per concept.", ""]


def write_report(results: dict[str, Any], docs: Path, output: Path | None, bench: Any | None) -> None:
    """The Markdown report at `docs` with its charts beside it (`<stem>-*.png`); `output` is where the raw results
    were saved (None: not saved). `bench` None rewrites the report from saved results, keeping the example pictures
    already there."""
    conditions = results["conditions"]
    folder = docs.parent
    folder.mkdir(parents=True, exist_ok=True)
    stem = docs.stem
    labels = dict(SHOWN)
    keys = ("recognition_weighted", "qa_accuracy", "generation_attribute_accuracy", "generation_similarity")
    charts: dict[str, Path] = {}
    for title, names in (("baselines", BASELINES), ("ablations", ABLATIONS)):
        present = [n for n in names if n in conditions]
        if len(present) < 2:
            continue
        chart = folder / f"{stem}-{title}.png"
        series = {labels[key]: [conditions[n].get(key) for n in present] for key in keys}
        errors = {labels[key]: [conditions[n].get(f"{key}_stderr") for n in present] for key in keys}
        title_text = f"Micro-world personalization: {title} (mean over concepts ± standard error)"
        if bar_chart(chart, title_text, present, series, errors):
            charts[title] = chart
    settings = results["settings"]
    lines = [
        "# Personalization benchmark (micro-world)",
        "",
        f"Made by `{results['command']}` in {results['seconds'] / 60:.1f} minutes on {results['machine']}.",
        f"{settings['concepts']} concepts x {settings.get('seeds', 1)} seeds, {settings['epochs']} epochs, "
        f"{settings['soft_positives']} soft positives, "
        f"{settings['train_negatives']} training negatives, {settings['test_renders']} test renders, "
        f"{settings['negatives']} hard and {settings['negatives']} random test negatives, "
        f"{settings['drawings']} pictures per concept and condition. "
        + (f"Raw numbers: `{output}`." if output is not None else "Raw numbers were not saved (no `-o`)."),
        "",
        "What is measured and how is in docs/microworld.md; means over concepts (of every seed) ± standard error.",
        "",
        "## Trained concepts against the baselines",
        "",
        *_table(conditions, BASELINES),
    ]
    reference = results["reference"]
    lines += [
        "Ceilings for the drawn metrics, from the real test renders: read directly, attributes "
        f"{reference['generation_attribute_accuracy']:.3f} and similarity {reference['generation_similarity']:.3f}; "
        "after a round trip through the VQ image tokenizer (the best any drawing can be), "
        f"{reference['round_trip_attribute_accuracy']:.3f} and {reference['round_trip_similarity']:.3f}. "
        f"Hard negatives score {reference['hard_negative_similarity']:.3f} similarity.",
        "",
    ]
    lines += [f"![baselines]({charts['baselines'].name})" if "baselines" in charts else "", ""]
    lines += ["## Claims", "", "Paired over concepts (of every seed): the mean of (condition - other) per concept.", ""]
    lines += _claims(results)
    if any(n in conditions for n in ABLATIONS[1:]):
        lines += ["## Ablations", "", *_table(conditions, ABLATIONS)]
        lines += [f"![ablations]({charts['ablations'].name})" if "ablations" in charts else "", ""]
    lines += ["## Conditions", ""]
    lines += [f"- `{name}`: {summary['what']}" for name, summary in conditions.items()] + [""]
    lines += ["## Pictures", "", *_examples(results, bench, folder / f"{stem}-examples.png")]
    lines += ["## Per concept", ""]
    for concept in results["concepts"]:
        row = concept["conditions"]
        parts = ", ".join(
            f"{n} {row[n]['recognition_weighted']:.2f} / {row[n]['generation_attribute_accuracy']:.2f}" for n in row
        )
        seed = f" (seed {concept['seed']})" if settings.get("seeds", 1) > 1 else ""
        lines.append(f"- `<{concept['name']}>`{seed} {concept['words']}: {parts}")
    lines += ["", "(recognition weighted / drawn attributes per condition.)", ""]
    docs.write_text("\n".join(lines), encoding="utf-8")
