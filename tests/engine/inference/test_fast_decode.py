"""The fast image decoder draws exactly the tokens of the reference loop for a seed."""

from __future__ import annotations

import pytest
import torch

from engine.concepts.slots import ConceptHead
from engine.inference.assistant import Assistant
from engine.inference.generation import GenerationCancelled, Sampling, sample_image_tokens
from engine.model.loading import LoadedModel

SAMPLINGS = {
    "greedy": Sampling(temperature=0, seed=1),
    "sampled": Sampling(seed=3),
    "truncated": Sampling(temperature=0.8, top_k=20, top_p=0.9, seed=4),
}


@pytest.fixture(scope="module")
def with_concept(demo: LoadedModel) -> Assistant:
    """The demo model with a concept attached whose rows differ from every base row."""
    assistant = Assistant(demo)
    state = assistant.slots.initial_state("bo", demo.tokenizer, "dog")
    generator = torch.Generator().manual_seed(0)
    state.embed.add_(torch.randn(state.embed.shape, generator=generator))
    state.head.add_(torch.randn(state.head.shape, generator=generator))
    assistant.attach(state)
    return assistant


def _both(assistant: Assistant, text: str, names: list[str], sampling: Sampling, guidance: float) -> list[torch.Tensor]:
    tokens = assistant.loaded.image_tokenizer
    prompts = assistant.prompts
    ids = [*prompts.prompt(text, None, names), *prompts.self_prompt(names, "image"), tokens.boi_id]
    unconditional = [*prompts.prompt("", None, []), tokens.boi_id]
    return [
        sample_image_tokens(
            assistant.loaded.model,
            ids,
            tokens.image_token_ids,
            tokens.tokens_per_image,
            sampling,
            guidance_scale=guidance,
            unconditional_ids=unconditional,
            reference=reference,
        )
        for reference in (True, False)
    ]


@pytest.mark.parametrize("guidance", [1.0, 3.0])
@pytest.mark.parametrize("kind", SAMPLINGS)
def test_fast_decoder_draws_the_reference_tokens(with_concept: Assistant, kind: str, guidance: float) -> None:
    reference, fast = _both(with_concept, "A red dog on a beach", [], SAMPLINGS[kind], guidance)
    assert fast.shape == (with_concept.loaded.image_tokenizer.tokens_per_image,)
    assert torch.equal(fast, reference)


@pytest.mark.parametrize("guidance", [1.0, 3.0])
def test_fast_decoder_matches_with_a_concept_in_the_prompt(with_concept: Assistant, guidance: float) -> None:
    reference, fast = _both(with_concept, "A photo of <bo> in the snow", ["bo"], Sampling(seed=5), guidance)
    assert torch.equal(fast, reference)
    plain, _ = _both(with_concept, "A photo of a dog in the snow", [], Sampling(seed=5), guidance)
    assert not torch.equal(plain, reference), "the concept's rows should change the picture"


def test_head_rows_include_attached_concepts(with_concept: Assistant) -> None:
    head = with_concept.loaded.model.get_output_embeddings()
    assert isinstance(head, ConceptHead)
    slot = with_concept.slots.slot("bo")
    ids = torch.tensor([5, *slot.generation[:3], 700])
    hidden = torch.randn(2, head.weight.shape[1], generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.allclose(hidden @ head.rows(ids).T, head(hidden)[:, ids], atol=1e-5)
        assert not torch.allclose(head.rows(ids)[1], head.weight[slot.generation[0]])


def test_fast_decoder_reports_progress_and_can_be_cancelled(with_concept: Assistant) -> None:
    tokens = with_concept.loaded.image_tokenizer
    ids = [*with_concept.prompts.prompt("A cat"), tokens.boi_id]
    steps: list[int] = []
    with pytest.raises(GenerationCancelled):
        sample_image_tokens(
            with_concept.loaded.model,
            ids,
            tokens.image_token_ids,
            tokens.tokens_per_image,
            Sampling(seed=1),
            progress=lambda p: steps.append(p.step),
            cancelled=lambda: len(steps) >= 5,
        )
    assert steps == [1, 2, 3, 4, 5]
