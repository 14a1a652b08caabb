"""Where a new concept's rows start (`Recipe.start`): the class word, the photos' image tokens, or the words of a
description; an unknown start is refused; given start rows (an instant concept's) yield to the recipe's own only
where those score better."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from engine.concepts.layout import N_GENERATION
from engine.concepts.state import ConceptState
from engine.errors import EngineError
from engine.inference.assistant import Assistant
from engine.model.loading import LoadedModel, load_model
from engine.training.personalization import choose_start, encode, start_state
from engine.training.recipe import Recipe
from engine.training.selection import Scores


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


def _scores(score: float | None) -> Scores:
    return Scores(None, None, None, None, score)


@pytest.mark.parametrize(
    ("given_score", "own_score", "own_wins"),
    [(0.6, 0.8, True), (0.8, 0.6, False), (0.7, 0.7, False), (None, 0.9, False), (0.6, None, False)],
)
def test_given_start_rows_yield_to_the_recipes_own_only_where_those_score_better(
    demo: LoadedModel, given_score: float | None, own_score: float | None, own_wins: bool
) -> None:
    assistant = Assistant(demo)
    own = start_state(assistant, "bo", "pet", "", [], [], Recipe(start="class_word"))
    given = ConceptState("bo", own.embed + 0.01, own.head - 0.01, own.base_fingerprint)
    assistant.attach(given)
    checked: list[bool] = []

    def check() -> Scores:
        is_own = torch.equal(assistant.slots.state("bo").embed, own.embed)
        checked.append(is_own)
        return _scores(own_score if is_own else given_score)

    messages: list[str] = []
    chosen = choose_start(assistant, "bo", _scores(given_score), own, check, messages.append)
    expected = own if own_wins else given
    attached = assistant.slots.state("bo")
    assert torch.equal(attached.embed, expected.embed) and torch.equal(attached.head, expected.head)
    assert chosen.score == (own_score if own_wins else given_score)
    assert checked == ([] if given_score is None else [True])  # the own rows are scored once, when it can matter
    assert len(messages) == own_wins and all("recipe's own rows" in m for m in messages)
