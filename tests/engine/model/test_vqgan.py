"""The project's VQGAN decoder: layout, maths of its blocks, and safe weight loading."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors import safe_open
from transformers import ChameleonVQVAEConfig
from transformers.models.chameleon.modeling_chameleon import (
    ChameleonVQVAE,
    ChameleonVQVAEEncoderAttnBlock,
    ChameleonVQVAEEncoderResnetBlock,
)

from engine.errors import EngineError, ModelNotFoundError
from engine.model.vqgan import (
    DECODER_FILE,
    AttnBlock,
    ResnetBlock,
    Upsample,
    VQGANDecoder,
    convert_vqgan_ckpt,
    load_decoder,
    save_decoder,
)


def tiny_config(**overrides: object) -> ChameleonVQVAEConfig:
    fields: dict[str, object] = {
        "resolution": 64,
        "base_channels": 32,
        "channel_multiplier": [1, 2, 2],
        "num_res_blocks": 1,
        "embed_dim": 8,
        "latent_channels": 8,
        "num_embeddings": 64,
        "attn_resolutions": [16],
    }
    fields.update(overrides)
    return ChameleonVQVAEConfig(**fields)


def random_decoder(config: ChameleonVQVAEConfig, seed: int = 0) -> VQGANDecoder:
    """A decoder whose every parameter (norms included) is random, so swapped weights would show."""
    torch.manual_seed(seed)
    decoder = VQGANDecoder(config).eval()
    with torch.no_grad():
        for parameter in decoder.parameters():
            parameter.copy_(torch.randn_like(parameter) * 0.1 + (1.0 if parameter.ndim == 1 else 0.0))
    return decoder


def random_indices(config: ChameleonVQVAEConfig, batch: int = 2) -> torch.Tensor:
    side = config.resolution // 2 ** (len(config.channel_multiplier) - 1)
    return torch.randint(0, config.num_embeddings, (batch, side * side), generator=torch.Generator().manual_seed(1))


def write_release_ckpt(model_dir: Path, decoder: VQGANDecoder, **extra: object) -> Path:
    """Save ``decoder`` inside a full taming-layout VQGAN checkpoint, as the original release ships it."""
    encoder_side = ChameleonVQVAE(decoder.config).state_dict()
    state = {k: v for k, v in encoder_side.items() if k.startswith(("encoder.", "quant_conv."))}
    state.update(decoder.state_dict())
    state["loss.discriminator.main.0.weight"] = torch.randn(4, 3, 3, 3)
    path = model_dir / "tokenizer" / "vqgan.ckpt"
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": state, "global_step": 1000, **extra}, path)
    return path


def decode(decoder: VQGANDecoder, indices: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return decoder(indices)


# --- layout ----------------------------------------------------------------------------------------


def test_output_shape_dtype_and_finite() -> None:
    config = tiny_config()
    pixels = decode(VQGANDecoder(config).eval(), random_indices(config, batch=3))
    assert pixels.shape == (3, 3, 64, 64)
    assert pixels.dtype == torch.float32
    assert torch.isfinite(pixels).all()


def test_state_dict_uses_taming_names_and_shapes() -> None:
    shapes = {k: tuple(v.shape) for k, v in VQGANDecoder(tiny_config()).state_dict().items()}
    assert shapes["quantize.embedding.weight"] == (64, 8)
    assert shapes["post_quant_conv.weight"] == (8, 8, 1, 1)
    assert shapes["decoder.conv_in.weight"] == (64, 8, 3, 3)  # latent -> base * mult[-1]
    assert shapes["decoder.conv_out.weight"] == (3, 32, 3, 3)
    assert shapes["decoder.norm_out.weight"] == (32,)
    # Channels change only entering level 0 (64 -> 32): the one 1x1 nin_shortcut.
    assert [k for k in shapes if "nin_shortcut.weight" in k] == ["decoder.up.0.block.0.nin_shortcut.weight"]
    assert shapes["decoder.up.0.block.0.nin_shortcut.weight"] == (32, 64, 1, 1)
    # num_res_blocks + 1 blocks per level; an upsample on every level but the finest.
    for level in range(3):
        assert {k.split(".")[4] for k in shapes if k.startswith(f"decoder.up.{level}.block.")} == {"0", "1"}
        assert (f"decoder.up.{level}.upsample.conv.weight" in shapes) == (level != 0)
    # Attention only at the 16x16 level (level 2, the coarsest), after each block; and in the middle.
    attn_levels = {k.split(".")[2] for k in shapes if ".attn." in k}
    assert attn_levels == {"2"}
    for name in ("norm", "q", "k", "v", "proj_out"):
        assert f"decoder.up.2.attn.1.{name}.weight" in shapes
        assert f"decoder.mid.attn_1.{name}.weight" in shapes


def test_no_attention_without_vanilla_attn_type() -> None:
    keys = VQGANDecoder(tiny_config(attn_type="none")).state_dict()
    assert not [k for k in keys if "attn" in k]
    with pytest.raises(EngineError, match="attn_type"):
        VQGANDecoder(tiny_config(attn_type="linear"))


def test_levels_run_coarse_to_fine() -> None:
    config = tiny_config()
    decoder = VQGANDecoder(config).eval()
    seen: dict[str, int] = {}

    def record(level: int) -> object:
        def hook(_module: torch.nn.Module, inputs: tuple[torch.Tensor, ...], _output: object) -> None:
            seen[f"up.{level}"] = inputs[0].shape[-1]

        return hook

    for level in range(3):
        decoder.decoder.up[level].block[0].register_forward_hook(record(level))
    decode(decoder, random_indices(config, batch=1))
    assert seen == {"up.2": 16, "up.1": 32, "up.0": 64}
    assert list(seen) == ["up.2", "up.1", "up.0"]


def test_invalid_config_is_refused() -> None:
    with pytest.raises(EngineError, match="multiple of 32"):
        VQGANDecoder(tiny_config(base_channels=48))
    with pytest.raises(EngineError, match="resolution"):
        VQGANDecoder(tiny_config(resolution=66))


def test_forward_refuses_bad_indices() -> None:
    config = tiny_config()
    decoder = VQGANDecoder(config)
    with pytest.raises(EngineError, match=r"\[batch, 256\]"):
        decoder(torch.zeros(1, 255, dtype=torch.long))
    with pytest.raises(EngineError, match=r"\[0, 64\)"):
        decoder(torch.full((1, 256), 64))


# --- the blocks against hand-written maths and the HF encoder's blocks -------------------------------


def _randomise(module: torch.nn.Module) -> None:
    torch.manual_seed(3)
    with torch.no_grad():
        for parameter in module.parameters():
            parameter.copy_(torch.randn_like(parameter) * 0.2 + (1.0 if parameter.ndim == 1 else 0.0))


def test_resnet_block_matches_hand_reference_and_hf_block() -> None:
    block = ResnetBlock(64, 32, dropout=0.0).eval()
    _randomise(block)
    x = torch.randn(2, 64, 8, 8)
    p = dict(block.named_parameters())

    def swish(t: torch.Tensor) -> torch.Tensor:
        return t * torch.sigmoid(t)

    h = F.conv2d(
        swish(F.group_norm(x, 32, p["norm1.weight"], p["norm1.bias"], 1e-6)),
        p["conv1.weight"],
        p["conv1.bias"],
        padding=1,
    )
    h = F.conv2d(
        swish(F.group_norm(h, 32, p["norm2.weight"], p["norm2.bias"], 1e-6)),
        p["conv2.weight"],
        p["conv2.bias"],
        padding=1,
    )
    expected = F.conv2d(x, p["nin_shortcut.weight"], p["nin_shortcut.bias"]) + h
    with torch.no_grad():
        torch.testing.assert_close(block(x), expected)
        # Same parameter names as the encoder's block in transformers, and the same function.
        hf_block = ChameleonVQVAEEncoderResnetBlock(tiny_config(), 64, 32).eval()
        hf_block.load_state_dict(block.state_dict(), strict=True)
        torch.testing.assert_close(block(x), hf_block(x.clone()))
        same_width = ResnetBlock(32, 32, dropout=0.0)
        assert same_width.nin_shortcut is None


def test_attention_block_matches_hand_reference_and_hf_block() -> None:
    block = AttnBlock(32).eval()
    _randomise(block)
    x = torch.randn(2, 32, 4, 5)
    p = dict(block.named_parameters())
    h = F.group_norm(x, 32, p["norm.weight"], p["norm.bias"], 1e-6)

    def project(name: str) -> torch.Tensor:  # [B, HW, C]
        return F.conv2d(h, p[f"{name}.weight"], p[f"{name}.bias"]).flatten(2).transpose(1, 2)

    weights = torch.softmax(project("q") @ project("k").transpose(1, 2) / math.sqrt(32), dim=-1)
    attended = (weights @ project("v")).transpose(1, 2).reshape(2, 32, 4, 5)
    expected = x + F.conv2d(attended, p["proj_out.weight"], p["proj_out.bias"])
    with torch.no_grad():
        torch.testing.assert_close(block(x), expected)
        hf_block = ChameleonVQVAEEncoderAttnBlock(32).eval()
        hf_block.load_state_dict(block.state_dict(), strict=True)
        torch.testing.assert_close(block(x), hf_block(x))


def test_upsample_doubles_resolution_with_nearest_then_conv() -> None:
    upsample = Upsample(32).eval()
    x = torch.randn(1, 32, 3, 4)
    nearest = x.repeat_interleave(2, dim=2).repeat_interleave(2, dim=3)
    with torch.no_grad():
        out = upsample(x)
        assert out.shape == (1, 32, 6, 8)
        torch.testing.assert_close(out, upsample.conv(nearest))


# --- weight files ------------------------------------------------------------------------------------


def test_release_ckpt_loads_bit_identical(tmp_path: Path) -> None:
    config = tiny_config()
    original = random_decoder(config)
    write_release_ckpt(tmp_path, original)
    loaded = load_decoder(tmp_path, config)
    assert not loaded.training
    indices = random_indices(config)
    assert torch.equal(decode(loaded, indices), decode(original, indices))


def test_safetensors_round_trip_and_conversion(tmp_path: Path) -> None:
    config = tiny_config()
    original = random_decoder(config)
    indices = random_indices(config)
    save_decoder(original, tmp_path / DECODER_FILE)
    with safe_open(str(tmp_path / DECODER_FILE), framework="pt") as handle:
        metadata = handle.metadata()
    assert metadata["base_channels"] == "32" and metadata["channel_multiplier"] == "[1, 2, 2]"
    assert torch.equal(decode(load_decoder(tmp_path, config), indices), decode(original, indices))

    converted_dir = tmp_path / "converted"
    converted_dir.mkdir()
    ckpt = write_release_ckpt(tmp_path / "release", original)
    convert_vqgan_ckpt(ckpt, converted_dir / DECODER_FILE, config)
    assert torch.equal(decode(load_decoder(converted_dir, config), indices), decode(original, indices))


def test_safetensors_preferred_over_ckpt(tmp_path: Path) -> None:
    config = tiny_config()
    original = random_decoder(config)
    save_decoder(original, tmp_path / DECODER_FILE)
    (tmp_path / "tokenizer").mkdir()
    (tmp_path / "tokenizer" / "vqgan.ckpt").write_bytes(b"not read")
    indices = random_indices(config)
    assert torch.equal(decode(load_decoder(tmp_path, config), indices), decode(original, indices))


EXECUTED: list[str] = []


def _record_execution() -> str:
    EXECUTED.append("ran")
    return "payload"


class _Payload:
    """Unpickling this runs ``_record_execution``: what a malicious checkpoint would do."""

    def __reduce__(self) -> tuple[object, tuple[()]]:
        return (_record_execution, ())


def test_ckpt_with_pickled_object_is_refused_not_executed(tmp_path: Path) -> None:
    config = tiny_config()
    ckpt = write_release_ckpt(tmp_path, random_decoder(config), callbacks=_Payload())
    with pytest.raises(EngineError, match="never unpickles"):
        load_decoder(tmp_path, config)
    assert EXECUTED == []
    torch.load(ckpt, weights_only=False)  # our own file: shows the payload is live under plain unpickling
    assert EXECUTED == ["ran"]
    EXECUTED.clear()


def test_missing_weights_name_the_release_file(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFoundError) as excinfo:
        load_decoder(tmp_path, tiny_config())
    message = str(excinfo.value)
    assert str(tmp_path / "tokenizer" / "vqgan.ckpt") in message
    assert "Hugging Face conversion" in message and "Anole" in message


def test_ckpt_for_another_shape_lists_mismatches(tmp_path: Path) -> None:
    write_release_ckpt(tmp_path, random_decoder(tiny_config(embed_dim=16)))
    with pytest.raises(EngineError, match="shape mismatch") as excinfo:
        load_decoder(tmp_path, tiny_config())
    assert "quantize.embedding.weight: file [64, 16] vs config [64, 8]" in str(excinfo.value)


def test_ckpt_with_other_attention_layout_is_refused(tmp_path: Path) -> None:
    write_release_ckpt(tmp_path, random_decoder(tiny_config(attn_resolutions=[])))
    with pytest.raises(EngineError, match=r"missing \(20\): decoder\.up\.2\.attn\.0"):
        load_decoder(tmp_path, tiny_config())


def test_ckpt_without_decoder_is_refused(tmp_path: Path) -> None:
    config = tiny_config()
    path = tmp_path / "tokenizer" / "vqgan.ckpt"
    path.parent.mkdir()
    encoder_only = {k: v for k, v in ChameleonVQVAE(config).state_dict().items() if k.startswith("encoder.")}
    torch.save({"state_dict": encoder_only}, path)
    with pytest.raises(EngineError, match="holds no VQGAN decoder weights"):
        load_decoder(tmp_path, config)


def test_safetensors_for_another_config_is_refused(tmp_path: Path) -> None:
    save_decoder(random_decoder(tiny_config()), tmp_path / DECODER_FILE)
    with pytest.raises(EngineError, match="resolution file=64 config=128"):
        load_decoder(tmp_path, tiny_config(resolution=128))
