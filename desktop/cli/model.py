"""`familiar model get|check`: download a real model (only when asked) and check a model folder; a complete folder
that fits in memory is recorded in the settings, where the app and the CLI's `--model` default read it."""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from desktop.cli.progress import progress_bar

if TYPE_CHECKING:
    from desktop.services.model_check import FolderReport

SETTINGS_COMMANDS = ("chat", "generate", "train", "eval")
"""Commands whose `--model` defaults to the model recorded in the settings (the demo until one is)."""


def register(sub: argparse._SubParsersAction) -> None:
    from desktop.services.model_download import DEFAULT_REPO, RELEASE_REPO

    model = sub.add_parser("model", help="get a real model, or check a model folder")
    actions = model.add_subparsers(dest="model_command", metavar="ACTION", required=True)

    get = actions.add_parser(
        "get",
        help="download a Chameleon-family model and its VQGAN decoder (asks first; resumable)",
        description="Shows the size, the free disk space and the licences, asks, then downloads through "
        "huggingface_hub (HF_ENDPOINT is honoured), verifies every file against the hub's hashes, converts the "
        "VQGAN checkpoint once to safetensors and checks the folder. Run it again to resume.",
    )
    get.add_argument(
        "repo_id", nargs="?", default=DEFAULT_REPO, metavar="REPO_ID", help=f"hub model (default {DEFAULT_REPO})"
    )
    get.add_argument("--dir", type=Path, help="model folder (default: DATA_DIR/models/NAME)")
    get.add_argument("--revision", help="branch, tag or commit of REPO_ID (default main)")
    get.add_argument(
        "--vqgan-repo",
        default=RELEASE_REPO,
        help=f"original release holding tokenizer/vqgan.ckpt (default {RELEASE_REPO}); 'none' to skip",
    )
    get.add_argument("--yes", action="store_true", help="download without asking (default: ask)")
    get.add_argument("--device", default="auto", help="device for the memory estimate (default auto)")
    get.set_defaults(handler=run_get)

    check = actions.add_parser(
        "check", help="what a model folder holds and lacks, and the memory it needs here; records a good one"
    )
    check.add_argument("path", type=Path, metavar="PATH", help="the model folder")
    check.add_argument("--device", default="auto", help="device for the memory estimate (default auto)")
    check.add_argument("--no-record", action="store_true", help="do not record the folder in the settings")
    check.set_defaults(handler=run_check)


def configured_model() -> str:
    """The model recorded in the settings; `demo` when none is."""
    from desktop.app.settings import load_settings, settings_path

    return load_settings(settings_path()).model or "demo"


def use_configured_model(parser: argparse.ArgumentParser) -> None:
    """Make the recorded model the `--model` default of `SETTINGS_COMMANDS` (their own default is `demo`)."""
    model = configured_model()
    if model == "demo":
        return
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, command in action.choices.items():
                if name in SETTINGS_COMMANDS:
                    command.set_defaults(model=model)


def run_get(args: argparse.Namespace) -> int:
    from desktop.services.model_download import DownloadPlan, default_destination, download, plan_download
    from store.paths import resolve_data_dir

    destination = args.dir or default_destination(resolve_data_dir(args.data_dir), args.repo_id)
    release = None if args.vqgan_repo.lower() == "none" else args.vqgan_repo
    plan: DownloadPlan = plan_download(destination, args.repo_id, revision=args.revision, release_repo=release)
    for line in plan.describe():
        print(line)
    if not plan.fits:
        from desktop.services.model_download import NotEnoughDiskError

        raise NotEnoughDiskError(plan.disk_problem())
    if plan.remaining and not args.yes and not _confirm():
        print("Nothing downloaded.")
        return 1
    download(plan, progress=progress_bar())
    print(f"Downloaded and verified into {plan.destination}")
    return _report(plan.destination, args.device, record=True)


def _confirm() -> bool:
    if not sys.stdin.isatty():
        print("familiar: not downloading without a yes: run it on a terminal, or add --yes", file=sys.stderr)
        return False
    return input("Download it? [y/N] ").strip().lower() in ("y", "yes")


def run_check(args: argparse.Namespace) -> int:
    return _report(args.path, args.device, record=not args.no_record)


def _report(path: Path, device: str, record: bool) -> int:
    from desktop.services.model_check import inspect_folder

    report = inspect_folder(path, device)
    _print_report(report)
    if not report.complete:
        print(f"familiar: error: the model folder {report.path} is not usable yet", file=sys.stderr)
        return 2
    if report.memory is not None and not report.memory.fits:
        print("Not recorded in the settings: it does not fit in memory here.")
    elif record:
        print(f"Recorded in {_record(report.path)}: the app and `familiar chat/generate/train/eval` now use it.")
    return 0


def _print_report(report: FolderReport) -> None:
    state = "complete" if report.complete else "incomplete" if report.missing else "damaged"
    print(f"Model folder {report.path}: {state}")
    print("Present: " + ("; ".join(report.present) or "nothing"))
    print("Missing: " + ("; ".join(report.missing) or "nothing"))
    if report.problem:
        print(f"Problem: {report.problem}")
    if report.memory is not None:
        print(f"Memory: {report.memory.message}")


def _record(folder: Path) -> Path:
    """Save the folder (`demo` for the embedded demo model) as the settings' model; returns the settings file."""
    from desktop.app.settings import load_settings, save_settings, settings_path
    from engine.model.loading import DEMO_NAME, demo_model_dir

    resolved = folder.expanduser().resolve()
    model = DEMO_NAME if resolved == demo_model_dir().resolve() else str(resolved)
    path = settings_path()
    save_settings(path, replace(load_settings(path), model=model))
    return path
