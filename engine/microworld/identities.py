"""Micro-world identities for the demo Aligner: identity folders of rendered scenes to train it on, and
held-out identities to measure instant concepts on (recognition of the identity's photos against one-attribute
changes and random creatures, scored as `engine.training.selection` scores a checkpoint).

The split is fixed by a seed: `held_out` identities that wear an accessory (5 identity attributes, like the
personalization benchmark's concepts) are set aside; every other identity of the world may be trained on.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from engine.inference.assistant import Assistant
from engine.microworld.world import Identity, Scene, all_identities, one_change, render, sample_identity, sample_pose
from engine.training.selection import recognition_accuracy


def split_identities(seed: int, held_out: int) -> tuple[list[Identity], list[Identity]]:
    """(identities to train on, held-out identities), both in an order drawn from `seed`."""
    order = all_identities()
    random.Random(f"familiar-aligner-identities-{seed}").shuffle(order)
    held = [identity for identity in order if identity.accessory != "none"][:held_out]
    return [identity for identity in order if identity not in held], held


def folder_name(identity: Identity) -> str:
    """`circle-red-striped-hat-blue`: one folder per identity."""
    return "-".join((identity.shape, identity.colour, identity.pattern, identity.accessory, identity.accessory_colour))


def write_identity_folders(folder: Path, identities: Sequence[Identity], renders: int, seed: int) -> None:
    """`folder/<identity>/NN.png`: `renders` scenes of each identity in random poses (drawn from `seed` and
    the identity), the identity-folder layout `familiar aligner train` reads. Existing files are kept."""
    for identity in identities:
        target = folder / folder_name(identity)
        target.mkdir(parents=True, exist_ok=True)
        rng = random.Random(f"{seed}-{folder_name(identity)}")
        for number in range(renders):
            scene = sample_pose(identity, rng)
            path = target / f"{number:02d}.png"
            if not path.exists():
                render(scene).save(path)


@dataclass(frozen=True)
class HeldOutConcept:
    """A held-out identity as a user would give it: one reference photo, and the scenes it is measured on."""

    identity: Identity
    reference: Scene
    positives: list[Scene]
    hard_negatives: list[Scene]
    random_negatives: list[Scene]


def held_out_concepts(identities: Sequence[Identity], seed: int, per_kind: int = 8) -> list[HeldOutConcept]:
    """Each identity with a reference render, `per_kind` renders of it in other poses, `per_kind` one-attribute
    changes (`one_change`) and `per_kind` random other creatures, all in random poses from `seed`."""
    rng = random.Random(f"familiar-aligner-held-out-{seed}")
    concepts = []
    for identity in identities:
        others: list[Scene] = []
        while len(others) < per_kind:
            other = sample_identity(rng)
            if other != identity:
                others.append(sample_pose(other, rng))
        concepts.append(
            HeldOutConcept(
                identity=identity,
                reference=sample_pose(identity, rng),
                positives=[sample_pose(identity, rng) for _ in range(per_kind)],
                hard_negatives=[sample_pose(one_change(identity, rng), rng) for _ in range(per_kind)],
                random_negatives=others,
            )
        )
    return concepts


def recognition(assistant: Assistant, name: str, concept: HeldOutConcept) -> dict[str, float]:
    """Recognition by the concept `name` attached to `assistant`: accuracy on the identity's photos
    (`positive`), on one-attribute changes (`hard_negative`) and random creatures (`random_negative`), and
    `weighted`, the mean of positive and hard-negative accuracy (the benchmark's `recognition_weighted`)."""
    tokens = assistant.loaded.image_tokenizer

    def ids(scenes: Sequence[Scene]) -> list[list[int]]:
        return tokens.encode([render(scene) for scene in scenes]).tolist()

    positive, hard = recognition_accuracy(assistant, name, ids(concept.positives), ids(concept.hard_negatives))
    _, random_negative = recognition_accuracy(assistant, name, [], ids(concept.random_negatives))
    return {
        "positive": positive,
        "hard_negative": hard,
        "random_negative": random_negative,
        "weighted": (positive + hard) / 2,
    }
