"""`familiar train NAME`: personalize a concept, with a progress bar; Ctrl-C saves and exits cleanly."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from desktop.cli.interrupt import stop_on_ctrl_c
from desktop.cli.progress import progress_bar
from engine.progress import Notice
from engine.training.recipe import DEFAULT


def register(sub: argparse._SubParsersAction) -> None:
    train = sub.add_parser("train", help="teach the model a concept from its photos")
    train.add_argument("name")
    train.add_argument("--epochs", type=int, default=DEFAULT.epochs, help="passes over the samples (%(default)s)")
    train.add_argument("--index", type=Path, help="an offline embedding index for soft positives and negatives")
    train.add_argument(
        "--soft-positives",
        type=int,
        default=DEFAULT.soft_positives,
        help="look-alike images to retrieve, with --index (%(default)s)",
    )
    train.add_argument("--embedder-weights", type=Path, help="the index's embedder weights (not needed for demo)")
    train.add_argument("--resume", action="store_true", help="continue the last interrupted or cancelled run")
    train.add_argument(
        "--learning-rate", type=float, default=DEFAULT.learning_rate, help="AdamW's learning rate (%(default)s)"
    )
    train.add_argument("--model", default="demo", help="'demo' (embedded), a model folder, or a hub id")
    train.add_argument("--device", default="auto")
    train.add_argument("--seed", type=int, default=DEFAULT.seed, help="sample order and scoring seed (%(default)s)")
    train.set_defaults(handler=run_train)


def _print_status(message: str | Notice) -> None:
    line = f"note: {message.text}" if isinstance(message, Notice) else message
    print(f"familiar: {line}", file=sys.stderr)


def run_train(args: argparse.Namespace) -> int:
    from desktop.services.personalize import TrainOptions, train_concept
    from store.library import Library

    options = TrainOptions(
        model=args.model,
        device=args.device,
        epochs=args.epochs,
        seed=args.seed,
        learning_rate=args.learning_rate,
        soft_positives=args.soft_positives,
        index=str(args.index) if args.index else None,
        embedder_weights=str(args.embedder_weights) if args.embedder_weights else None,
    )
    with stop_on_ctrl_c() as cancelled, Library.open(args.data_dir) as library:
        if not args.resume:
            from desktop.services.estimate import estimate_training

            print(f"familiar: {estimate_training(library, args.name, options).describe()}", file=sys.stderr)
        run = train_concept(
            library,
            args.name,
            options,
            progress=progress_bar(),
            cancelled=cancelled,
            status=_print_status,
            resume=args.resume,
        )
        photo_count = len(library.concepts.photos(args.name))
    if run.status == "cancelled":
        print(f"cancelled at step {run.step}; continue with: familiar train {args.name} --resume", file=sys.stderr)
        return 130
    from desktop.services.verdict import verdict

    metrics = ", ".join(f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}" for k, v in run.metrics.items())
    print(f"trained <{args.name}> ({metrics})")
    for line in verdict(run.concept, run.metrics, photo_count=photo_count).lines():
        print(line)
    return 0
