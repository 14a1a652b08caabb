"""The memory model (engine/model/memory.py): predictions against measured allocations on the demo model, the 7B
goal, and the refusals before loading or training."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from PIL import Image
from torch.profiler import ProfilerActivity, profile

from engine.concepts.prompts import IGNORE
from engine.errors import InsufficientMemoryError
from engine.inference.assistant import Assistant
from engine.model.loading import LoadedModel
from engine.model.memory import (
    TrainingShape,
    estimate_memory,
    image_vocabulary,
    kv_cache_bytes,
    tokens_per_image,
    training_memory,
    training_shape,
    training_step,
    weight_bytes,
)
from engine.training.data import ConceptData, build_samples
from engine.training.recipe import Recipe
from engine.training.trainer import LOSS_CHUNK_ROWS, Trainer, collate


def test_prediction_is_within_a_factor_of_two_of_a_measured_step(demo: LoadedModel) -> None:
    assistant = Assistant(demo)
    assistant.attach(assistant.slots.initial_state("bo", demo.tokenizer, "dog"))
    photos = [row.tolist() for row in demo.image_tokenizer.encode([Image.new("RGB", (64, 64), (200, 40, 40))] * 2)]
    data = ConceptData("bo", "pet", photos, photos[:1])
    samples = build_samples(assistant.prompts, data, Recipe(recognition_per_photo=1, qa_repeats=1))
    trainer = Trainer(assistant, "bo", samples, Recipe())
    trainer.train_mode(True)
    try:
        for batch in (samples[:1], samples[:4]):
            ids, _, labels = collate(batch, int(demo.tokenizer.pad_token_id), torch.device("cpu"))
            images = int(torch.isin(labels, demo.image_tokenizer.image_token_ids).sum())
            with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
                trainer.loss(batch).backward()
            events = sorted((e for e in prof.events() if e.self_cpu_memory_usage), key=lambda e: e.time_range.start)
            live = peak = 0
            for event in events:
                live += event.self_cpu_memory_usage
                peak = max(peak, live)
            predicted = training_memory(
                demo.config,
                demo.dtype,
                demo.quantized,
                batch=ids.shape[0],
                length=ids.shape[1],
                labelled=int((labels != IGNORE).sum()) - images,
                image_labelled=images,
                image_rows=image_vocabulary(demo.config),
                chunk=LOSS_CHUNK_ROWS,
                checkpointing=False,
            )
            assert predicted.weights == weight_bytes(demo.config, demo.dtype, demo.quantized)
            assert peak / 2 <= predicted.step <= peak * 2, (predicted, peak)
    finally:
        trainer.train_mode(False)


def test_a_full_size_nf4_training_step_at_batch_4_is_predicted_under_8_gib() -> None:
    """The goal of issue #17 (7B NF4, micro-batch 4 of full-length image samples, checkpointing on CUDA)."""
    from engine.model.synthetic import chameleon_7b_config

    config = chameleon_7b_config()
    assert tokens_per_image(config) == 1024 and image_vocabulary(config) == 8192
    step = training_step(config, torch.bfloat16, True, TrainingShape(4, checkpointing=True))
    assert step.peak < 8 * 2**30
    unchunked = training_memory(
        config, torch.bfloat16, True, batch=4, length=1091, labelled=4 * 1027, chunk=4 * 1027, checkpointing=True
    )
    assert unchunked.logits > 10 * step.logits  # what chunking and the image rows save


def test_training_checkpoints_only_where_no_micro_batch_fits_without_it() -> None:
    """At 7B NF4: the largest micro-batch dividing the batch whose step fits unchecked, else checkpointing at the
    asked micro-batch; on the CPU (`available` None) always as asked, unchecked."""
    from engine.model.synthetic import chameleon_7b_config

    config = chameleon_7b_config()

    def unchecked(size: int) -> int:
        return math.ceil(
            training_step(config, torch.bfloat16, True, TrainingShape(size, checkpointing=False)).step * 1.15
        )

    def shape(available: int | None, micro_batch: int = 4) -> TrainingShape:
        return training_shape(config, torch.bfloat16, True, batch_size=4, micro_batch=micro_batch, available=available)

    assert unchecked(1) < unchecked(2) < unchecked(3) < unchecked(4)
    assert shape(None) == TrainingShape(4, checkpointing=False)
    assert shape(unchecked(4)) == TrainingShape(4, checkpointing=False)
    assert shape(unchecked(4) - 1) == TrainingShape(2, checkpointing=False)  # 3 does not divide the batch
    assert shape(unchecked(3) + 1, micro_batch=2) == TrainingShape(2, checkpointing=False)
    assert shape(unchecked(1)) == TrainingShape(1, checkpointing=False)
    assert shape(unchecked(1) - 1) == TrainingShape(4, checkpointing=True)
    weights = weight_bytes(config, torch.bfloat16, True) * 1.15
    assert weights + unchecked(2) < 20 * 2**30  # a 24 GiB card trains 7B at micro-batch 2 without recomputing
    assert weights + unchecked(4) > 24 * 2**30


def test_kv_cache_prediction_matches_a_real_cache(demo: LoadedModel) -> None:
    ids = torch.arange(10, 30).unsqueeze(0)
    with torch.no_grad():
        cache = demo.model(input_ids=ids, use_cache=True).past_key_values
    real = sum(t.numel() * t.element_size() for layer in cache.layers for t in (layer.keys, layer.values))
    assert real == kv_cache_bytes(demo.config, demo.dtype, 20)


def test_loading_for_training_refuses_with_the_numbers_before_loading(monkeypatch: pytest.MonkeyPatch) -> None:
    from engine.model import memory
    from engine.model.loading import demo_model_dir, load_model, read_config

    config = read_config(demo_model_dir())
    for_chat = estimate_memory(config, torch.device("cpu"), torch.float32, False)
    monkeypatch.setattr(memory, "free_bytes", lambda _device: for_chat.needed + 1)
    assert load_model("demo", device="cpu").is_demo  # chat and drawing fit
    loads: list[str] = []
    monkeypatch.setattr("engine.model.loading.FamiliarChameleon.from_pretrained", lambda *a, **k: loads.append("x"))
    with pytest.raises(InsufficientMemoryError, match=r"for training at micro-batch 64: .*training activations"):
        load_model("demo", device="cpu", train_micro_batch=64)
    assert loads == []


def test_training_beside_a_loaded_model_is_refused_before_a_run_starts(
    demo: LoadedModel, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from desktop.services.personalize import TrainOptions, train_concept
    from engine.model import memory
    from store.library import Library

    photo = tmp_path / "bo.png"
    Image.new("RGB", (64, 64), (200, 40, 40)).save(photo)
    monkeypatch.setattr(memory, "free_bytes", lambda _device: 2**20)
    with Library.open(tmp_path / "library") as library:
        library.concepts.add("bo", [photo], kind="pet")
        with pytest.raises(InsufficientMemoryError, match="training will not fit beside the loaded model"):
            train_concept(library, "bo", TrainOptions(epochs=1), assistant=Assistant(demo))
        assert library.runs.list("bo") == []
