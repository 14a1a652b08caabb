"""The demo model's bundled subset: what ships in resources/demo-subset is what scripts/build_demo_subset.py builds,
covers every identity, stays small, and holds none of the scenes the benchmark evaluates on."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from engine.microworld.reader import load_reader
from engine.microworld.subset import (
    SOURCE_PREFIX,
    bundled_subset_path,
    evaluated_scenes,
    png_sha256,
    subset_scenes,
)
from engine.microworld.world import all_identities, render
from engine.model.loading import load_model
from engine.retrieval.embedder import READER_EMBEDDER, load_embedder
from engine.retrieval.index import EmbeddingIndex

ROOT = Path(__file__).resolve().parents[3]
MAX_BYTES = 4 * 2**20


@pytest.fixture(scope="module")
def shipped() -> EmbeddingIndex:
    return EmbeddingIndex(bundled_subset_path())


@pytest.fixture(scope="module")
def scenes() -> list:
    return subset_scenes(excluded=evaluated_scenes())


def test_the_shipped_subset_is_the_reader_and_the_demo_model_and_small(shipped: EmbeddingIndex) -> None:
    assert shipped.embedder.name == READER_EMBEDDER and not shipped.embedder.untrained
    assert shipped.vq is not None and shipped.vq.model_fingerprint == load_model("demo", device="cpu").fingerprint
    assert shipped.count == 3 * len(all_identities())
    assert sum(p.stat().st_size for p in shipped.path.iterdir()) < MAX_BYTES


def test_rows_are_the_scenes_the_builder_draws_with_their_embeddings_and_tokens(
    shipped: EmbeddingIndex, scenes: list
) -> None:
    records = list(shipped.iter_records())
    assert [r.caption for r in records] == [s.caption() for s in scenes]
    assert [r.source for r in records[:2]] == [f"{SOURCE_PREFIX}0", f"{SOURCE_PREFIX}1"]
    rows = [0, 1234, shipped.count - 1]
    assert [records[r].sha256 for r in rows] == [png_sha256(scenes[r]) for r in rows]
    images = [render(scenes[r]) for r in rows]
    embedded = load_reader().embed(images)
    assert np.allclose(np.asarray(shipped.embeddings[rows], dtype=np.float32), embedded, atol=2e-3)
    assert np.allclose(load_embedder(READER_EMBEDDER).embed(images), embedded, atol=1e-5)
    tokens = load_model("demo", device="cpu").image_tokenizer.encode(images).numpy()
    assert np.array_equal(shipped.vq_tokens[rows], tokens)


def test_every_identity_is_there_and_no_evaluated_scene_is(scenes: list) -> None:
    assert {s.identity for s in scenes} == set(all_identities())
    assert len(set(scenes)) == len(scenes)
    evaluated = evaluated_scenes()
    assert not set(scenes) & evaluated
    assert set(subset_scenes()) & evaluated  # without the exclusion some would be: the check is not vacuous


def test_the_script_rebuilds_the_same_index(tmp_path: Path, shipped: EmbeddingIndex) -> None:
    out = tmp_path / "subset"
    command = [sys.executable, str(ROOT / "scripts" / "build_demo_subset.py"), "-o", str(out)]
    subprocess.run(command, check=True, cwd=ROOT, capture_output=True, env={"PYTHONPATH": str(ROOT)})
    for name in ("embeddings.npy", "vq_tokens.npy", "metadata.jsonl"):
        assert (out / name).read_bytes() == (shipped.path / name).read_bytes(), name
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["count"] == shipped.count
    second = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, env={"PYTHONPATH": str(ROOT)})
    assert second.returncode != 0 and "already exists" in second.stderr
