"""`familiar train NAME`: personalize a concept, with a progress bar; Ctrl-C saves and exits cleanly."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from desktop.cli.interrupt import stop_on_ctrl_c
from desktop.cli.progress import progress_bar
from engine.progress import Notice
from engine.training.metrics_text import shown
from engine.training.recipe import DEFAULT


def register(sub: argparse._SubParsersAction) -> None:
    train = sub.add_parser("train", help="teach the model a concept from its photos")
    train.add_argument("name", help="the library concept to train")
    train.add_argument("--epochs", type=int, default=DEFAULT.epochs, help="passes over the samples")
    train.add_argument(
        "--patience",
        type=int,
        default=DEFAULT.patience,
        help=f"stop after this many epochs without a better held-out score (default {DEFAULT.patience}; 0: off)",
    )
    train.add_argument(
        "--index",
        type=Path,
        help="an offline embedding index for soft positives and negatives (default: the demo model's bundled subset)",
    )
    train.add_argument(
        "--no-index",
        action="store_true",
        help="train from the photos alone: no look-alikes, not even the demo model's bundled subset",
    )
    train.add_argument(
        "--soft-positives",
        type=int,
        default=DEFAULT.soft_positives,
        help="look-alike images to retrieve, with --index",
    )
    train.add_argument(
        "--negatives",
        type=int,
        default=DEFAULT.negatives,
        help="most negatives: other concepts' photos, then the index's hard and easy ones",
    )
    train.add_argument("--embedder-weights", type=Path, help="the index's embedder weights (not needed for demo)")
    train.add_argument(
        "--remote-knn",
        metavar="URL",
        help="also ask this clip-retrieval kNN service for look-alikes, sending only the mean photo embedding; "
        "needs --index, used when the service fails (default: off, nothing leaves this machine)",
    )
    train.add_argument(
        "--resume",
        action="store_true",
        help="continue the last interrupted or cancelled run (one stopped before its first epoch's checkpoint starts "
        "again)",
    )
    train.add_argument("--learning-rate", type=float, default=DEFAULT.learning_rate, help="AdamW's learning rate")
    train.add_argument("--model", default="demo", help="'demo' (embedded), a model folder, or a hub id")
    train.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    train.add_argument("--seed", type=int, default=DEFAULT.seed, help="sample order and scoring seed")
    train.set_defaults(handler=run_train)


def _print_status(message: str | Notice) -> None:
    line = f"note: {message.text}" if isinstance(message, Notice) else message
    print(f"familiar: {line}", file=sys.stderr)


def run_train(args: argparse.Namespace) -> int:
    from desktop.services.personalize import TrainOptions, train_concept
    from engine.errors import EngineError
    from store.library import Library

    if args.index is not None and not args.index.is_dir():
        raise EngineError(f"--index {args.index} is not a folder")
    if args.embedder_weights is not None and not args.embedder_weights.is_file():
        raise EngineError(f"--embedder-weights {args.embedder_weights} is not a file")
    if args.remote_knn is not None:
        from urllib.parse import urlsplit

        from engine.retrieval.remote_knn import check_url

        if args.index is None:
            raise EngineError("--remote-knn needs --index: the offline index gives the embedder and the fallback")
        check_url(args.remote_knn, urlsplit(args.remote_knn).hostname)
    options = TrainOptions(
        model=args.model,
        device=args.device,
        epochs=args.epochs,
        patience=args.patience,
        seed=args.seed,
        learning_rate=args.learning_rate,
        soft_positives=args.soft_positives,
        negatives=args.negatives,
        index=str(args.index) if args.index else None,
        bundled_index=not args.no_index,
        embedder_weights=str(args.embedder_weights) if args.embedder_weights else None,
        remote_knn_url=args.remote_knn,
    )
    with stop_on_ctrl_c() as cancelled, Library.open(args.data_dir) as library:
        if not args.resume:
            from desktop.services.estimate import estimate_training

            print(f"familiar: {estimate_training(library, args.name, options).describe()}", file=sys.stderr)
        run = train_concept(
            library,
            args.name,
            options,
            progress=progress_bar(lines_when_piped=True),
            cancelled=cancelled,
            status=_print_status,
            resume=args.resume,
        )
        photo_count = len(library.concepts.photos(args.name))
    if run.status == "cancelled":
        print(f"cancelled at step {run.step}; continue with: familiar train {args.name} --resume", file=sys.stderr)
        return 130
    from desktop.services.verdict import verdict

    metrics = ", ".join(f"{k} {shown(v)}" for k, v in run.metrics.items())
    print(f"trained <{args.name}> ({metrics})")
    for line in verdict(run.concept, run.metrics, photo_count=photo_count).lines():
        print(line)
    return 0
