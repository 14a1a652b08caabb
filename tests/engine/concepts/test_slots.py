"""Concept slots: base tensors untouched, gradients reach only the concept, states bound to their model."""

from __future__ import annotations

import copy
import dataclasses
from pathlib import Path

import bitsandbytes as bnb
import pytest
import torch
from PIL import Image
from torch import nn

from engine.concepts.layout import N_GENERATION
from engine.concepts.prompts import IGNORE, Prompts
from engine.concepts.slots import mean_row
from engine.concepts.start_rows import photo_rows
from engine.concepts.state import SLOT_SIZE, ConceptState
from engine.errors import ConceptStateError, SlotError
from engine.inference.assistant import Assistant
from engine.model.loading import LoadedModel, load_model


def _snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    return {name: tensor.detach().clone() for name, tensor in model.state_dict().items()}


def _loss(assistant: Assistant, name: str, answer: str = "Yes, it is my dog.") -> torch.Tensor:
    prompts: Prompts = assistant.prompts
    sample = prompts.sample(prompts.prompt(f"Is <{name}> in this photo?"), prompts.text_target(answer, [name]))
    ids = torch.tensor([sample.ids])
    labels = torch.tensor([sample.labels])
    logits = assistant.loaded.model(input_ids=ids).logits
    return nn.functional.cross_entropy(logits[0, :-1].float(), labels[0, 1:], ignore_index=IGNORE)


def test_base_is_bit_identical_after_attach_train_step_and_detach(demo: LoadedModel) -> None:
    assistant = Assistant(demo)
    before = _snapshot(demo.model)
    assistant.attach(assistant.slots.initial_state("bo", demo.tokenizer, "dog"))
    params = assistant.slots.params("bo")
    start = [p.detach().clone() for p in params.parameters()]
    optimizer = torch.optim.AdamW(params.parameters(), lr=1e-2, weight_decay=0.1)
    params.requires_grad_(True)
    for _ in range(3):
        optimizer.zero_grad()
        loss = _loss(assistant, "bo")
        loss.backward()
        optimizer.step()
    assert all(not torch.equal(a, b.detach()) for a, b in zip(start, params.parameters(), strict=True))
    assert not any(p.grad is not None for p in demo.model.parameters())
    assistant.slots.detach("bo")
    after = _snapshot(demo.model)
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_training_lowers_the_loss(demo: LoadedModel) -> None:
    assistant = Assistant(demo)
    assistant.attach(assistant.slots.initial_state("rex", demo.tokenizer, "dog"))
    params = assistant.slots.params("rex").requires_grad_(True)
    # 5e-2 overshot on the fourth micro-world model (loss 10.7 -> 5.8 -> 17.5); 1e-2 falls steadily to 3.6.
    optimizer = torch.optim.AdamW(params.parameters(), lr=1e-2)
    losses = []
    for _ in range(15):
        optimizer.zero_grad()
        loss = _loss(assistant, "rex")
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] - 0.5


def _dequantized_copy(model: nn.Module) -> nn.Module:
    reference = copy.deepcopy(model)
    for parent in list(reference.modules()):
        for child_name, child in list(parent.named_children()):
            if isinstance(child, bnb.nn.Linear4bit):
                weight = bnb.functional.dequantize_4bit(child.weight.data, child.weight.quant_state)
                linear = nn.Linear(child.in_features, child.out_features, bias=child.bias is not None)
                linear.weight = nn.Parameter(weight.float(), requires_grad=False)
                if child.bias is not None:
                    linear.bias = nn.Parameter(child.bias.detach().float(), requires_grad=False)
                setattr(parent, child_name, linear)
    return reference


