"""What `familiar bench personalization` and `familiar bench cost` share: reading saved results for
`--report-only`, refusing bad settings, loading the micro-world model, timed report lines and saving results."""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from collections.abc import Callable
from typing import Any

from desktop.cli.progress import Bar, progress_bar


def saved_results(args: argparse.Namespace, what: str) -> dict[str, Any]:
    """The results in `-o` that `--report-only` rewrites the `--docs` report from; `what` names them in errors."""
    from engine.errors import EngineError

    if args.output is None or args.docs is None:
        raise EngineError("--report-only reads the results in -o and writes the report to --docs: give both")
    try:
        return json.loads(args.output.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise EngineError(f"cannot read {what} results {args.output}: {exc}") from None


def check_settings(settings: Any, seeds: int) -> None:
    """Refuse invalid benchmark `settings` (anything with `validate()`) or fewer than one seed, plainly."""
    from engine.errors import EngineError

    try:
        settings.validate()
        if seeds < 1:
            raise ValueError("--seeds must be at least 1")
    except ValueError as exc:
        raise EngineError(str(exc)) from None


def load_microworld(args: argparse.Namespace, what: str) -> Any:
    """The micro-world model `--model` on the CPU with `--threads` torch threads; any other model is refused."""
    import torch

    from engine.errors import EngineError
    from engine.microworld.world import SIZE
    from engine.model.loading import load_model

    torch.set_num_threads(args.threads)
    loaded = load_model(args.model, device="cpu", progress=progress_bar())
    tokens = loaded.image_tokenizer
    if tokens.resolution != SIZE:
        raise EngineError(
            f"the {what} needs a micro-world model ({SIZE}x{SIZE} pictures); "
            f"{args.model} draws {tokens.resolution}x{tokens.resolution}"
        )
    return loaded


def timed_lines(progress: Any) -> Callable[[str], None]:
    """A report that stamps each line with the seconds since now: above `progress`'s bar on a terminal, on stderr
    otherwise."""
    started = time.monotonic()

    def say(message: str) -> None:
        line = f"[{time.monotonic() - started:6.0f} s] {message}"
        if isinstance(progress, Bar):
            progress.above(line)
        else:
            print(line, file=sys.stderr, flush=True)

    return say


def save_results(results: dict[str, Any], args: argparse.Namespace, loaded: Any, command: str) -> None:
    """Record the command, machine and model in `results`, and write them to `-o` where given."""
    import torch

    results["command"] = command
    results["machine"] = f"{platform.machine()}, {torch.get_num_threads()} torch threads, {platform.python_version()}"
    results["model"] = {"source": loaded.source, "fingerprint": loaded.fingerprint, "demo": loaded.is_demo}
    if args.output is not None:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8")
        print(f"wrote {args.output}")
