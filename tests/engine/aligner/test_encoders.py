"""The Aligner's pluggable image encoder: the micro-world attribute reader's features, the encoder an Aligner
file records (a mismatch is refused), the shipped demo Aligner (it reads with the reader), and training on
rendered micro-world identities with hard negatives."""

from __future__ import annotations

import random
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from transformers import Dinov2Config, Dinov2Model

from engine.aligner.model import (
    DINOV2,
    READER,
    SHIPPED_READER,
    AlignerConfig,
    AlignerError,
    DinoEncoder,
    ReaderEncoder,
    aligner_metadata,
    check_bindings,
    demo_aligner_path,
    instant_state,
    load_aligner,
    load_reader_encoder,
    new_aligner,
    recorded_encoder,
    save_aligner,
)
from engine.aligner.training import AlignerTrainConfig, AlignerTrainer, plan_epoch, prepare_data, read_dataset
from engine.inference.assistant import Assistant
from engine.microworld.identities import (
    folder_name,
    held_out_concepts,
    recognition,
    split_identities,
    write_identity_folders,
)
from engine.microworld.reader import AttributeReader, load_reader, to_pixels
from engine.microworld.world import render, sample_scene
from engine.model.loading import LoadedModel, demo_model_dir, read_config

DEMO_HIDDEN = read_config(demo_model_dir()).hidden_size
SMALL = AlignerConfig(
    vision_hidden=64, text_hidden=DEMO_HIDDEN, hidden=32, n_queries=16, n_blocks=1, n_heads=2, image_size=32
)


@pytest.fixture(scope="module")
def reader_encoder() -> ReaderEncoder:
    return load_reader_encoder()


def scenes(count: int, seed: int = 0) -> list:
    rng = random.Random(seed)
    return [render(sample_scene(rng)) for _ in range(count)]


def test_the_reader_gives_its_identity_features_and_a_grid_of_the_same_width(reader_encoder: ReaderEncoder) -> None:
    images = scenes(3)
    cls, patches = reader_encoder.features(images, 224)
    assert cls.shape == (3, 64) and patches.shape == (3, 16, 64) and reader_encoder.hidden_size == 64
    identity, _pose = load_reader().features(to_pixels(images))
    torch.testing.assert_close(cls, identity)
    assert not torch.equal(patches[0], patches[1])
    assert reader_encoder.kind == READER and reader_encoder.source == SHIPPED_READER


def test_the_reader_fingerprint_follows_its_weights(reader_encoder: ReaderEncoder) -> None:
    assert load_reader_encoder().fingerprint == reader_encoder.fingerprint
    torch.manual_seed(0)
    assert ReaderEncoder(AttributeReader(), "fresh").fingerprint != reader_encoder.fingerprint


def test_an_aligner_refuses_an_encoder_of_another_kind_or_weights(
    demo: LoadedModel, reader_encoder: ReaderEncoder, tmp_path: Path
) -> None:
    path = tmp_path / "reader.safetensors"
    save_aligner(path, new_aligner(SMALL, demo).state_dict(), aligner_metadata(SMALL, demo.fingerprint, reader_encoder))
    assert load_aligner(path, demo.fingerprint).encoder.kind == READER
    Dinov2Model(Dinov2Config(hidden_size=64, num_hidden_layers=1, num_attention_heads=2)).save_pretrained(
        tmp_path / "dino"
    )
    with pytest.raises(AlignerError, match="micro-world attribute reader as its image encoder, not DINOv2"):
        load_aligner(path, demo.fingerprint, dino=tmp_path / "dino")

    dino = DinoEncoder(Dinov2Model.from_pretrained(tmp_path / "dino"), "somewhere")
    dino_metadata = aligner_metadata(SMALL, demo.fingerprint, dino)
    with pytest.raises(AlignerError, match="trained with the DINOv2 as its image encoder, not a micro-world"):
        check_bindings(dino_metadata, demo.fingerprint, reader_encoder, "x")
    other = ReaderEncoder(AttributeReader(), "fresh")
    with pytest.raises(AlignerError, match="trained with another micro-world attribute reader"):
        check_bindings(aligner_metadata(SMALL, demo.fingerprint, reader_encoder), demo.fingerprint, other, "x")
    check_bindings(dino_metadata, demo.fingerprint, dino, "x")


