"""The micro-world's attribute reader: the shipped file reads held-out scenes well, its embedding separates
identities, and bad files are refused clearly."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from engine.microworld.reader import (
    FORMAT,
    AttributeReader,
    ReaderConfig,
    ReaderError,
    accuracy,
    augment,
    default_reader_path,
    held_out_scenes,
    load_reader,
    reader_values,
    train_reader,
)
from engine.microworld.world import IDENTITY, Scene, one_change, render, sample_pose

HELD_OUT_SEED = 777  # the shipped reader was trained on seed 0


@pytest.fixture(scope="module")
def shipped() -> AttributeReader:
    return load_reader(default_reader_path())


@pytest.fixture(scope="module")
def held_out() -> list[Scene]:
    return held_out_scenes(200, HELD_OUT_SEED)


def test_shipped_reader_is_small_and_loads(shipped: AttributeReader) -> None:
    assert default_reader_path().stat().st_size < 1_000_000
    assert not shipped.training
    assert set(shipped.config.values) == set(reader_values())


def test_shipped_reader_beats_chance_on_held_out_scenes(shipped: AttributeReader, held_out: list[Scene]) -> None:
    figures = accuracy(shipped, held_out)
    assert figures["mean"] > 0.9, figures
    for name, values in shipped.config.values.items():
        chance = 1 / len(values)
        assert figures[name] > chance + 0.6 * (1 - chance), (name, figures)
    assert figures["identity_exact"] > 0.9, figures


def test_read_and_probabilities_are_well_formed(shipped: AttributeReader, held_out: list[Scene]) -> None:
    images = [render(scene) for scene in held_out[:8]]
    reads = shipped.read(images)
    assert len(reads) == 8
    for read in reads:
        assert set(read) == set(shipped.config.values)
        assert all(read[name] in shipped.config.values[name] for name in read)
    probs = shipped.probabilities(images)
    for name, values in shipped.config.values.items():
        assert probs[name].shape == (8, len(values))
        assert torch.allclose(probs[name].sum(dim=1), torch.ones(8), atol=1e-5)
    assert shipped.read(images[0]) == reads[:1]
    assert shipped.read([]) == []


def test_any_image_size_and_mode_is_accepted(shipped: AttributeReader, held_out: list[Scene]) -> None:
    scenes = held_out[:40]
    small = [render(scene) for scene in scenes]
    large = [image.resize((128, 128), 0).convert("RGBA") for image in small]  # nearest: same picture, bigger
    same = sum(a == b for a, b in zip(shipped.read(small), shipped.read(large), strict=True))
    assert same >= 0.8 * len(scenes)


def test_embeddings_are_unit_vectors_and_deterministic(shipped: AttributeReader, held_out: list[Scene]) -> None:
    vectors = shipped.embed([render(scene) for scene in held_out[:20]])
    assert vectors.dtype == np.float32 and vectors.ndim == 2 and vectors.shape[0] == 20
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    again = shipped.embed([render(scene) for scene in held_out[:20]])
    assert np.array_equal(vectors, again)
    single = shipped.embed(render(held_out[0]))
    assert np.allclose(single[0], vectors[0], atol=1e-5)


def test_one_identity_change_is_less_similar_than_another_pose(shipped: AttributeReader, held_out: list[Scene]) -> None:
    rng = random.Random(HELD_OUT_SEED)
    base = shipped.embed([render(scene) for scene in held_out])
    other_pose = shipped.embed([render(sample_pose(scene.identity, rng)) for scene in held_out])
    changed = [Scene(one_change(s.identity, rng), s.size, s.position, s.background, s.dx, s.dy) for s in held_out]
    one_changed = shipped.embed([render(scene) for scene in changed])
    same_identity = (base * other_pose).sum(axis=1)
    different_identity = (base * one_changed).sum(axis=1)
    assert same_identity.mean() > different_identity.mean() + 0.05
    assert (same_identity > different_identity).mean() > 0.7


def test_save_and_load_round_trip(tmp_path: Path, held_out: list[Scene]) -> None:
    torch.manual_seed(0)
    reader = AttributeReader()
    path = tmp_path / "reader.safetensors"
    reader.save(path, extra={"note": "untrained"})
    loaded = load_reader(path)
    images = [render(scene) for scene in held_out[:6]]
    assert np.array_equal(reader.embed(images), loaded.embed(images))
    assert reader.read(images) == loaded.read(images)


def test_corrupt_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "broken.safetensors"
    path.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00not json at all, nor tensors")
    with pytest.raises(ReaderError, match="not a valid safetensors file"):
        load_reader(path)
    with pytest.raises(ReaderError, match="cannot read"):
        load_reader(tmp_path / "missing.safetensors")


def test_wrong_metadata_is_refused(tmp_path: Path) -> None:
    tensors = {name: value.contiguous() for name, value in AttributeReader().state_dict().items()}
    config = ReaderConfig()
    cases = {
        "no format": ({}, "not a micro-world reader file"),
        "another format": ({"format": "familiar.aligner/1", "config": config.to_json()}, "not a micro-world reader"),
        "bad config": ({"format": FORMAT, "config": "{not json"}, "config is malformed"),
        "missing config": ({"format": FORMAT}, "config is malformed"),
    }
    other_world = json.loads(config.to_json())
    other_world["values"]["colour"] = [*other_world["values"]["colour"], "teal"]
    cases["other world"] = ({"format": FORMAT, "config": json.dumps(other_world)}, "different micro-world")
    bigger = json.loads(config.to_json())
    bigger["identity_dim"] = 80
    cases["shapes differ"] = ({"format": FORMAT, "config": json.dumps(bigger)}, "does not match its own config")
    for name, (metadata, message) in cases.items():
        path = tmp_path / f"{name}.safetensors"
        save_file(tensors, str(path), metadata=metadata)
        with pytest.raises(ReaderError, match=message):
            load_reader(path)


def test_non_finite_weights_are_refused(tmp_path: Path) -> None:
    reader = AttributeReader()
    with torch.no_grad():
        reader.heads["shape"].weight[0, 0] = float("nan")
    path = tmp_path / "nan.safetensors"
    reader.save(path)
    with pytest.raises(ReaderError, match="NaN"):
        load_reader(path)


def test_augment_keeps_shape_and_range_and_is_seeded() -> None:
    pixels = torch.rand(6, 3, 32, 32)
    first = augment(pixels, torch.Generator().manual_seed(1))
    second = augment(pixels, torch.Generator().manual_seed(1))
    assert first.shape == pixels.shape and torch.equal(first, second)
    assert first.min() >= 0 and first.max() <= 1
    assert not torch.equal(first, pixels)


def test_train_reader_runs_and_reports() -> None:
    reader, report = train_reader(seed=1, steps=3, batch=8, log_every=2)
    assert not reader.training
    assert report["steps"] == 3 and report["parameters"] == reader.parameter_count()
    assert [entry["step"] for entry in report["losses"]] == [2, 3]
    figures = accuracy(reader, held_out_scenes(10, 5))
    assert set(figures) >= set(reader_values()) | {"mean", "identity_mean", "identity_exact", "exact"}
    assert all(0 <= value <= 1 for value in figures.values())
    assert set(IDENTITY) <= set(figures)
