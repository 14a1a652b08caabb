"""The application services stay light: importing one pulls in neither torch, Qt nor argparse (torch imports
argparse), so the GUI and the CLI can import them before the model loads."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
HEAVY = ("torch", "PySide6", "argparse")


@pytest.mark.parametrize(
    "module",
    [
        "conversation",
        "drawing",
        "evaluate",
        "instant",
        "library_concepts",
        "model_check",
        "model_download",
        "personalize",
        "verdict",
    ],
)
def test_importing_a_service_loads_no_heavy_module(module: str) -> None:
    code = (
        f"import json, sys, desktop.services.{module}; "
        f"print(json.dumps([name for name in {HEAVY!r} if name in sys.modules]))"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert json.loads(done.stdout) == []
