"""`familiar concept add --instant` and `familiar aligner train` on the demo model."""

from __future__ import annotations

import random
import signal
from pathlib import Path

import pytest
from PIL import Image

import engine.aligner.training as aligner_training
from desktop.cli.main import main
from engine.aligner.model import demo_aligner_path, read_aligner_file, save_aligner
from engine.aligner.training import resume_path
from engine.concepts.state import ConceptState
from engine.microworld.identities import split_identities, write_identity_folders
from engine.microworld.world import render, sample_pose
from engine.model.loading import load_model
from store.library import Library

TINY = ["--hidden", "32", "--heads", "2", "--blocks", "1", "--image-size", "56"]
QUICK = ["--epochs", "2", "--samples-per-identity", "2", "--batch-size", "2", "--learning-rate", "3e-3"]


@pytest.fixture()
def photos(dreambooth: Path) -> list[Path]:
    return sorted((dreambooth / "dog").glob("*.jpg"))[:2]


def test_instant_concept_on_the_demo_model_then_chat(
    tmp_path: Path, photos: list[Path], capsys: pytest.CaptureFixture[str]
) -> None:
    data = ["--data-dir", str(tmp_path)]
    assert main([*data, "concept", "add", "bo", *map(str, photos), "--instant", "--kind", "pet"]) == 0
    assert "with instant tokens (v1, from 00.jpg" in capsys.readouterr().out
    with Library.open(tmp_path) as library:
        concept = library.concepts.get("bo")
        assert concept.state == "instant" and concept.photo_count == 2
        state = ConceptState.from_bytes(library.tokens.read_bytes(concept.active))
    assert state.base_fingerprint == load_model("demo", device="cpu").fingerprint
    assert main([*data, "chat", "Is <bo> here?", "--max-tokens", "4", "--seed", "0", "--device", "cpu"]) == 0


def test_instant_concept_from_micro_world_photos_with_the_shipped_aligner(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, (identity, *_) = split_identities(0, 1)
    rng = random.Random(0)
    photos = []
    for number in range(2):
        photos.append(tmp_path / f"photo{number}.png")
        render(sample_pose(identity, rng)).resize((64, 64), Image.Resampling.NEAREST).save(photos[-1])
    data = ["--data-dir", str(tmp_path / "library")]
    assert main([*data, "concept", "add", "bo", *map(str, photos), "--instant", "--device", "cpu"]) == 0
    assert "with instant tokens (v1, from photo0.png" in capsys.readouterr().out
    with Library.open(tmp_path / "library") as library:
        concept = library.concepts.get("bo")
        state = ConceptState.from_bytes(library.tokens.read_bytes(concept.active))
    assert concept.state == "instant" and state.embed.shape == (33, load_model("demo", device="cpu").config.hidden_size)
    assert main([*data, "concept", "add", "mimi", str(photos[0]), "--instant", "--dino", str(tmp_path)]) == 2
    assert "not DINOv2; leave out --dino" in capsys.readouterr().err
    with Library.open(tmp_path / "library") as library:
        assert [concept.name for concept in library.concepts.list()] == ["bo"]


def test_instant_options_are_checked_before_anything_is_stored(
    tmp_path: Path, photos: list[Path], capsys: pytest.CaptureFixture[str]
) -> None:
    data = ["--data-dir", str(tmp_path)]
    assert main([*data, "concept", "add", "bo", str(photos[0]), "--aligner", "x.safetensors"]) == 2
    assert "only apply with --instant" in capsys.readouterr().err
    assert main([*data, "concept", "add", "bo", str(photos[0]), "--instant", "--model", str(tmp_path)]) == 2
    assert "needs --aligner PATH" in capsys.readouterr().err

    tensors, metadata = read_aligner_file(demo_aligner_path())
    foreign = tmp_path / "foreign.safetensors"
    save_aligner(foreign, tensors, {**metadata, "base_fingerprint": "0" * 64})
    assert main([*data, "concept", "add", "bo", str(photos[0]), "--instant", "--aligner", str(foreign)]) == 2
    assert "an Aligner for another base model" in capsys.readouterr().err
    with Library.open(tmp_path) as library:
        assert library.concepts.list() == []


def test_instant_photos_are_checked_before_the_model_loads(
    tmp_path: Path, photos: list[Path], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from engine.model import loading

    def refuse(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("the model was loaded before the check")

    monkeypatch.setattr(loading, "load_model", refuse)
    text = tmp_path / "notes.jpg"
    text.write_text("not a photo")
    for bad, message in ((tmp_path / "missing.jpg", "missing.jpg"), (text, "not a photo")):
        argv = ["--data-dir", str(tmp_path / "lib"), "concept", "add", "bo", str(photos[0]), str(bad), "--instant"]
        assert main(argv) == 2
        assert message in capsys.readouterr().err


def test_train_cancel_resume_and_use_an_aligner(
    tmp_path: Path, dreambooth: Path, photos: list[Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    dataset = tmp_path / "identities"
    for subject in ("cat", "backpack"):
        (dataset / subject).mkdir(parents=True)
        for photo in sorted((dreambooth / subject).glob("*.jpg"))[:2]:
            (dataset / subject / photo.name).symlink_to(photo)
    output = tmp_path / "aligner.safetensors"
    command = ["aligner", "train", str(dataset), "-o", str(output), "--device", "cpu", *QUICK]
    prepare = aligner_training.prepare_data

    def prepare_then_press_ctrl_c(*args: object, **kwargs: object) -> aligner_training.PreparedData:
        prepared = prepare(*args, **kwargs)
        signal.raise_signal(signal.SIGINT)
        return prepared

    monkeypatch.setattr(aligner_training, "prepare_data", prepare_then_press_ctrl_c)
    assert main([*command, *TINY]) == 130
    assert output.is_file() and resume_path(output).is_file()
    monkeypatch.setattr(aligner_training, "prepare_data", prepare)
    assert main([*command, *TINY]) == 2  # the file exists: only --resume continues it
    assert main([*command, "--resume"]) == 0
    assert not resume_path(output).exists()
    _, metadata = read_aligner_file(output)
    assert metadata["step"] == metadata["total_steps"] == "4"
    assert '"hidden": 32' in metadata["config"] and metadata["encoder"] == "microworld-reader"

    data = ["--data-dir", str(tmp_path / "library")]
    add = [*data, "concept", "add", "bo", str(photos[0]), "--instant", "--aligner", str(output), "--device", "cpu"]
    assert main(add) == 0
    with Library.open(tmp_path / "library") as library:
        assert library.concepts.get("bo").state == "instant"


def test_train_on_micro_world_identities_and_refuse_dino_with_the_reader(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    train, _ = split_identities(0, 4)
    write_identity_folders(tmp_path / "identities", train[:3], renders=2, seed=0)
    output = tmp_path / "aligner.safetensors"
    command = ["aligner", "train", str(tmp_path / "identities"), "-o", str(output), "--device", "cpu", *QUICK]
    assert main([*command, "--encoder", "microworld-reader", "--dino", str(tmp_path), *TINY]) == 2
    assert "--dino applies to the dinov2 encoder" in capsys.readouterr().err
    assert main([*command, "--hard-negative-share", "0.5", "--distill-weight", "1", *TINY]) == 0
    _, metadata = read_aligner_file(output)
    assert metadata["encoder"] == "microworld-reader" and metadata["encoder_source"] == "demo"
    assert '"hard_negative_share": 0.5' in metadata["train_config"]
    assert '"distill_weight": 1.0' in metadata["train_config"]
