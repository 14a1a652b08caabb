"""Entry point of the packaged app (build.spec): one script behind two executables in one folder.

`familiar` (console) is the full command line; `familiar-gui` (windowed, no console on Windows and macOS)
opens the desktop app, its arguments being `familiar app`'s (e.g. `--smoke-test OUT.png`).
"""

from __future__ import annotations

import multiprocessing
import os
import sys
from collections.abc import Sequence

CLI_NAME = "familiar"
GUI_NAME = "familiar-gui"


def frozen_argv(executable: str, argv: Sequence[str]) -> list[str]:
    """The `familiar` arguments for `argv` given to `executable`: the GUI executable means `familiar app`."""
    name = executable.replace("\\", "/").rsplit("/", 1)[-1].lower().removesuffix(".exe")
    return ["app", *argv] if name == GUI_NAME else list(argv)


def _fill_missing_streams() -> None:
    """A windowed executable has no stdout/stderr on Windows (None): anything that prints would raise."""
    for name in ("stdout", "stderr"):
        if getattr(sys, name) is None:
            setattr(sys, name, open(os.devnull, "w", encoding="utf-8"))  # noqa: SIM115 (lives as long as the app)


def main(argv: Sequence[str] | None = None) -> int:
    multiprocessing.freeze_support()
    _fill_missing_streams()
    from desktop.cli.main import main as cli_main

    return cli_main(frozen_argv(sys.executable, sys.argv[1:] if argv is None else argv))


if __name__ == "__main__":
    sys.exit(main())
