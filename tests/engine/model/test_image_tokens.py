"""Images <-> vocabulary ids through a tiny random VQ encoder and decoder."""

from __future__ import annotations

import pytest
import torch
from PIL import Image
from transformers import ChameleonVQVAEConfig
from transformers.models.chameleon.modeling_chameleon import ChameleonImageVocabularyMapping, ChameleonVQVAE

from engine.errors import EngineError
from engine.model.image_tokens import ImageTokenizer
from engine.model.images import to_pil, to_pixel_values
from engine.model.vqgan import VQGANDecoder

NUM_CODES = 64


def image_token_name(code: int) -> str:
    return "IMGIMG" + "".join(chr(ord("A") + int(digit)) for digit in str(code)) + "Z"


def vocabulary(num_codes: int = NUM_CODES) -> dict[str, int]:
    """Specials and text first, then image tokens at shuffled ids (so code != id - offset)."""
    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2, "<eoss>": 8, "<racm3:break>": 9, "<image>": 10, "hello": 11}
    ids = (torch.randperm(num_codes, generator=torch.Generator().manual_seed(0)) + 100).tolist()
    vocab.update({image_token_name(code): ids[code] for code in range(num_codes)})
    return vocab


@pytest.fixture(scope="module")
def tokenizer() -> ImageTokenizer:
    config = ChameleonVQVAEConfig(
        resolution=64,
        base_channels=32,
        channel_multiplier=[1, 2, 2],
        num_res_blocks=1,
        embed_dim=8,
        latent_channels=8,
        num_embeddings=NUM_CODES,
        attn_resolutions=[],
    )
    torch.manual_seed(0)
    return ImageTokenizer(ChameleonVQVAE(config).eval(), VQGANDecoder(config).eval(), vocabulary())


def sample_images() -> list[Image.Image]:
    noise = Image.frombytes("RGB", (80, 60), torch.randint(0, 256, (80 * 60 * 3,), dtype=torch.uint8).numpy())
    gradient = Image.linear_gradient("L").resize((64, 64)).convert("RGB")
    return [noise, gradient]


def test_properties(tokenizer: ImageTokenizer) -> None:
    assert tokenizer.tokens_per_image == 16 * 16
    assert tokenizer.resolution == 64
    assert (tokenizer.boi_id, tokenizer.eoi_id) == (9, 8)
    assert tokenizer.image_token_ids.dtype == torch.long
    assert tokenizer.image_token_ids.tolist() == list(range(100, 100 + NUM_CODES))


def test_encode_gives_image_token_ids_as_transformers_maps_them(tokenizer: ImageTokenizer) -> None:
    images = sample_images()
    ids = tokenizer.encode(images)
    assert ids.shape == (2, tokenizer.tokens_per_image) and ids.dtype == torch.long
    assert torch.isin(ids, tokenizer.image_token_ids).all()
    assert tokenizer.encode([]).shape == (0, tokenizer.tokens_per_image)
    with torch.no_grad():
        codes = tokenizer.vqmodel.encode(to_pixel_values(images, 64)).image_tokens
    expected = ChameleonImageVocabularyMapping(vocabulary()).convert_img2bpe(codes).reshape(2, -1)
    assert torch.equal(ids, expected.long())


def test_decode_inverts_the_mapping(tokenizer: ImageTokenizer) -> None:
    codes = torch.randint(0, NUM_CODES, (2, tokenizer.tokens_per_image), generator=torch.Generator().manual_seed(2))
    ids = ChameleonImageVocabularyMapping(vocabulary()).convert_img2bpe(codes).long()
    images = tokenizer.decode(ids)
    with torch.no_grad():
        expected = to_pil(tokenizer.decoder(codes))
    assert [image.tobytes() for image in images] == [image.tobytes() for image in expected]


def test_round_trip_gives_images_of_the_model_resolution(tokenizer: ImageTokenizer) -> None:
    images = tokenizer.decode(tokenizer.encode(sample_images(), fit="pad"))
    assert len(images) == 2
    assert all(image.size == (64, 64) and image.mode == "RGB" for image in images)


def test_decode_refuses_non_image_ids_and_wrong_counts(tokenizer: ImageTokenizer) -> None:
    ids = tokenizer.image_token_ids[torch.zeros(1, tokenizer.tokens_per_image, dtype=torch.long)]
    for bad in (tokenizer.boi_id, 11, 99_999, -1):
        broken = ids.clone()
        broken[0, 7] = bad
        with pytest.raises(EngineError, match=rf"not image tokens \(e\.g\. {bad}\)"):
            tokenizer.decode(broken)
    with pytest.raises(EngineError, match="256 image tokens"):
        tokenizer.decode(ids[:, :-1])
    with pytest.raises(EngineError, match="256 image tokens"):
        tokenizer.decode(ids[0])


def test_vocabulary_must_cover_the_codebook(tokenizer: ImageTokenizer) -> None:
    with pytest.raises(EngineError, match="32 image tokens for 64 codes"):
        ImageTokenizer(tokenizer.vqmodel, tokenizer.decoder, vocabulary(num_codes=32))
    without_boi = {k: v for k, v in vocabulary().items() if k != "<racm3:break>"}
    with pytest.raises(EngineError, match="racm3:break"):
        ImageTokenizer(tokenizer.vqmodel, tokenizer.decoder, without_boi)


def test_a_bf16_model_encodes_and_decodes_in_fp32() -> None:
    """A model loaded in bfloat16 (as on CUDA) keeps its VQ encoder and decoder in float32: the codes and the
    pixels are those of a float32 model (in bf16 the demo encoder picked other codes for ~38% of patches)."""
    import random

    from engine.microworld.world import render, sample_scene
    from engine.model.loading import load_model

    half = load_model("demo", device="cpu", dtype=torch.bfloat16)
    full = load_model("demo", device="cpu")
    assert half.model.get_input_embeddings().weight.dtype == torch.bfloat16
    assert {p.dtype for p in half.model.model.vqmodel.parameters()} == {torch.float32}
    assert {p.dtype for p in half.image_tokenizer.decoder.parameters()} == {torch.float32}
    scenes = [render(sample_scene(random.Random(seed))) for seed in range(4)]
    codes = half.image_tokenizer.encode(scenes)
    assert torch.equal(codes, full.image_tokenizer.encode(scenes))
    assert [p.tobytes() for p in half.image_tokenizer.decode(codes)] == [
        p.tobytes() for p in full.image_tokenizer.decode(codes)
    ]
