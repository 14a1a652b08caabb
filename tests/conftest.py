"""Shared fixtures: the real photos beside the repo, and the demo model."""

from __future__ import annotations

from pathlib import Path

import pytest

DREAMBOOTH = Path(__file__).resolve().parents[2] / "shared" / "data" / "dreambooth"


@pytest.fixture(scope="session")
def dreambooth() -> Path:
    """`../shared/data/dreambooth` (DreamBooth subjects, CC BY 4.0); tests skip where it is absent."""
    if not (DREAMBOOTH / "dog" / "00.jpg").is_file():
        pytest.skip(f"real photos not found at {DREAMBOOTH} (they live beside the repo, not in it)")
    return DREAMBOOTH


@pytest.fixture(autouse=True)
def private_library(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test's default library is a fresh temporary folder, never the user's real one."""
    folder = tmp_path_factory.mktemp("library")
    monkeypatch.setenv("FAMILIAR_DATA", str(folder))
    return folder
