"""The wheel that `pip install .` builds holds every module, `engine/py.typed`, the `familiar` command and the
whole `resources/` folder as `familiar_resources` (where `resources_dir` finds it once installed)."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("desktop", "engine", "store")
SOURCES = ("pyproject.toml", "setup.py", "README.md", *PACKAGES, "resources")


def _build_wheel(tmp_path: Path) -> Path:
    """Build from a copy of the sources, so that the checkout gets no build/ or egg-info (whose leftovers would
    end up in later wheels)."""
    source = tmp_path / "source"
    source.mkdir()
    for name in SOURCES:
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(ROOT / name, source / name)
    command = [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "--no-index"]
    subprocess.run([*command, "-w", str(tmp_path / "dist"), str(source)], check=True, capture_output=True)
    (wheel,) = (tmp_path / "dist").glob("familiar-*.whl")
    return wheel


def test_wheel_holds_every_module_and_the_resources(tmp_path: Path) -> None:
    with zipfile.ZipFile(_build_wheel(tmp_path)) as wheel:
        names = set(wheel.namelist())
        (entry_points,) = [name for name in names if name.endswith(".dist-info/entry_points.txt")]
        commands = wheel.read(entry_points).decode()
    modules = {
        path.relative_to(ROOT).as_posix()
        for package in PACKAGES
        for path in (ROOT / package).rglob("*.py")
        if "__pycache__" not in path.parts
    }
    assert {"desktop/cli/__init__.py", "desktop/services/__init__.py", "engine/microworld/__init__.py"} <= modules
    assert modules - names == set()
    resources = {
        "familiar_resources/" + path.relative_to(ROOT / "resources").as_posix()
        for path in (ROOT / "resources").rglob("*")
        if path.is_file()
    }
    assert "familiar_resources/demo-model/model.safetensors" in resources
    assert resources - names == set()
    assert "engine/py.typed" in names
    assert "familiar = desktop.cli.main:main" in commands
