"""Where a new concept's rows start (`Recipe.start`): the class word, the photos' image tokens, or the words of a
description; an unknown start is refused."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from engine.concepts.layout import N_GENERATION
from engine.errors import EngineError
from engine.inference.assistant import Assistant
from engine.model.loading import LoadedModel, load_model
from engine.training.personalization import encode, start_state
from engine.training.recipe import Recipe


@pytest.fixture(scope="module")
def demo() -> LoadedModel:
    return load_model()


def test_each_start_puts_its_rows_in_the_latent_sets(demo: LoadedModel) -> None:
    assistant = Assistant(demo)
    weight = demo.model.get_input_embeddings().weight.detach().float()
    photos = encode(assistant, [Image.new("RGB", (32, 32), (30, 90, 200))])
    description = "A small red striped circle on grass."

    def latent(start: str, descriptions: list[str]) -> torch.Tensor:
        state = start_state(assistant, "bo", "pet", "", photos, descriptions, Recipe(start=start))
        return state.embed[1 : 1 + N_GENERATION]

    word = latent("class_word", [description])
    assert torch.equal(word, word[:1].expand_as(word))
    assert set(torch.cdist(latent("photos", []), weight).argmin(1).tolist()) <= set(photos[0])
    words = demo.tokenizer.encode(f" {description}", add_special_tokens=False)
    expected = [words[i % len(words)] for i in range(N_GENERATION)]
    assert torch.equal(latent("description", [description]), weight[expected])
    assert torch.equal(latent("description", []), word)  # nothing described: the class word


def test_an_unknown_start_is_refused() -> None:
    with pytest.raises(EngineError, match="unknown start rows 'dream'"):
        Recipe(start="dream")
