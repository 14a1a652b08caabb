"""The retrieval plan: tiers of soft positives with their token counts, and hard, easy and other-concept negatives."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from engine.errors import EngineError
from engine.retrieval.embedder_info import EmbedderInfo
from engine.retrieval.index import EmbeddingIndex, IndexRecord, IndexWriter, Neighbour
from engine.retrieval.plan import (
    ConceptPhoto,
    PlanSettings,
    RetrievalPlan,
    concept_query,
    plan_concept,
    split_into_tiers,
    tier_sizes,
    tier_token_counts,
)

DIM = 64
CANDIDATES = 200
SETTINGS = PlanSettings(top_n=45, num_hard_negatives=10, num_easy_negatives=10, seed=3)


def _unit(vectors: np.ndarray) -> np.ndarray:
    return vectors / np.linalg.norm(vectors, axis=-1, keepdims=True)


def _orthogonal(rng: np.random.Generator, direction: np.ndarray) -> np.ndarray:
    vector = rng.standard_normal(DIM)
    return _unit(vector - (vector @ direction) * direction)


class World:
    """A synthetic index around a concept direction, with planted rows the plan must drop."""

    def __init__(self, folder: Path) -> None:
        rng = np.random.default_rng(0)
        self.direction = _unit(rng.standard_normal(DIM))
        self.own = _unit(self.direction + 0.02 * rng.standard_normal((3, DIM)))
        self.photos = [ConceptPhoto(f"/photos/dog{i}.jpg", f"own{i}".ljust(64, "0")) for i in range(3)]
        self.cat = [ConceptPhoto("/photos/cat.jpg", "cat".ljust(64, "0"))]
        angles = 0.4 + 0.01 * np.arange(CANDIDATES)
        vectors = [np.cos(a) * self.direction + np.sin(a) * _orthogonal(rng, self.direction) for a in angles]
        shas = [f"{i:064x}" for i in range(CANDIDATES)]
        planted = {
            "copy_of_own": (self.own[0], self.photos[0].sha256),
            "near_own": (_unit(self.own[1] + 0.05 * _orthogonal(rng, self.own[1])), "n" * 64),
            "cat_in_top": (vectors[5], self.cat[0].sha256),
            "near_duplicate": (_unit(vectors[10] + 0.05 * _orthogonal(rng, vectors[10])), "d" * 64),
            "cat_in_band": (vectors[47], self.cat[0].sha256),
        }
        self.rows = {name: CANDIDATES + i for i, name in enumerate(planted)}
        vectors += [vector for vector, _ in planted.values()]
        shas += [sha for _, sha in planted.values()]
        writer = IndexWriter(folder, EmbedderInfo("demo", None, DIM, untrained=True, weights_file=None))
        writer.append(
            np.stack(vectors), [IndexRecord(f"/library/{i}.jpg", f"caption {i}", s) for i, s in enumerate(shas)]
        )
        self.index = EmbeddingIndex(folder)

    def ranked_rows(self, k: int) -> list[int]:
        return self.index.search(concept_query(self.own), k)[1][0].tolist()


@pytest.fixture
def world(tmp_path: Path) -> World:
    return World(tmp_path / "index")


def _plan(world: World, settings: PlanSettings = SETTINGS) -> RetrievalPlan:
    return plan_concept("dog", world.photos, world.own, world.index, {"cat": world.cat, "dog": world.photos}, settings)


@pytest.mark.parametrize(
    ("count", "sizes"),
    [
        (0, [0] * 15),
        (5, [1] * 5 + [0] * 10),
        (15, [1] * 15),
        (41, [3] * 11 + [2] * 4),
        (1000, [67] * 10 + [66] * 5),
    ],
)
def test_tier_sizes_are_as_equal_as_possible_larger_first(count: int, sizes: list[int]) -> None:
    assert tier_sizes(count, 16) == sizes


def test_token_counts_run_from_k_minus_1_down_to_1() -> None:
    assert tier_token_counts(16) == list(range(15, 0, -1))
    assert tier_token_counts(4) == [3, 2, 1]


def test_fewer_images_than_tiers_fill_the_most_similar_tiers() -> None:
    images = [Neighbour(f"{i}.jpg", "", f"{i}", similarity=0.1 * i) for i in range(5)]
    tiers = split_into_tiers(images, 16)
    assert [(t.tier, t.num_tokens) for t in tiers] == [(0, 15), (1, 14), (2, 13), (3, 12), (4, 11)]
    assert [t.images[0].similarity for t in tiers] == pytest.approx([0.4, 0.3, 0.2, 0.1, 0.0])


def test_soft_positives_drop_own_photos_other_concepts_and_near_duplicates(world: World) -> None:
    plan = _plan(world)
    top = world.ranked_rows(SETTINGS.top_n)
    kept = [image.row for image in plan.soft_positives]
    for name in ("copy_of_own", "near_own", "cat_in_top"):
        assert world.rows[name] in top and world.rows[name] not in kept
    assert (10 in kept) != (world.rows["near_duplicate"] in kept)
    assert plan.dropped == {"own_photos": 2, "other_concepts": 1, "near_duplicates": 1}
    assert sorted(kept) == sorted(
        set(top)
        - {world.rows[n] for n in ("copy_of_own", "near_own", "cat_in_top")}
        - ({10, world.rows["near_duplicate"]} - set(kept))
    )


def test_tiers_follow_the_rule(world: World) -> None:
    plan = _plan(world)
    positives = plan.soft_positives
    assert len(positives) == SETTINGS.top_n - 4
    assert [len(t.images) for t in plan.tiers] == tier_sizes(len(positives), 16) == [3] * 11 + [2] * 4
    assert [t.num_tokens for t in plan.tiers] == list(range(15, 0, -1))
    assert [t.tier for t in plan.tiers] == list(range(15))
    similarities = [image.similarity for image in positives]
    assert similarities == sorted(similarities, reverse=True)
    assert plan.photo_tokens == plan.num_generation_tokens == 16
    query = concept_query(world.own)
    for image in positives:
        assert image.similarity == pytest.approx(
            float(world.index.embeddings[image.row].astype(np.float32) @ query), abs=1e-5
        )


def test_negatives_hard_from_the_next_band_easy_at_random_and_other_concepts(world: World) -> None:
    plan = _plan(world)
    ranked = world.ranked_rows(SETTINGS.top_n + SETTINGS.num_hard_negatives)
    band = ranked[SETTINGS.top_n :]
    assert world.rows["cat_in_band"] in band
    assert [image.row for image in plan.hard_negatives] == [row for row in band if row != world.rows["cat_in_band"]]

    easy = [image.row for image in plan.easy_negatives]
    assert len(easy) == len(set(easy)) == SETTINGS.num_easy_negatives
    assert not set(easy) & set(ranked)
    assert not {world.rows["copy_of_own"], world.rows["near_own"], world.rows["cat_in_band"]} & set(easy)
    assert easy == [image.row for image in _plan(world).easy_negatives]
    reseeded = PlanSettings(**{**SETTINGS.__dict__, "seed": 4})
    assert easy != [image.row for image in _plan(world, reseeded).easy_negatives]

    assert [(o.concept, o.source) for o in plan.other_concept_negatives] == [("cat", "/photos/cat.jpg")]
    assert plan.source == "offline" and plan.index is not None and plan.index["count"] == world.index.count


def test_the_plan_round_trips_through_json(world: World) -> None:
    plan = _plan(world)
    text = plan.to_json()
    assert json.loads(text)["tiers"][0]["num_tokens"] == 15
    assert RetrievalPlan.from_json(text) == plan
    with pytest.raises(EngineError, match="version"):
        RetrievalPlan.from_json(json.dumps({**json.loads(text), "version": 99}))


def test_short_supply_is_reported(world: World) -> None:
    plan = _plan(world, PlanSettings(top_n=200, num_hard_negatives=10, num_easy_negatives=10))
    assert len(plan.easy_negatives) < 10
    assert any("easy negatives" in note for note in plan.warnings)
    assert any("soft positives kept" in note for note in plan.warnings)


def test_bad_inputs_are_refused(world: World) -> None:
    with pytest.raises(EngineError, match="at least one photo"):
        concept_query(np.empty((0, DIM)))
    with pytest.raises(EngineError, match="dimension"):
        plan_concept("dog", world.photos, world.own[:, :8], world.index)
    with pytest.raises(EngineError, match="at least 2 generation tokens"):
        _plan(world, PlanSettings(num_generation_tokens=1))
