from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from store import faults
from store.library import Library
from tests.store.helpers import DREAMBOOTH, dreambooth


@pytest.fixture
def library(tmp_path: Path) -> Iterator[Library]:
    with Library.open(tmp_path / "library") as lib:
        yield lib


@pytest.fixture
def dog_photos() -> list[Path]:
    photos = dreambooth("dog", 4)
    if len(photos) < 4:
        pytest.skip(f"the DreamBooth photos are not at {DREAMBOOTH} (shared data beside the repository)")
    return photos


@pytest.fixture
def cat_photos() -> list[Path]:
    photos = dreambooth("cat", 3)
    if len(photos) < 3:
        pytest.skip(f"the DreamBooth photos are not at {DREAMBOOTH} (shared data beside the repository)")
    return photos


@pytest.fixture(autouse=True)
def _no_fault_hook() -> Iterator[None]:
    yield
    faults.install(None)
