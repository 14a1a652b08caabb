"""Early stopping: a run with patience ends (done, not cancelled) once the held-out score stops improving and keeps
its best checkpoint, the start rows (step 0) included; patience 0 runs every epoch."""

from __future__ import annotations

import random
from collections.abc import Sequence

import pytest
import torch
from PIL import Image

from engine.concepts.prompts import Sample
from engine.errors import EngineError
from engine.inference.assistant import Assistant
from engine.microworld.world import BACKGROUNDS, Scene, render, sample_identity
from engine.model.loading import load_model
from engine.training.personalization import (
    ConceptPhotos,
    Scored,
    best,
    encode,
    epochs_without_improvement,
    held_out_loss,
    personalize,
)
from engine.training.recipe import Recipe
from engine.training.trainer import Checkpoint

RECIPE = Recipe(
    epochs=4,
    soft_positives=0,
    recognition_per_photo=1,
    generation_per_photo=1,
    qa_repeats=1,
    augment=False,
    describe_photos=False,
)


@pytest.fixture(autouse=True)
def _threads() -> None:
    torch.set_num_threads(2)


def _concept(assistant: Assistant, peak: int) -> ConceptPhotos:
    rng = random.Random(3)
    identity = sample_identity(rng)
    photos = [render(Scene(identity, "large", "centre", b)) for b in list(BACKGROUNDS)[:3]]
    others = [render(Scene(sample_identity(rng), "large", "centre", b)) for b in list(BACKGROUNDS)[:2]]
    scores = iter([-1.0] * peak + [1.0] + [-1.0] * 10)

    def falling(_generated: Sequence[Image.Image], _real: Sequence[Image.Image]) -> float:
        """The drawing of check number `peak` (0: the start rows') is the most similar; none after it comes close
        (score = mean of recognition in [0, 1] and this)."""
        return next(scores)

    return ConceptPhotos(
        "bo", "pet", photos[:2], held_out=photos[2:], negatives=encode(assistant, others), similarity=falling
    )


def _run(patience: int, peak: int = 1) -> tuple[Assistant, list[Scored], list[str], object]:
    assistant = Assistant(load_model("demo", device="cpu"))
    scored: list[Scored] = []
    lines: list[str] = []
    result = personalize(
        assistant,
        _concept(assistant, peak),
        Recipe(**{**vars(RECIPE), "patience": patience}),
        on_checkpoint=scored.append,
        status=lambda m: lines.append(str(m)),
    )
    return assistant, scored, lines, result


def test_patience_stops_when_the_held_out_score_stops_improving_and_keeps_the_best() -> None:
    assistant, scored, lines, result = _run(patience=2)
    assert [s.checkpoint.epoch for s in scored] == [0, 1, 2, 3]  # epoch 4 of 4 never ran
    assert scored[0].checkpoint.step == 0 and "loss" not in scored[0].metrics and not scored[0].checkpoint.optimizer
    assert result.epochs == 3 and not scored[-1].checkpoint.final and result.stopped_early
    assert result.steps == len(result.losses) == scored[-1].checkpoint.step
    assert "stopped early at epoch 3: no better held-out score for 2 epochs" in lines
    assert result.chosen is scored[1] and scored[1].metrics["score"] > max(
        s.metrics["score"] for s in scored if s is not scored[1]
    )
    attached = assistant.slots.state("bo")
    assert torch.equal(attached.embed, scored[1].checkpoint.state.embed)


def test_start_rows_no_epoch_beats_are_kept() -> None:
    assistant, scored, lines, result = _run(patience=2, peak=0)
    assert [s.checkpoint.epoch for s in scored] == [0, 1, 2] and result.stopped_early
    assert "stopped early at epoch 2: no better held-out score for 2 epochs" in lines
    assert "kept the start rows: no checkpoint beat them on the held-out score" in lines
    assert result.chosen is scored[0]
    attached = assistant.slots.state("bo")
    assert torch.equal(attached.embed, scored[0].checkpoint.state.embed)
    assert not torch.equal(attached.embed, scored[-1].checkpoint.state.embed)


def test_patience_zero_runs_every_epoch() -> None:
    _, scored, lines, result = _run(patience=0)
    assert [s.checkpoint.epoch for s in scored] == [0, 1, 2, 3, 4] and scored[-1].checkpoint.final
    assert not result.stopped_early and not any("stopped early" in line for line in lines)


def _scored(step: int, **metrics: float | None) -> Scored:
    return Scored(Checkpoint(optimizer=b"", step=step, epoch=step, state=None), dict(metrics))  # type: ignore[arg-type]