def test_files_from_before_the_encoder_was_pluggable_name_a_dinov2() -> None:
    legacy = {"dino_fingerprint": "ab" * 32, "dino_source": "/models/dinov2-base"}
    assert recorded_encoder(legacy) == (DINOV2, "ab" * 32, "/models/dinov2-base")


def test_the_shipped_demo_aligner_reads_with_the_reader_and_predicts_distinct_rows(demo: LoadedModel) -> None:
    aligner = load_aligner(demo_aligner_path(), demo.fingerprint)
    assert aligner.encoder.kind == READER and aligner.aligner.config.vision_hidden == 64
    first, second = (instant_state(aligner, image, "bo", demo.fingerprint) for image in scenes(2, seed=3))
    assert first.embed.shape == first.head.shape == (33, DEMO_HIDDEN)
    assert torch.isfinite(first.embed).all() and torch.isfinite(first.head).all()
    assert not torch.equal(first.embed, second.embed)
    assert demo_aligner_path().stat().st_size < 8 * 2**20


def test_the_shipped_demo_aligner_tells_a_held_out_creature_from_random_ones(demo: LoadedModel) -> None:
    """Rows from one render of a creature never trained on make the model say yes to other renders of it far more
    often than to random creatures (the shipped Aligner's build, docs/aligner.md, measures 32 of them)."""
    aligner = load_aligner(demo_aligner_path(), demo.fingerprint)
    _, held = split_identities(0, 32)
    yes_to_it, yes_to_others = [], []
    for concept in held_out_concepts(held[:6], seed=0, per_kind=4):
        assistant = Assistant(demo)
        assistant.attach(instant_state(aligner, render(concept.reference), "bo", demo.fingerprint))
        scores = recognition(assistant, "bo", concept)
        yes_to_it.append(scores["positive"])
        yes_to_others.append(1 - scores["random_negative"])
    assert sum(yes_to_it) / 6 > sum(yes_to_others) / 6 + 0.4


@pytest.fixture(scope="module")
def identities(tmp_path_factory: pytest.TempPathFactory) -> Path:
    train, held = split_identities(0, 4)
    assert not set(train) & set(held) and all(identity.accessory != "none" for identity in held)
    root = tmp_path_factory.mktemp("microworld-identities")
    write_identity_folders(root, train[:12], renders=3, seed=0)
    return root


def test_identity_folders_hold_renders_in_the_training_layout(identities: Path) -> None:
    train, _ = split_identities(0, 4)
    read = read_dataset(identities)
    assert sorted(identity.name for identity in read) == sorted(folder_name(i) for i in train[:12])
    assert all(len(identity.photos) == 3 for identity in read)


def test_training_with_the_reader_lowers_the_loss_and_draws_hard_negatives_from_neighbours(
    demo: LoadedModel, reader_encoder: ReaderEncoder, identities: Path
) -> None:
    data = prepare_data(read_dataset(identities), demo, reader_encoder, SMALL.image_size)
    assert all(i not in near and len(near) == 8 for i, near in enumerate(data.neighbours))
    config = AlignerTrainConfig(epochs=3, samples_per_identity=2, batch_size=4, learning_rate=3e-3)
    hard = plan_epoch(data, replace(config, hard_negative_share=1.0, samples_per_identity=50), 0)
    nearest = {i: set(data.neighbours[i]) for i in range(len(data.identities))}
    negatives = [draw for draw in hard if draw.kind == "no"]
    assert negatives and all(
        next(j for j, r in enumerate(data.photo_ranges) if draw.query in r) in nearest[draw.identity]
        for draw in negatives
    )
    run = AlignerTrainer(Assistant(demo), new_aligner(SMALL, demo, seed=0), data, config)
    held = plan_epoch(data, config, 99)
    with torch.no_grad():
        before = run.loss(held).item()
    run.run()
    with torch.no_grad():
        after = run.loss(held).item()
    assert after < before - 0.5
