"""`familiar aligner train DATASET -o PATH`: train the Aligner that turns one photo into an instant concept,
once per base model, with a progress bar; Ctrl-C saves a checkpoint and exits cleanly."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

from desktop.cli.interrupt import stop_on_ctrl_c
from desktop.cli.progress import progress_bar

TRAIN_OPTIONS = {
    name: name
    for name in (
        "epochs",
        "batch_size",
        "micro_batch",
        "learning_rate",
        "answer_weight",
        "positive_share",
        "hard_negative_share",
        "distill_weight",
        "samples_per_identity",
        "seed",
    )
}
ARCHITECTURE_OPTIONS = {
    "queries": "n_queries",
    "blocks": "n_blocks",
    "hidden": "hidden",
    "heads": "n_heads",
    "image_size": "image_size",
}


def register(sub: argparse._SubParsersAction) -> None:
    aligner = sub.add_parser("aligner", help="train the Aligner that makes instant concepts from one photo")
    actions = aligner.add_subparsers(dest="action", metavar="ACTION")
    aligner.set_defaults(handler=lambda _args: _print_help(aligner))

    train = actions.add_parser(
        "train",
        help="train an Aligner for a base model on identity folders",
        description="DATASET holds one folder per identity with a reference photo (reference.*, else the first "
        "by name), query photos, and optionally facts.txt. Unset options take the defaults in docs/aligner.md.",
    )
    train.add_argument("dataset", type=Path, metavar="DATASET", help="folder of identity folders")
    train.add_argument("-o", "--output", type=Path, required=True, metavar="PATH", help="the Aligner file to write")
    train.add_argument("--model", default="demo", help="'demo' (embedded), a model folder, or a hub id")
    train.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    train.add_argument(
        "--encoder",
        choices=("dinov2", "microworld-reader"),
        help="image encoder (default: microworld-reader, the shipped attribute reader, for the demo model; "
        "dinov2 otherwise)",
    )
    train.add_argument("--dino", help="local DINOv2 folder (required with the dinov2 encoder)")
    train.add_argument("--resume", action="store_true", help="continue the interrupted run writing PATH")
    train.add_argument("--epochs", type=int, help="passes over the identities (default 10)")
    train.add_argument("--batch-size", type=int, help="samples per optimizer step (default 4)")
    train.add_argument(
        "--micro-batch", type=int, help="samples per forward pass (accumulates gradients; default 0: the whole batch)"
    )
    train.add_argument("--learning-rate", type=float, help="AdamW's learning rate (default 0.0001)")
    train.add_argument("--answer-weight", type=float, help="loss weight of the Yes/No token (default 10)")
    train.add_argument("--positive-share", type=float, help="share of questions answered yes (default 0.6)")
    train.add_argument(
        "--hard-negative-share", type=float, help="share of negatives from the most alike identities (default 0)"
    )
    train.add_argument(
        "--distill-weight",
        type=float,
        help="weight of the pull towards the rows spelled from the base model's description of the photos (default 0)",
    )
    train.add_argument("--samples-per-identity", type=int, help="samples per identity and epoch (default 8)")
    train.add_argument("--seed", type=int, help="sample order seed (default 0)")
    train.add_argument("--queries", type=int, help="learnable queries (default 16; must divide 32)")
    train.add_argument("--blocks", type=int, help="resampler blocks (default 4)")
    train.add_argument("--hidden", type=int, help="resampler width (default 1024)")
    train.add_argument("--heads", type=int, help="attention heads (default 16)")
    train.add_argument("--image-size", type=int, help="DINOv2 input side in pixels (default 224)")
    train.set_defaults(handler=run_train)


def _print_help(parser: argparse.ArgumentParser) -> int:
    parser.print_help()
    return 2


def _given(args: argparse.Namespace, names: dict[str, str]) -> dict[str, object]:
    return {field: getattr(args, option) for option, field in names.items() if getattr(args, option) is not None}


def run_train(args: argparse.Namespace) -> int:
    with stop_on_ctrl_c() as cancelled:
        return _train(args, cancelled)


def _train(args: argparse.Namespace, cancelled: Callable[[], bool]) -> int:
    from engine.aligner.model import DINOV2, READER, SHIPPED_READER, AlignerConfig, load_dinov2, load_reader_encoder
    from engine.aligner.training import AlignerTrainConfig, resume_path, train_aligner
    from engine.errors import EngineError, ModelNotFoundError
    from engine.model.loading import load_model
    from engine.training.loop import TrainingCancelled

    def status(message: str) -> None:
        print(f"familiar: {message}", file=sys.stderr)

    kind = args.encoder or (DINOV2 if args.dino is not None else None)
    if kind == READER and args.dino is not None:
        raise EngineError("--dino applies to the dinov2 encoder, not to the micro-world reader")
    loaded = load_model(args.model, device=args.device, progress=progress_bar())
    kind = kind or (READER if loaded.is_demo else DINOV2)
    if kind == DINOV2 and args.dino is None:
        raise ModelNotFoundError(
            "--dino PATH is required with the dinov2 encoder: a local DINOv2 folder "
            "(e.g. facebook/dinov2-base, downloaded on a machine with network)"
        )
    if kind == DINOV2:
        encoder = load_dinov2(args.dino, loaded.device)
    else:
        encoder = load_reader_encoder(SHIPPED_READER, loaded.device)
    architecture = AlignerConfig(
        vision_hidden=encoder.hidden_size, text_hidden=loaded.config.hidden_size, **_given(args, ARCHITECTURE_OPTIONS)
    )
    try:
        losses = train_aligner(
            loaded,
            encoder,
            args.dataset,
            args.output,
            architecture,
            AlignerTrainConfig(**_given(args, TRAIN_OPTIONS)),
            resume=args.resume,
            progress=progress_bar(lines_when_piped=True),
            cancelled=cancelled,
            status=status,
        )
    except TrainingCancelled as stop:
        print(
            f"cancelled at step {stop.checkpoint.step}; checkpoint saved to {args.output} and "
            f"{resume_path(args.output).name}; continue with: familiar aligner train {args.dataset} "
            f"-o {args.output} --resume",
            file=sys.stderr,
        )
        return 130
    print(f"trained the Aligner: {args.output} ({len(losses)} steps, last loss {losses[-1]:.3f})")
    return 0
