"""`familiar app`: open the desktop window; `--smoke-test OUT.png` opens it offscreen, waits until the model
has loaded, saves a screenshot and exits. Before Qt starts, `desktop.app.qt_platform` checks that Qt can open
a window here; if not, one line says what to install. Qt and torch are imported only inside the handler."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    app = sub.add_parser("app", help="open the desktop app")
    app.add_argument(
        "--smoke-test", type=Path, metavar="OUT.png", help="open offscreen, wait until idle, save a screenshot, exit"
    )
    app.add_argument("--timeout", type=float, default=120.0, help="seconds --smoke-test waits for the model")
    app.set_defaults(handler=run_app)


def run_app(args: argparse.Namespace) -> int:
    from desktop.app.qt_platform import window_problem

    if args.smoke_test is not None:
        os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    problem = window_problem(os.environ)
    if problem is not None:
        print(f"familiar: error: {problem}", file=sys.stderr)
        return 2
    from desktop.app.launch import run_app as launch

    return launch(args.data_dir, args.smoke_test, args.timeout)
