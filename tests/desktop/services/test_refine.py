"""Refine: training a concept whose active version is instant starts from the instant rows."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import torch

from desktop.cli.main import main
from desktop.services.personalize import TrainOptions, train_concept
from engine.concepts.state import ConceptState
from engine.inference.assistant import Assistant
from engine.model.loading import load_model
from engine.progress import Progress
from store.library import Library

LEARNING_RATE = 1e-4
QUICK = TrainOptions(
    device="cpu",
    epochs=1,
    learning_rate=LEARNING_RATE,
    negatives=2,
    recognition_per_photo=1,
    generation_per_photo=1,
    qa_repeats=1,
    augment=False,
    describe_photos=False,
    bundled_index=False,
)


def test_training_an_instant_concept_starts_from_its_rows(tmp_path: Path, dreambooth: Path) -> None:
    dog = [str(p) for p in sorted((dreambooth / "dog").glob("*.jpg"))[:3]]
    facts = "class: dog"
    assert main(["--data-dir", str(tmp_path), "concept", "add", "bo", *dog, "--instant", "--facts", facts]) == 0
    with Library.open(tmp_path) as library:
        library.concepts.add("mimi", sorted((dreambooth / "cat").glob("*.jpg"))[:2], kind="pet")
        instant = ConceptState.from_bytes(library.tokens.read_bytes(library.tokens.active("bo")))
        updates: list[Progress] = []
        # Without negatives recognition is not measured, so the instant rows are kept as the start (with them the
        # recipe's own start rows would replace them where they scored better: test_start_state.py).
        alone = replace(QUICK, negatives=0)
        run = train_concept(library, "bo", alone, progress=updates.append, cancelled=lambda: len(updates) >= 1)
        kept, checkpoint = library.runs.checkpoints(run.id)
        first = ConceptState.load(checkpoint.path)
        assert kept.step == 0 and torch.equal(ConceptState.load(kept.path).embed, instant.embed)  # the start rows
    assert run.status == "cancelled" and checkpoint.step == 1

    # One AdamW step moves every element by at most the learning rate (plus float32 rounding at the rows'
    # magnitude), so the run began at the instant rows ...
    moved = max((first.embed - instant.embed).abs().max(), (first.head - instant.head).abs().max())
    magnitude = max(instant.embed.abs().max(), instant.head.abs().max())
    assert 0 < moved <= LEARNING_RATE * 1.001 + 2 * torch.finfo(torch.float32).eps * magnitude
    # ... and not at the class word's rows, where a concept without an instant version starts.
    demo = load_model("demo", device="cpu")
    start = Assistant(demo).slots.initial_state("bo", demo.tokenizer, "dog")
    assert (first.embed - start.embed).abs().max() > 20 * LEARNING_RATE
    assert (instant.embed[1:] - instant.embed[:-1]).abs().max() > 0  # not one row repeated, as a class start is
