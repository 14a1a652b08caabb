"""Evaluation metrics on known inputs, the CLIP and DINO loaders on tiny random models, and the evaluation
helpers (QA scoring, base-model check) on the demo model."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import open_clip
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from engine.errors import EngineError, ModelNotFoundError
from engine.evaluation import measure as evaluation
from engine.evaluation import metrics
from engine.evaluation.encoders import dino_pixels, load_clip, load_dinov1
from engine.inference.assistant import Assistant
from engine.retrieval.embedder import load_embedder

TINY_CLIP = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "head_width": 16, "patch_size": 16},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}


def tiny_clip(folder: Path) -> Path:
    """A random open_clip model with both towers, saved in open_clip's hub layout."""
    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    model = open_clip.CLIP(**TINY_CLIP)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, folder / "open_clip_model.safetensors")
    (folder / "open_clip_config.json").write_text(json.dumps({"model_cfg": TINY_CLIP, "preprocess_cfg": {}}))
    return folder


def tiny_dino(folder: Path) -> Path:
    """A random ViT-S/16-shaped (but tiny) DINO, saved with save_pretrained."""
    from transformers import ViTConfig, ViTModel

    torch.manual_seed(0)
    config = ViTConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64)
    ViTModel(config, add_pooling_layer=False).save_pretrained(folder)
    return folder


def photos() -> list[Image.Image]:
    rng = np.random.default_rng(0)
    return [Image.fromarray(rng.integers(0, 256, (48 + 8 * i, 64, 3), dtype=np.uint8)) for i in range(3)]


def test_always_yes_scores_half_and_a_perfect_recogniser_one() -> None:
    test = {"bo": ["bo1", "bo2"], "mimi": ["mimi1"], "rex": ["rex1", "rex2", "rex3"]}
    always = metrics.recognition(lambda _name, _photo: True, test)
    assert all(r.positive == 1.0 and r.negative == 0.0 and r.weighted == 0.5 for r in always.values())
    assert (always["bo"].positives, always["bo"].negatives) == (2, 4)
    perfect = metrics.recognition(lambda name, photo: photo.startswith(name), test)
    assert all(r.weighted == 1.0 for r in perfect.values())


def test_similarities_on_known_vectors() -> None:
    a, b = np.eye(4)[:2], np.eye(4)[2:]
    assert metrics.clip_i(a, b) == 0.0 and metrics.dino_score(a, b) == 0.0 and metrics.clip_t(a, b) == 0.0
    assert metrics.clip_i(a, a * 3) == pytest.approx(math.sqrt(0.5))  # each row to the mean direction
    assert metrics.dino_score(a, a) == pytest.approx(0.5)  # pairwise: two 1s and two 0s
    assert metrics.clip_t(a, 2 * a) == pytest.approx(1.0)
    with pytest.raises(ValueError):
        metrics.clip_t(a, b[:1])
    with pytest.raises(ValueError):
        metrics.clip_i(np.zeros((1, 4)), a)


def test_identical_images_score_one_with_any_embedder(tmp_path: Path) -> None:
    image = photos()[:1]
    clip = load_clip(tiny_clip(tmp_path / "clip"))
    dino = load_dinov1(tiny_dino(tmp_path / "dino"))
    for embed in (clip.embed_images, dino.embed_images, load_embedder("demo").embed):
        assert metrics.clip_i(embed(image), embed(image * 3)) == pytest.approx(1.0, abs=1e-5)
        assert metrics.dino_score(embed(image), embed(image)) == pytest.approx(1.0, abs=1e-5)
    different = dino.embed_images(photos())
    assert metrics.dino_score(different[:1], different[1:]) < 0.9999


def test_clip_text_tower_embeds_prompts(tmp_path: Path) -> None:
    clip = load_clip(tiny_clip(tmp_path / "clip"))
    texts = clip.embed_texts(["a photo of a dog", "a photo of a dog", "a red bicycle"])
    assert texts.shape == (3, 32) and np.allclose(np.linalg.norm(texts, axis=1), 1, atol=1e-5)
    assert metrics.clip_t(texts[:1], texts[1:2]) == pytest.approx(1.0, abs=1e-5)
    assert metrics.clip_t(texts[:1], texts[2:]) < 0.9999
    assert -1 <= metrics.clip_t(clip.embed_images(photos()[:1]), texts[:1]) <= 1