def test_gradients_through_4bit_layers_match_a_dequantized_reference() -> None:
    quantized = load_model("demo", device="cpu", quantize=True)
    reference_model = _dequantized_copy(quantized.model)
    assert not any(isinstance(m, bnb.nn.Linear4bit) for m in reference_model.modules())
    assistant = Assistant(quantized)
    reference = Assistant(dataclasses.replace(quantized, model=reference_model))
    state = assistant.slots.initial_state("bo", quantized.tokenizer, "dog")
    state.embed += 0.05 * torch.randn(state.embed.shape, generator=torch.Generator().manual_seed(0))
    assistant.attach(state)
    reference.attach(state)
    with torch.no_grad():  # the eval, no-grad forward that triggers bitsandbytes' CPU repacking
        _loss(assistant, "bo")

    grads = []
    for owner in (assistant, reference):
        params = owner.slots.params("bo").requires_grad_(True)
        _loss(owner, "bo").backward()
        grads.append((params.embed.grad.clone(), params.head.grad.clone()))
    for got, want in zip(grads[0], grads[1], strict=True):
        assert want.abs().max() > 0
        assert torch.allclose(got, want, rtol=1e-3, atol=1e-6), (got - want).abs().max()


def test_a_slot_is_identifier_then_generation_then_understanding(demo: LoadedModel) -> None:
    assistant = Assistant(demo)
    slot = assistant.attach(assistant.slots.initial_state("a", demo.tokenizer))
    assert len(slot.ids) == SLOT_SIZE and len(set(slot.ids)) == SLOT_SIZE
    assert slot.generation == slot.ids[1:17] and slot.understanding == slot.ids[17:]


def test_several_concepts_at_once_and_slot_reuse(demo: LoadedModel) -> None:
    assistant = Assistant(demo)
    one = assistant.attach(assistant.slots.initial_state("one", demo.tokenizer, "dog"))
    two = assistant.attach(assistant.slots.initial_state("two", demo.tokenizer, "cat"))
    assert not set(one.ids) & set(two.ids)
    ids = assistant.prompts.prompt("Are <one> and <two> friends?")
    assert one.identifier in ids and two.identifier in ids
    assert assistant.prompts.render(assistant.prompts.text("<one> and <two>")) == "<one> and <two>"
    with pytest.raises(SlotError, match="already loaded"):
        assistant.attach(assistant.slots.initial_state("ONE", demo.tokenizer))
    assistant.slots.detach("one")
    three = assistant.attach(assistant.slots.initial_state("three", demo.tokenizer))
    assert three.ids == one.ids
    while len(assistant.slots.names()) < assistant.slots.capacity:
        assistant.attach(assistant.slots.initial_state(f"c{len(assistant.slots.names())}", demo.tokenizer))
    with pytest.raises(SlotError, match="slots are in use"):
        assistant.attach(assistant.slots.initial_state("extra", demo.tokenizer))


