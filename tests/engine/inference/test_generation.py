"""Sampling: image tokens follow the model's own distribution; chat streams; seeds repeat."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PIL import Image

from engine.inference.assistant import SHOWN_SIZE, Assistant
from engine.inference.generation import GenerationCancelled, Sampling, restricted_probs, sample_image_tokens
from engine.model.loading import LoadedModel, demo_model_dir, random_model, read_config

TINY_LM = {"hidden_size": 64, "intermediate_size": 176, "num_hidden_layers": 2}


@pytest.fixture(scope="module")
def peaked() -> Assistant:
    """A small model of the demo's layout (its vocabulary and VQ shape) with seeded random weights and the
    head scaled up, so its image-token distribution is far from uniform (a uniform sampler would then be
    caught) yet not degenerate, whatever the shipped demo weights are."""
    config = read_config(demo_model_dir())
    for key, value in TINY_LM.items():
        setattr(config, key, value)
    loaded = random_model(config, torch.device("cpu"), quantize=False, seed=0)
    with torch.no_grad():
        loaded.model.lm_head.weight.mul_(20)
    return Assistant(loaded)


def _direct_image_probs(assistant: Assistant, ids: list[int]) -> torch.Tensor:
    """Full forward without cache; softmax over the whole vocabulary, then restricted and renormalised."""
    image_ids = assistant.loaded.image_tokenizer.image_token_ids
    with torch.no_grad():
        logits = assistant.loaded.model(input_ids=torch.tensor([ids])).logits[0].float()
    probs = torch.softmax(logits, dim=-1)[:, image_ids]
    return probs / probs.sum(-1, keepdim=True)


def test_sampler_probabilities_match_a_direct_computation(peaked: Assistant) -> None:
    tokens = peaked.loaded.image_tokenizer
    prompt = [*peaked.prompts.prompt("A red dog on a beach"), tokens.boi_id]
    direct = _direct_image_probs(peaked, prompt)[-1]
    with torch.no_grad():
        logits = peaked.loaded.model(input_ids=torch.tensor([prompt])).logits[0, -1]
    sampler = restricted_probs(logits, tokens.image_token_ids, temperature=1.0, top_k=None)
    assert torch.allclose(sampler, direct, atol=1e-6)
    uniform_entropy = math.log(len(tokens.image_token_ids))
    entropy = float(-(direct * direct.clamp_min(1e-30).log()).sum())
    assert entropy < uniform_entropy - 0.5, "distribution is close to uniform: the test would not catch the trap"
    assert float(direct.max()) < 0.99, "distribution is degenerate"


def test_sampled_frequencies_follow_the_model(peaked: Assistant) -> None:
    tokens = peaked.loaded.image_tokenizer
    prompt = [*peaked.prompts.prompt("A photo of a cat"), tokens.boi_id]
    direct = _direct_image_probs(peaked, prompt)[-1].numpy()
    draws = 400
    counts = np.zeros_like(direct)
    position = {int(t): i for i, t in enumerate(tokens.image_token_ids)}
    for seed in range(draws):
        token = sample_image_tokens(peaked.loaded.model, prompt, tokens.image_token_ids, 1, Sampling(seed=seed))
        counts[position[int(token[0])]] += 1
    total_variation = 0.5 * np.abs(counts / draws - direct).sum()
    uniform_distance = 0.5 * np.abs(1 / len(direct) - direct).sum()
    assert total_variation < 0.2 < uniform_distance


def test_whole_image_is_likely_under_teacher_forcing(peaked: Assistant) -> None:
    """Every step of cached whole-image samples was drawn from the distribution a full forward gives. The
    demo's pictures are 64 tokens, so 16 of them are pooled (1,024 steps, as many as one real picture)."""
    tokens = peaked.loaded.image_tokenizer
    prompt = [*peaked.prompts.prompt("A toy"), tokens.boi_id]
    position = {int(t): i for i, t in enumerate(tokens.image_token_ids)}
    log_probs, expected = [], []
    for seed in range(16):
        sampled = sample_image_tokens(
            peaked.loaded.model, prompt, tokens.image_token_ids, tokens.tokens_per_image, Sampling(seed=seed)
        )
        assert sampled.shape == (tokens.tokens_per_image,)
        assert set(sampled.tolist()) <= set(tokens.image_token_ids.tolist())
        probs = _direct_image_probs(peaked, prompt + sampled.tolist()[:-1])[len(prompt) - 1 :]
        chosen = probs[torch.arange(len(sampled)), torch.tensor([position[int(t)] for t in sampled])]
        log_probs.append(chosen.clamp_min(1e-30).log())
        expected.append((probs * probs.clamp_min(1e-30).log()).sum(-1))  # minus each step's entropy
    mean_log_prob, mean_expected = float(torch.cat(log_probs).mean()), float(torch.cat(expected).mean())
    assert abs(mean_log_prob - mean_expected) < 0.25
    assert mean_log_prob > math.log(1 / len(position)) + 0.5


