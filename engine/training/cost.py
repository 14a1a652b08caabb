"""What training a concept costs in FLOPs, counted from the model's size and the tokens trained on, and the same
recipe projected onto a 7B Chameleon-class model (docs/training.md, "At 7B").

The base model is frozen, so a training token costs its forward pass (2 FLOP per parameter it passes), the backward
pass of the inputs only (another 2; the weight-gradient half of a usual backward is never computed), and, where
gradient checkpointing recomputes activations in the backward (on CUDA where memory is short,
`engine.model.memory.training_shape`), the forward again (2 more). The input embedding table is a lookup and costs
nothing; attention's own products (about 2% at 1,100 tokens on 7B) are left out. No torch here: callers count the
parameters.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from engine.training.recipe import Recipe, held_out_negatives

AUGMENTED_COPIES = 3
"""`engine.training.data.augmentations`: each photo, its mirror image and a centre crop."""
SEVEN_B_PARAMETERS = 7e9
SEVEN_B_TOKENS_PER_SAMPLE = 1100
"""1,024 image tokens and the prompt; text-only question-answer samples are shorter, so this over-counts them."""
RTX_4090_BF16_FLOPS = 165e12
"""Dense bf16 tensor throughput of a 4090-class GPU (FP32 accumulate), the projection's peak."""
RTX_4090_BYTES_PER_SECOND = 1.0e12
"""Memory bandwidth of a 4090-class GPU: what bounds decoding one token at a time."""
SEVEN_B_NF4_BYTES_PER_TOKEN = 4e9
"""Weight bytes read to decode one token of a 7B model in NF4 (DESIGN.md, "Performance targets")."""
DECODE_OVER_FLOOR = 2.0
"""Decoding at this multiple of the bandwidth floor: the product's target for a picture (DESIGN.md)."""
PICTURE_TOKENS = 1024
DESCRIPTION_TOKENS = 48
"""At most this many tokens of each photo's description (`engine.training.data.describe_photos`)."""
HELD_OUT_PHOTOS = 1
"""Photos held out for scoring in a concept of 5 (the projection's); each candidate is asked about them and the
held-out negatives."""


def flop_per_token(parameters: float, checkpointing: bool) -> float:
    """FLOP per training token of a frozen model with `parameters` (the embedding table excluded): forward and
    input-gradient backward, plus the recomputed forward under gradient checkpointing."""
    return (6 if checkpointing else 4) * parameters


def epoch_samples(recipe: Recipe, photos: int, negatives: int, soft_positives: int, facts: int = 0) -> int:
    """Samples in one epoch of `recipe` for a concept with `photos` training photos, given `negatives` (a fifth
    held out for scoring), `soft_positives` look-alikes found and `facts` question-answer facts, as
    `engine.training.personalization.personalize` builds them."""
    images = photos * (AUGMENTED_COPIES if recipe.augment else 1)
    questions = facts + (photos if recipe.describe_photos else 0)
    return (
        images * (recipe.recognition_per_photo + recipe.generation_per_photo)
        + negatives
        - held_out_negatives(negatives)
        + recipe.qa_repeats * questions
        + min(soft_positives, recipe.soft_positives)
    )


@dataclass(frozen=True)
class Projection:
    """A run of the recipe on a 7B model: its samples, steps and FLOP, and its minutes on a 4090-class GPU at
    `utilisation` of the bf16 peak."""

    samples_per_epoch: int
    steps_per_epoch: int
    epochs: float
    flop: float
    utilisation: float
    scoring_seconds: float
    """Describing the photos and scoring every candidate (`scoring_seconds`), beside the training steps."""

    @property
    def minutes(self) -> float:
        """The training steps alone."""
        return self.flop / (RTX_4090_BF16_FLOPS * self.utilisation) / 60

    @property
    def total_minutes(self) -> float:
        """The training steps, the photos' descriptions and the candidates' scoring."""
        return self.minutes + self.scoring_seconds / 60


def scoring_seconds(recipe: Recipe, epochs: float, utilisation: float, photos: int = 4) -> float:
    """Seconds a 7B run spends outside its training steps: describing `photos` photos, and scoring each candidate
    (the start rows and every epoch's checkpoint), each one a forward pass over the held-out photo and every
    held-out negative at `utilisation` and one picture drawn. Decoding runs at `DECODE_OVER_FLOOR` times the
    bandwidth floor. Encoding the photos is left out: the look-alikes' and negatives' image tokens come stored in
    the index, and a concept's own photos are a few encoder passes."""
    candidates = 1 + math.ceil(epochs)
    answers = HELD_OUT_PHOTOS + held_out_negatives(recipe.negatives)
    forward = candidates * answers * SEVEN_B_TOKENS_PER_SAMPLE * 2 * SEVEN_B_PARAMETERS
    decoded = candidates * PICTURE_TOKENS + (photos * DESCRIPTION_TOKENS if recipe.describe_photos else 0)
    per_token = DECODE_OVER_FLOOR * SEVEN_B_NF4_BYTES_PER_TOKEN / RTX_4090_BYTES_PER_SECOND
    return forward / (RTX_4090_BF16_FLOPS * utilisation) + decoded * per_token


def project_7b(
    recipe: Recipe, epochs: float, utilisation: float, photos: int = 4, checkpointing: bool = True
) -> Projection:
    """`epochs` of `recipe` on a 7B model for a concept of `photos` training photos (5 added, one held out) with
    every negative and soft positive the recipe asks for found, with or without gradient checkpointing (a 24 GiB
    card trains 7B at micro-batch 2 without it: `engine.model.memory.training_shape`)."""
    samples = epoch_samples(recipe, photos, recipe.negatives, recipe.soft_positives)
    steps = math.ceil(samples / recipe.batch_size)
    tokens = steps * recipe.batch_size * SEVEN_B_TOKENS_PER_SAMPLE * epochs
    flop = tokens * flop_per_token(SEVEN_B_PARAMETERS, checkpointing)
    return Projection(samples, steps, epochs, flop, utilisation, scoring_seconds(recipe, epochs, utilisation, photos))
