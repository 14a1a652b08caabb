"""Engine fixtures: the demo model, loaded fresh per test module (concept slots modify its wrappers)."""

from __future__ import annotations

import pytest

from engine.inference.assistant import Assistant
from engine.model.loading import LoadedModel, load_model


@pytest.fixture(scope="module")
def demo() -> LoadedModel:
    return load_model("demo", device="cpu")


@pytest.fixture(scope="module")
def assistant(demo: LoadedModel) -> Assistant:
    return Assistant(demo)