def test_temperature_zero_is_greedy_and_top_k_truncates() -> None:
    logits = torch.tensor([0.0, 3.0, 1.0, 2.0, -1.0])
    allowed = torch.tensor([0, 2, 3, 4])
    greedy = restricted_probs(logits, allowed, temperature=0, top_k=None)
    assert greedy.tolist() == [0.0, 0.0, 1.0, 0.0]
    top2 = restricted_probs(logits, allowed, temperature=1.0, top_k=2)
    assert top2[0] == 0 and top2[3] == 0
    assert torch.allclose(top2[1:3], torch.softmax(torch.tensor([1.0, 2.0]), 0))


def test_same_seed_same_image_and_decodes_to_pixels(assistant: Assistant) -> None:
    first = assistant.generate("A dog in the snow", Sampling(seed=7))
    second = assistant.generate("A dog in the snow", Sampling(seed=7))
    assert torch.equal(first.tokens, second.tokens)
    assert first.seed == 7 and first.from_demo
    pixels = np.asarray(first.image)
    assert first.image.size == (SHOWN_SIZE, SHOWN_SIZE) and pixels.std() > 1


def test_guidance_changes_the_image(assistant: Assistant) -> None:
    plain = assistant.generate("A cat", Sampling(seed=2))
    guided = assistant.generate("A cat", Sampling(seed=2), guidance_scale=3.0)
    assert not torch.equal(plain.tokens, guided.tokens)


def test_generation_can_be_cancelled(assistant: Assistant) -> None:
    steps: list[int] = []
    with pytest.raises(GenerationCancelled):
        assistant.generate(
            "A cat", Sampling(seed=1), progress=lambda p: steps.append(p.step), cancelled=lambda: len(steps) >= 5
        )
    assert len(steps) == 5


def test_chat_streams_text_about_a_photo(assistant: Assistant, demo: LoadedModel) -> None:
    assistant.attach(assistant.slots.initial_state("bo", demo.tokenizer, "dog"))
    photo = Image.new("RGB", (300, 200), (200, 30, 30))
    pieces = list(assistant.chat("Is <bo> in this photo?", photo, Sampling(seed=0), max_new_tokens=12))
    assert pieces and all(isinstance(p, str) for p in pieces)
    again = "".join(assistant.chat("Is <bo> in this photo?", photo, Sampling(seed=0), max_new_tokens=12))
    assert again == "".join(pieces)


def test_automatic_mode_follows_the_first_token(assistant: Assistant, demo: LoadedModel) -> None:
    if "bo" not in assistant.slots.names():
        assistant.attach(assistant.slots.initial_state("bo", demo.tokenizer, "dog"))
    params = assistant.slots.params("bo")
    text = "<bo> in a library"
    with torch.no_grad():
        params.head[1] = 0.0
        assert not assistant.wants_image(text)
        prompt = torch.tensor([assistant.prompts.prompt(text)])
        hidden = demo.model.model(input_ids=prompt).last_hidden_state[0, -1]
        params.head[1] = 50 * hidden / hidden.norm() ** 2  # the first generation token's logit becomes 50
    assert assistant.wants_image(text)
    response = assistant.respond(text, sampling=Sampling(seed=0))
    assert response.kind == "image" and response.image is not None


def test_automatic_mode_draws_a_request_to_draw(assistant: Assistant, demo: LoadedModel) -> None:
    """ "Draw <bo> at the beach" is drawn, as "A photo of <bo> at the beach.", even where the model's first token
    would open an answer; the same words with a photo attached are left to the model."""
    if "bo" not in assistant.slots.names():
        assistant.attach(assistant.slots.initial_state("bo", demo.tokenizer, "dog"))
    text = "Draw <bo> at the beach"
    with torch.no_grad():
        assistant.slots.params("bo").head[1] = 0.0
        assert not assistant.wants_image(text)
    response = assistant.respond(text, sampling=Sampling(seed=0))
    assert response.kind == "image" and response.image is not None
    assert response.image.prompt == "A photo of <bo> at the beach."
    photo = Image.new("RGB", (32, 32), "white")
    assert assistant.drawing_for(text, photo) is None
