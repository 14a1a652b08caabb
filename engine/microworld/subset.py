"""The demo model's bundled offline subset: micro-world scenes in the product's index format.

`familiar train` on the demo model uses it when the user names no index, so every concept, the first in an
empty library included, trains with soft positives and hard negatives (docs/retrieval.md). Every one of the
world's 1,664 identities appears `poses` times, each in a pose drawn from its own seed namespace
(`familiar-demo-subset-{seed}`, used nowhere else); scenes that the personalization benchmark evaluates on
(its test renders and test negatives for seeds `0..RESERVED_BENCH_SEEDS - 1`) are skipped and redrawn.

Rows hold the attribute reader's identity embedding (the `microworld-reader` embedder, this world's CLIP) and
the demo model's VQ tokens. There are no image files: a row's `source` is `microworld:demo-subset/<row>`, its
caption the scene's caption and its `sha256` that of the scene rendered as PNG by Pillow.
"""

from __future__ import annotations

import hashlib
import io
import random
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from engine.errors import EngineError
from engine.microworld.benchmark import QUICK, BenchSettings, make_concepts
from engine.microworld.world import Scene, all_identities, render, sample_pose
from engine.progress import Progress, ProgressCallback
from engine.retrieval.index import IndexRecord, IndexWriter

if TYPE_CHECKING:
    from engine.retrieval.embedder import Embedder
    from engine.retrieval.index import ImageTokenSource

SUBSET_FOLDER = "demo-subset"
SOURCE_PREFIX = "microworld:demo-subset/"
DEFAULT_POSES = 3
DEFAULT_SEED = 0
RESERVED_BENCH_SEEDS = 100
RESERVED_CONCEPT_COUNTS = tuple(sorted({3, QUICK.concepts, BenchSettings().concepts, 16, 32}))
"""Benchmark sizes whose evaluated scenes are kept out of the subset, for each reserved seed (3: the quick run's
size before session 41, when the shipped subset was built)."""
CHUNK = 512


def bundled_subset_path() -> Path:
    """Where the subset ships: `resources/demo-subset`."""
    from engine.model.loading import resources_dir  # lazy: it imports transformers

    return resources_dir() / SUBSET_FOLDER


def evaluated_scenes(seeds: int = RESERVED_BENCH_SEEDS) -> set[Scene]:
    """The scenes the personalization benchmark measures on (test renders, hard and random negatives) for
    benchmark seeds `0..seeds - 1` at the reserved concept counts."""
    scenes: set[Scene] = set()
    for seed in range(seeds):
        for count in RESERVED_CONCEPT_COUNTS:
            for concept in make_concepts(replace(BenchSettings(), concepts=count, seed=seed)):
                scenes.update(concept.test, concept.hard_negatives, concept.random_negatives)
    return scenes


def subset_scenes(
    poses: int = DEFAULT_POSES, seed: int = DEFAULT_SEED, excluded: set[Scene] | None = None
) -> list[Scene]:
    """Every identity in `poses` distinct poses, none of them in `excluded`, in identity order."""
    if poses < 1:
        raise EngineError("the subset needs at least one pose per identity")
    rng = random.Random(f"familiar-demo-subset-{seed}")
    excluded = excluded or set()
    scenes = []
    for identity in all_identities():
        chosen: list[Scene] = []
        while len(chosen) < poses:
            scene = sample_pose(identity, rng)
            if scene not in excluded and scene not in chosen:
                chosen.append(scene)
        scenes += chosen
    return scenes


def png_sha256(scene: Scene) -> str:
    buffer = io.BytesIO()
    render(scene).save(buffer, format="PNG")
    return hashlib.sha256(buffer.getvalue()).hexdigest()


def _chunks(scenes: list[Scene]) -> Iterator[tuple[int, list[Scene]]]:
    for start in range(0, len(scenes), CHUNK):
        yield start, scenes[start : start + CHUNK]


def build_subset(
    path: Path,
    scenes: list[Scene],
    embedder: Embedder,
    image_tokens: ImageTokenSource,
    progress: ProgressCallback | None = None,
) -> int:
    """Write `scenes` as a new index at `path` (which must not exist yet): the embedder's embeddings and the
    base model's VQ tokens. Returns the row count."""
    if path.exists():
        raise EngineError(f"{path} already exists; remove it first to rebuild the subset")
    writer = IndexWriter(path, embedder.info, image_tokens.info())
    for start, chunk in _chunks(scenes):
        images = [render(scene) for scene in chunk]
        records = [
            IndexRecord(f"{SOURCE_PREFIX}{start + i}", scene.caption(), png_sha256(scene))
            for i, scene in enumerate(chunk)
        ]
        tokens = np.concatenate(
            [image_tokens.tokenizer.encode(images[i : i + 64]).numpy() for i in range(0, len(images), 64)]
        )
        writer.append(embedder.embed(images), records, tokens.astype(np.int32))
        if progress is not None:
            progress(Progress("indexing", start + len(chunk), len(scenes)))
    return writer.count
