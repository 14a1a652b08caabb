"""The base model's VQ loss weights the creature's small details (pattern, accessory) above body and background."""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from engine.microworld.pretrain import DETAIL_WEIGHT, detail_weights
from engine.microworld.world import Identity, Scene, render_array

PLAIN = Identity("circle", "red", "plain", "none", "none")


def test_a_plain_creature_without_accessory_weighs_every_pixel_the_same() -> None:
    weights = detail_weights([Scene(PLAIN, "large", "centre", "grass")])
    assert weights.shape == (1, 1, 32, 32) and bool((weights == 1).all())


def test_a_hat_and_a_pattern_weigh_more_exactly_where_they_are_drawn() -> None:
    hatted = replace(PLAIN, pattern="striped", accessory="hat", accessory_colour="blue")
    dressed = Scene(hatted, "small", "left", "snow")
    weights = detail_weights([dressed])[0, 0].numpy()
    drawn = (render_array(dressed) != render_array(Scene(PLAIN, "small", "left", "snow"))).any(-1)
    assert drawn.sum() > 10
    np.testing.assert_array_equal(weights, np.where(drawn, 1 + DETAIL_WEIGHT, 1.0))
