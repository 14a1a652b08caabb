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
