"""The `familiar` command line: a thin argparse front over the engine and the store.

Subcommands live in the modules beside this one, each with a `register(subparsers)` function; heavy imports
(torch, transformers) happen inside the handlers so that `familiar --help` and library commands are fast.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from desktop import __version__
from desktop.cli import aligner, app, bench, chat, evaluate, index, library, model, serve, train
from desktop.cli.help import DefaultsHelpFormatter, use_defaults_formatter
from engine.errors import EngineError
from store.errors import StoreError

COMMAND_MODULES = (chat, serve, library, train, index, aligner, app, evaluate, bench, model)


def build_parser() -> argparse.ArgumentParser:
    """The full parser with every subcommand registered."""
    parser = argparse.ArgumentParser(
        prog="familiar",
        description="Teach a local model your own concepts, then talk about them and draw them.",
        formatter_class=DefaultsHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"familiar {__version__}")
    parser.add_argument(
        "--data-dir",
        default=None,
        help="library folder (default: $FAMILIAR_DATA, else the platform's user data folder)",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in COMMAND_MODULES:
        module.register(sub)
    model.use_configured_model(parser)
    use_defaults_formatter(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; user errors print one line to stderr and return a non-zero status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "handler", None) is None:
        parser.print_help()
        return 2
    try:
        return int(args.handler(args) or 0)
    except (EngineError, StoreError) as exc:
        message = " ".join(str(exc).split())  # one line, even when a library's message spans several
        print(f"familiar: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("familiar: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