def test_a_tie_is_no_improvement_and_without_a_score_the_held_out_loss_counts() -> None:
    assert epochs_without_improvement([_scored(1, score=0.5), _scored(2, score=0.7), _scored(3, score=0.7)]) == 1
    losses = [_scored(1, score=None, held_out_loss=2.0, loss=1.0), _scored(2, score=None, held_out_loss=1.5, loss=3.0)]
    assert epochs_without_improvement(losses) == 0
    assert epochs_without_improvement([*losses, _scored(3, score=None, held_out_loss=1.6, loss=0.1)]) == 1
    start = _scored(0, score=None)
    assert epochs_without_improvement([start, _scored(1, score=None, loss=2.0), _scored(2, score=None, loss=1.0)]) == 0
    assert best([start, _scored(1, score=None, loss=2.0), _scored(2, score=None, loss=3.0)]).checkpoint.step == 1


@pytest.mark.parametrize("views", [False, True])
def test_held_out_views_score_each_held_out_photo_with_its_mirror_and_crop(views: bool) -> None:
    assistant = Assistant(load_model("demo", device="cpu"))
    scored: list[Scored] = []
    recipe = Recipe(**{**vars(RECIPE), "epochs": 1, "held_out_views": views})
    personalize(assistant, _concept(assistant, peak=0), recipe, on_checkpoint=scored.append)
    for metrics in (s.metrics for s in scored):
        count = metrics["held_out_photos"]
        assert count == (3 if views else 1) and (metrics["recognition_positive"] * count) % 1 == pytest.approx(0)


def test_a_start_margin_keeps_the_start_rows_unless_an_epoch_beats_them_by_that_much() -> None:
    run = [_scored(0, score=0.60), _scored(1, score=0.64), _scored(2, score=0.62)]
    assert best(run).checkpoint.step == 1 and epochs_without_improvement(run) == 1
    assert best(run, start_margin=0.05).checkpoint.step == 0
    assert epochs_without_improvement(run, start_margin=0.05) == 2
    assert best([*run, _scored(3, score=0.65)], start_margin=0.05).checkpoint.step == 3  # a tie goes to the later
    assert best([*run, _scored(3, score=0.66)], start_margin=0.05).checkpoint.step == 3
    by_loss = [_scored(0, score=None, held_out_loss=2.0), _scored(1, score=None, held_out_loss=1.99)]
    assert best(by_loss, start_margin=0.05).checkpoint.step == 1  # no margin on a loss


@pytest.mark.parametrize("margin", [-0.1, 1.0])
def test_a_start_margin_outside_0_to_1_is_refused(margin: float) -> None:
    with pytest.raises(EngineError, match="start margin"):
        Recipe(start_margin=margin)


def test_personalize_chooses_and_stops_with_the_recipes_start_margin(monkeypatch: pytest.MonkeyPatch) -> None:
    import engine.training.personalization as personalization

    margins: list[float] = []

    def spy(candidates: Sequence[Scored], start_margin: float = 0.0) -> int:
        margins.append(start_margin)
        return epochs_without_improvement(candidates, start_margin)

    def best_spy(candidates: Sequence[Scored], start_margin: float = 0.0) -> Scored:
        margins.append(start_margin)
        return best(candidates, start_margin)

    monkeypatch.setattr(personalization, "epochs_without_improvement", spy)
    monkeypatch.setattr(personalization, "best", best_spy)
    assistant = Assistant(load_model("demo", device="cpu"))
    recipe = Recipe(**{**vars(RECIPE), "epochs": 1, "start_margin": 0.99})
    lines: list[str] = []
    result = personalize(assistant, _concept(assistant, peak=0), recipe, status=lambda m: lines.append(str(m)))
    assert margins == [0.99, 0.99] and result.chosen.checkpoint.step == 0
    assert "kept the start rows: no checkpoint beat them by 0.99 on the held-out score" in lines


def test_the_held_out_loss_does_not_depend_on_the_micro_batch() -> None:
    """Samples of unequal length: a mean of micro-batch means would weigh them by how the batches fall."""

    class TokenMeanTrainer:
        def __init__(self, micro_batch: int) -> None:
            self.config = Recipe(batch_size=micro_batch, micro_batch=micro_batch)

        def loss(self, batch: Sequence[Sample]) -> torch.Tensor:
            labels = [label for sample in batch for label in sample.labels]
            return torch.tensor(sum(labels) / len(labels), dtype=torch.float32)

    samples = [Sample(ids=[0] * n, labels=[n] * n) for n in (1, 2, 3, 10)]
    losses = [held_out_loss(TokenMeanTrainer(m), samples) for m in (1, 2, 3, 4)]  # type: ignore[arg-type]
    assert losses == pytest.approx([4.0] * 4)
