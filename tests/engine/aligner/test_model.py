"""The Aligner: config, the query-to-row mapping, its neutral start, checkpoints bound to a base model and a
DINOv2 encoder, and instant concepts that attach and answer in chat."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PIL import Image
from transformers import Dinov2Config, Dinov2Model

from engine.aligner.model import (
    LATENT_ROWS,
    Aligner,
    AlignerConfig,
    AlignerError,
    DinoEncoder,
    LoadedAligner,
    aligner_metadata,
    demo_aligner_path,
    dino_fingerprint,
    instant_state,
    load_aligner,
    load_dinov2,
    new_aligner,
    save_aligner,
)
from engine.concepts.state import N_GENERATION
from engine.errors import ModelNotFoundError
from engine.inference.assistant import Assistant
from engine.inference.generation import Sampling
from engine.model.loading import LoadedModel, demo_model_dir, read_config

DEMO_HIDDEN = read_config(demo_model_dir()).hidden_size
TINY = AlignerConfig(
    vision_hidden=32, text_hidden=DEMO_HIDDEN, hidden=32, n_queries=16, n_blocks=1, n_heads=2, image_size=56
)


def tiny_dino(seed: int) -> Dinov2Model:
    torch.manual_seed(seed)
    config = Dinov2Config(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, image_size=56, patch_size=14)
    return Dinov2Model(config).eval()


@pytest.fixture(scope="module")
def photo() -> Image.Image:
    generator = torch.Generator().manual_seed(0)
    pixels = torch.randint(0, 256, (96, 128, 3), generator=generator, dtype=torch.uint8)
    return Image.fromarray(pixels.numpy())


@pytest.fixture()
def saved_dino(tmp_path: Path) -> Path:
    tiny_dino(0).save_pretrained(tmp_path / "dino")
    return tmp_path / "dino"


def save_tiny(path: Path, demo: LoadedModel, encoder: DinoEncoder, fingerprint: str | None = None) -> Aligner:
    aligner = new_aligner(TINY, demo, seed=1)
    torch.nn.init.normal_(aligner.latent_embed.weight, std=0.1)
    torch.nn.init.normal_(aligner.identifier_head[-1].weight, std=0.1)
    metadata = aligner_metadata(TINY, fingerprint or demo.fingerprint, encoder)
    save_aligner(path, aligner.state_dict(), metadata)
    return aligner


def test_config_is_validated_and_round_trips() -> None:
    assert AlignerConfig.from_json(TINY.to_json()) == TINY
    assert AlignerConfig(vision_hidden=768, text_hidden=4096).rows_per_query == 2
    with pytest.raises(AlignerError, match="divide 32"):
        AlignerConfig(vision_hidden=8, text_hidden=8, n_queries=5, hidden=10, n_heads=2)
    with pytest.raises(AlignerError, match="positive integer"):
        AlignerConfig(vision_hidden=8, text_hidden=0)
    with pytest.raises(AlignerError, match="unknown fields"):
        AlignerConfig.from_json('{"vision_hidden": 8, "text_hidden": 8, "colour": 1}')


@pytest.mark.parametrize(("n_queries", "rows"), [(16, {1 + 3, 1 + N_GENERATION + 3}), (32, {1 + 3})])
def test_each_query_fills_its_generation_and_understanding_rows(n_queries: int, rows: set[int]) -> None:
    config = AlignerConfig(vision_hidden=8, text_hidden=4, hidden=8, n_queries=n_queries, n_blocks=1, n_heads=2)
    aligner = Aligner(config).eval()
    aligner.initialize(torch.zeros(4), torch.zeros(4))
    torch.nn.init.ones_(aligner.latent_embed.weight)

    def only_query_3(_module: torch.nn.Module, _inputs: object, output: torch.Tensor) -> torch.Tensor:
        chosen = torch.zeros_like(output)
        chosen[:, 3] = 1.0
        return chosen

    aligner.norm.register_forward_hook(only_query_3)
    embed, head = aligner(torch.randn(1, 8), torch.randn(1, 5, 8))
    assert embed.shape == head.shape == (1, 1 + LATENT_ROWS, 4)
    assert {int(i) for i in embed[0].abs().sum(1).nonzero()} == rows
    assert not head.abs().any()


def test_an_untrained_aligner_predicts_the_neutral_start(
    demo: LoadedModel, assistant: Assistant, photo: Image.Image
) -> None:
    encoder = DinoEncoder(tiny_dino(0), "tiny")
    loaded = LoadedAligner(new_aligner(TINY, demo).eval(), encoder, demo.fingerprint, {})
    state = instant_state(loaded, photo, "bo", demo.fingerprint)
    neutral = assistant.slots.initial_state("bo", demo.tokenizer)
    torch.testing.assert_close(state.embed, neutral.embed)
    torch.testing.assert_close(state.head, neutral.head)


def test_dino_fingerprint_ignores_dtype_but_not_weights() -> None:
    model = tiny_dino(0)
    assert dino_fingerprint(model) == dino_fingerprint(tiny_dino(0).to(torch.bfloat16))
    assert dino_fingerprint(model) != dino_fingerprint(tiny_dino(1))


def test_a_checkpoint_round_trips(demo: LoadedModel, saved_dino: Path, photo: Image.Image, tmp_path: Path) -> None:
    encoder = load_dinov2(saved_dino)
    aligner = save_tiny(tmp_path / "a.safetensors", demo, encoder).eval()
    loaded = load_aligner(tmp_path / "a.safetensors", demo.fingerprint)
    assert loaded.encoder.fingerprint == encoder.fingerprint and loaded.aligner.config == TINY
    state = instant_state(loaded, photo, "bo", demo.fingerprint)
    expected = LoadedAligner(aligner, encoder, demo.fingerprint, {}).predict([photo])
    assert torch.equal(state.embed, expected[0][0]) and torch.equal(state.head, expected[1][0])
    assert state.embed[1:].std(0).max() > 0  # the trained-looking weights make rows differ


def test_another_base_model_or_encoder_is_refused(
    demo: LoadedModel, saved_dino: Path, photo: Image.Image, tmp_path: Path
) -> None:
    encoder = load_dinov2(saved_dino)
    save_tiny(tmp_path / "other.safetensors", demo, encoder, fingerprint="0" * 64)
    with pytest.raises(AlignerError, match="another base model"):
        load_aligner(tmp_path / "other.safetensors", demo.fingerprint)
    save_tiny(tmp_path / "mine.safetensors", demo, encoder)
    tiny_dino(1).save_pretrained(tmp_path / "dino-1")
    with pytest.raises(AlignerError, match="trained with another DINOv2"):
        load_aligner(tmp_path / "mine.safetensors", demo.fingerprint, dino=tmp_path / "dino-1")
    loaded = load_aligner(tmp_path / "mine.safetensors", demo.fingerprint)
    with pytest.raises(AlignerError, match="another base model"):
        instant_state(loaded, photo, "bo", "f" * 64)


def test_missing_or_broken_files_are_clear_errors(demo: LoadedModel, tmp_path: Path) -> None:
    with pytest.raises(ModelNotFoundError, match="does not exist"):
        load_dinov2(tmp_path / "nowhere")
    (tmp_path / "half").mkdir()
    Dinov2Config(hidden_size=32).save_pretrained(tmp_path / "half")
    with pytest.raises(ModelNotFoundError, match=r"missing: weights"):
        load_dinov2(tmp_path / "half")
    (tmp_path / "junk.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(AlignerError, match="not a valid safetensors"):
        load_aligner(tmp_path / "junk.safetensors", demo.fingerprint)
    with pytest.raises(AlignerError, match="cannot read"):
        load_aligner(tmp_path / "absent.safetensors", demo.fingerprint)


def test_instant_concepts_attach_together_and_answer_in_chat(demo: LoadedModel, dreambooth: Path) -> None:
    aligner = load_aligner(demo_aligner_path(), demo.fingerprint)
    assistant = Assistant(demo)
    for name, folder in (("bo", "dog"), ("mimi", "cat")):
        assistant.attach(instant_state(aligner, dreambooth / folder / "00.jpg", name, demo.fingerprint))
    assert assistant.slots.names() == ["bo", "mimi"]
    bo, mimi = assistant.slots.params("bo").embed, assistant.slots.params("mimi").embed
    assert not torch.equal(bo, mimi)
    pieces = list(assistant.chat("Is <mimi> with <bo>?", None, Sampling(seed=0), max_new_tokens=8))
    assert pieces and all(isinstance(piece, str) for piece in pieces) and "".join(pieces).strip()
