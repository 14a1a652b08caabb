"""FLOPs of training a concept, and the recipe projected onto 7B."""

from __future__ import annotations

from dataclasses import replace

import pytest

from engine.training.cost import RTX_4090_BF16_FLOPS, epoch_samples, flop_per_token, project_7b, scoring_seconds
from engine.training.recipe import DEFAULT, PAPER


def test_a_frozen_model_costs_four_flop_per_parameter_and_six_with_recomputation() -> None:
    assert flop_per_token(1e6, checkpointing=False) == 4e6
    assert flop_per_token(1e6, checkpointing=True) == 6e6


def test_epoch_samples_count_the_recipes_mix() -> None:
    # 4 photos x 3 variants x (4 recognition + 2 drawing), 200 negatives less 40 held out, 1,000 soft positives,
    # 4 descriptions asked twice
    assert epoch_samples(PAPER, photos=4, negatives=200, soft_positives=1000) == 72 + 160 + 1000 + 8
    assert epoch_samples(PAPER, photos=4, negatives=200, soft_positives=30) == 72 + 160 + 30 + 8
    plain = replace(PAPER, augment=False, describe_photos=False, soft_positives=0)
    assert epoch_samples(plain, photos=3, negatives=0, soft_positives=500, facts=2) == 18 + 0 + 0 + 4


def test_the_7b_projection_counts_steps_tokens_and_minutes() -> None:
    projection = project_7b(PAPER, epochs=15, utilisation=0.4)
    assert (projection.samples_per_epoch, projection.steps_per_epoch) == (1240, 310)
    flop = 310 * 4 * 1100 * 15 * 6 * 7e9
    assert projection.flop == pytest.approx(flop)
    assert projection.minutes == pytest.approx(flop / (0.4 * RTX_4090_BF16_FLOPS) / 60)
    assert project_7b(PAPER, epochs=3, utilisation=0.4).flop == pytest.approx(flop / 5)
    assert project_7b(PAPER, epochs=15, utilisation=0.4, checkpointing=False).flop == pytest.approx(flop * 4 / 6)


def test_scoring_counts_a_forward_per_held_out_answer_and_a_picture_per_candidate() -> None:
    # the default's 2 epochs: 3 candidates, each asked about 1 held-out photo and 8 held-out negatives (a fifth of
    # 40), each drawing 1,024 tokens; 4 descriptions of 48 tokens; decoding at twice 4 GB per token over 1 TB/s
    forward = 3 * 9 * 1100 * 2 * 7e9 / (0.4 * RTX_4090_BF16_FLOPS)
    decoding = (3 * 1024 + 4 * 48) * 2 * 4e9 / 1e12
    assert scoring_seconds(DEFAULT, epochs=2, utilisation=0.4) == pytest.approx(forward + decoding)
    projection = project_7b(DEFAULT, epochs=2, utilisation=0.4, checkpointing=False)
    assert projection.total_minutes == pytest.approx(projection.minutes + (forward + decoding) / 60)
    assert scoring_seconds(DEFAULT, epochs=1.5, utilisation=0.4) == scoring_seconds(DEFAULT, 2, 0.4)  # started
    assert scoring_seconds(PAPER, 2, 0.4) == pytest.approx(forward * 41 / 9 + decoding)  # 40 held out of 200
    quiet = replace(DEFAULT, describe_photos=False)
    assert scoring_seconds(quiet, 2, 0.4) == pytest.approx(forward + 3 * 1024 * 2 * 4e9 / 1e12)
