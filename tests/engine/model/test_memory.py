"""The training-memory prediction against a measured step on the demo model (CPU, no gradient checkpointing)."""

from __future__ import annotations

import torch
from PIL import Image
from torch.profiler import ProfilerActivity, profile

from engine.concepts.prompts import IGNORE
from engine.inference.assistant import Assistant
from engine.model.loading import LoadedModel, weight_bytes
from engine.model.memory import training_memory
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
                labelled=int((labels != IGNORE).sum()),
                chunk=LOSS_CHUNK_ROWS,
                checkpointing=False,
            )
            assert predicted.weights == weight_bytes(demo.config, demo.dtype, demo.quantized)
            assert peak / 2 <= predicted.step <= peak * 2, (predicted, peak)
    finally:
        trainer.train_mode(False)