def test_dino_preprocessing_is_resize_256_crop_224_normalised() -> None:
    pixels = dino_pixels(Image.new("RGB", (600, 300), (124, 116, 104)))
    assert pixels.shape == (3, 224, 224)
    assert torch.allclose(pixels, torch.zeros(3, 224, 224), atol=0.01)  # ImageNet mean colour maps to ~0


def test_missing_or_wrong_models_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFoundError, match=r"open_clip_config\.json"):
        load_clip(tmp_path / "nowhere")
    with pytest.raises(ModelNotFoundError, match="DINO"):
        load_dinov1(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelNotFoundError, match="incomplete"):
        load_clip(tmp_path / "empty")
    (tmp_path / "v2").mkdir()
    (tmp_path / "v2" / "config.json").write_text(json.dumps({"model_type": "dinov2"}))
    with pytest.raises(EngineError, match="model_type vit"):
        load_dinov1(tmp_path / "v2")


def test_sequence_log_likelihood_and_choice_on_a_constructed_case() -> None:
    logits = torch.zeros(4, 5)
    logits[1, 3] = math.log(4)  # after "0 1": p(3) = 4/8
    logits[2, 2] = math.log(4)  # after "0 1 3": p(2) = 4/8, p(4) = 1/8
    assert metrics.sequence_log_likelihood(logits, [0, 1, 3, 2], 2) == pytest.approx(2 * math.log(0.5))
    options = [metrics.sequence_log_likelihood(logits, [0, 1, 3, t], 3) for t in (4, 2, 0)]
    assert metrics.choose(options) == 1
    assert metrics.accuracy([1, 0, 2], [1, 1, 2]) == pytest.approx(2 / 3)
    with pytest.raises(ValueError):
        metrics.sequence_log_likelihood(logits, [0, 1], 0)


def test_option_scores_are_the_model_log_likelihoods(assistant: Assistant) -> None:
    state = assistant.slots.initial_state("bo", assistant.loaded.tokenizer, "dog")
    assistant.attach(state)
    try:
        question, options = "What is <bo>?", ["a dog", "a cat", "a photo"]
        scores = evaluation.option_scores(assistant, "bo", question, options)
        prompts = assistant.prompts
        prefix = prompts.prompt(question, None, ["bo"]) + prompts.self_prompt(["bo"], "text")
        ids = prefix + prompts.text(" a cat")
        with torch.no_grad():
            log_probs = torch.log_softmax(assistant.loaded.model(input_ids=torch.tensor([ids])).logits[0].double(), -1)
        expected = sum(float(log_probs[t - 1, ids[t]]) for t in range(len(prefix), len(ids)))
        assert scores[1] == pytest.approx(expected, abs=1e-6)
        question_list = [evaluation.Question("bo", question, tuple(options), 0)]
        assert evaluation.qa_predictions(assistant, question_list) == [int(np.argmax(scores))]
    finally:
        assistant.slots.detach("bo")


def test_qa_file_is_validated(tmp_path: Path) -> None:
    good = [{"concept": "Bo", "question": "Colour?", "options": ["red", "blue"], "answer": 1}]
    (tmp_path / "qa.json").write_text(json.dumps(good))
    assert evaluation.load_questions(tmp_path / "qa.json") == [evaluation.Question("bo", "Colour?", ("red", "blue"), 1)]
    (tmp_path / "bad.json").write_text(json.dumps([{**good[0], "answer": 2}]))
    with pytest.raises(EngineError, match="question 1"):
        evaluation.load_questions(tmp_path / "bad.json")


def test_base_model_check_detects_a_change(assistant: Assistant) -> None:
    reference = evaluation.fixed_prompt_logits(assistant)
    assistant.attach(assistant.slots.initial_state("bo", assistant.loaded.tokenizer, "dog"))
    assert evaluation.base_difference(assistant, reference) == 0.0 and assistant.slots.names() == []
    assert evaluation.base_difference(assistant, reference + 1e-3) == pytest.approx(1e-3, rel=1e-3)