def test_initial_rows_are_the_class_word_or_all_rows_mean(demo: LoadedModel) -> None:
    assistant = Assistant(demo)
    embed = demo.model.get_input_embeddings().weight.detach()
    head = demo.model.get_output_embeddings().weight.detach()
    ids = demo.tokenizer.encode(" dog", add_special_tokens=False)
    dog = assistant.slots.initial_state("bo", demo.tokenizer, "dog")
    assert torch.equal(dog.embed, embed.float()[ids].mean(0).expand(SLOT_SIZE, -1))
    assert torch.equal(dog.head, head.float()[ids].mean(0).expand(SLOT_SIZE, -1))
    neutral = assistant.slots.initial_state("bo", demo.tokenizer)
    torch.testing.assert_close(neutral.embed, embed.float().mean(0).expand(SLOT_SIZE, -1), rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(neutral.head, head.float().mean(0).expand(SLOT_SIZE, -1), rtol=1e-5, atol=1e-7)


def test_latent_start_rows_fill_both_latent_sets_and_nothing_else(demo: LoadedModel) -> None:
    assistant = Assistant(demo)
    embed = demo.model.get_input_embeddings().weight.detach().float()
    photo = demo.image_tokenizer.encode([Image.new("RGB", (32, 32), (200, 30, 30))])[0].tolist()
    latent = photo_rows(embed, [photo], N_GENERATION)
    dog = assistant.slots.initial_state("bo", demo.tokenizer, "dog")
    started = assistant.slots.initial_state("bo", demo.tokenizer, "dog", latent)
    assert torch.equal(started.embed[0], dog.embed[0]) and torch.equal(started.head, dog.head)
    assert torch.equal(started.embed[1 : 1 + N_GENERATION], latent)
    assert torch.equal(started.embed[1 + N_GENERATION :], latent)
    assert set(torch.cdist(latent, embed).argmin(1).tolist()) <= set(photo)
    with pytest.raises(SlotError, match="latent start rows"):
        assistant.slots.initial_state("bo", demo.tokenizer, "dog", latent[:3])


def test_mean_row_casts_a_chunk_at_a_time_with_the_same_mean() -> None:
    weight = torch.randn(1000, 8, generator=torch.Generator().manual_seed(0)).bfloat16()
    for chunk in (1, 7, 1000, 4096):
        torch.testing.assert_close(mean_row(weight, [], chunk), weight.float().mean(0), rtol=1e-5, atol=1e-6)
    assert torch.equal(mean_row(weight, [3, 5]), weight.float()[[3, 5]].mean(0))


def test_embedding_and_logits_use_the_concept_rows(demo: LoadedModel) -> None:
    assistant = Assistant(demo)
    state = assistant.slots.initial_state("bo", demo.tokenizer)
    state.embed[0] = 3.0
    state.head[5] = 0.5
    slot = assistant.attach(state)
    embedded = demo.model.get_input_embeddings()(torch.tensor([[slot.identifier, 10]]))
    assert torch.equal(embedded[0, 0], torch.full_like(embedded[0, 0], 3.0))
    assert torch.equal(embedded[0, 1], demo.model.get_input_embeddings().base.weight[10])
    hidden = torch.randn(1, 2, demo.config.hidden_size)
    logits = demo.model.get_output_embeddings()(hidden)
    assert torch.allclose(logits[0, :, slot.ids[5]], hidden[0] @ state.head[5])


def test_state_round_trip_and_foreign_state_refused(tmp_path: Path, demo: LoadedModel) -> None:
    assistant = Assistant(demo)
    state = assistant.slots.initial_state("bo", demo.tokenizer, "dog")
    path = tmp_path / "bo.safetensors"
    state.save(path)
    rows = 2 * len(state.embed) * demo.config.hidden_size * 4  # embedding and head rows, float32
    assert rows < path.stat().st_size < rows + 4096  # the rows and a small header, nothing else
    loaded = ConceptState.load(path, demo.fingerprint)
    assert torch.equal(loaded.embed, state.embed) and loaded.name == "bo"

    foreign = ConceptState(name="bo", embed=state.embed, head=state.head, base_fingerprint="f" * 64)
    foreign.save(path)
    with pytest.raises(ConceptStateError, match="another base model"):
        ConceptState.load(path, demo.fingerprint)
    with pytest.raises(ConceptStateError, match="another base model"):
        assistant.attach(foreign)


@pytest.mark.parametrize(
    ("payload", "message"),
    [(b"not a safetensors file", "not a valid safetensors"), (b"", "not a valid safetensors")],
)
def test_malformed_state_refused(tmp_path: Path, payload: bytes, message: str) -> None:
    path = tmp_path / "bad.safetensors"
    path.write_bytes(payload)
    with pytest.raises(ConceptStateError, match=message):
        ConceptState.load(path)


def test_state_with_wrong_shape_or_nan_refused(demo: LoadedModel) -> None:
    good = Assistant(demo).slots.initial_state("x", demo.tokenizer)
    short = ConceptState("x", good.embed[:10], good.head[:10], good.base_fingerprint)
    with pytest.raises(ConceptStateError, match="expected"):
        ConceptState.from_bytes(short.to_bytes())
    nan = ConceptState("x", good.embed.clone(), good.head, good.base_fingerprint)
    nan.embed[0, 0] = float("nan")
    with pytest.raises(ConceptStateError, match="NaN"):
        ConceptState.from_bytes(nan.to_bytes())


def test_load_writes_a_states_rows_and_refuses_other_shapes(demo: LoadedModel) -> None:
    assistant = Assistant(demo)
    assistant.attach(assistant.slots.initial_state("bo", demo.tokenizer, "dog"))
    other = assistant.slots.initial_state("bo", demo.tokenizer, "cat")
    assistant.slots.load("bo", other)
    loaded = assistant.slots.state("bo")
    assert torch.equal(loaded.embed, other.embed) and torch.equal(loaded.head, other.head)
    short = dataclasses.replace(other, embed=other.embed[:-1], head=other.head[:-1])
    with pytest.raises(SlotError, match="shape"):
        assistant.slots.load("bo", short)
    assistant.slots.detach("bo")
