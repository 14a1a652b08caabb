"""The VQGAN decoder that turns Chameleon image codes back into pixels.

transformers ships Chameleon's VQ encoder but not its decoder, and the Hugging Face conversion
dropped the decoder's weights. This module rebuilds the decoder in the taming-transformers layout
(module names match the keys of the original release's ``tokenizer/vqgan.ckpt``) and loads its
weights from that file, safely, or from a one-time safetensors conversion of it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import ChameleonVQVAEConfig

from engine.errors import EngineError, ModelNotFoundError

DECODER_FILE = "vqgan_decoder.safetensors"
CKPT_FILE = Path("tokenizer") / "vqgan.ckpt"

_KEPT_PREFIXES = ("decoder.", "post_quant_conv.")
_CODEBOOK_KEY = "quantize.embedding.weight"
_CONFIG_FIELDS = (
    "embed_dim",
    "num_embeddings",
    "latent_channels",
    "resolution",
    "in_channels",
    "base_channels",
    "channel_multiplier",
    "num_res_blocks",
    "attn_resolutions",
    "attn_type",
)


def _group_norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(num_groups=32, num_channels=channels, eps=1e-6, affine=True)


class ResnetBlock(nn.Module):
    """Pre-activation residual block: (GroupNorm, swish, 3x3 conv) twice, 1x1 shortcut if widths differ."""

    def __init__(self, in_channels: int, out_channels: int, dropout: float) -> None:
        super().__init__()
        self.norm1 = _group_norm(in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1)
        self.norm2 = _group_norm(out_channels)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(out_channels, out_channels, kernel_size=3, padding=1)
        self.nin_shortcut = nn.Conv2d(in_channels, out_channels, kernel_size=1) if in_channels != out_channels else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        shortcut = x if self.nin_shortcut is None else self.nin_shortcut(x)
        return shortcut + h


class AttnBlock(nn.Module):
    """Single-head self-attention over all spatial positions, with 1x1 conv projections."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.norm = _group_norm(channels)
        self.q = nn.Conv2d(channels, channels, kernel_size=1)
        self.k = nn.Conv2d(channels, channels, kernel_size=1)
        self.v = nn.Conv2d(channels, channels, kernel_size=1)
        self.proj_out = nn.Conv2d(channels, channels, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, height, width = x.shape
        h = self.norm(x)

        def tokens(conv: nn.Conv2d) -> torch.Tensor:  # [B, 1, HW, C]
            return conv(h).reshape(b, 1, c, height * width).transpose(2, 3)

        attended = F.scaled_dot_product_attention(tokens(self.q), tokens(self.k), tokens(self.v))
        return x + self.proj_out(attended.transpose(2, 3).reshape(b, c, height, width))


class Upsample(nn.Module):
    """Nearest-neighbour x2 enlargement followed by a 3x3 conv."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, kernel_size=3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class Codebook(nn.Module):
    """Holds the VQ codebook under the checkpoint's ``quantize.embedding`` name."""

    def __init__(self, num_embeddings: int, embed_dim: int) -> None:
        super().__init__()
        self.embedding = nn.Embedding(num_embeddings, embed_dim)


class Decoder(nn.Module):
    """Latent [B, latent_channels, h, w] -> pixels [B, 3, H, W]; levels ``up[i]`` run from coarse to fine."""

    def __init__(self, config: ChameleonVQVAEConfig) -> None:
        super().__init__()
        ch, mults = config.base_channels, list(config.channel_multiplier)
        vanilla = config.attn_type == "vanilla"
        attn_resolutions = set(config.attn_resolutions or ())
        block_in = ch * mults[-1]
        curr_res = config.resolution // 2 ** (len(mults) - 1)

        self.conv_in = nn.Conv2d(config.latent_channels, block_in, kernel_size=3, padding=1)
        self.mid = nn.Module()
        self.mid.block_1 = ResnetBlock(block_in, block_in, config.dropout)
        self.mid.attn_1 = AttnBlock(block_in) if vanilla else nn.Identity()
        self.mid.block_2 = ResnetBlock(block_in, block_in, config.dropout)

        levels: list[nn.Module] = []
        for i_level in reversed(range(len(mults))):
            level = nn.Module()
            level.block = nn.ModuleList()
            level.attn = nn.ModuleList()
            block_out = ch * mults[i_level]
            for _ in range(config.num_res_blocks + 1):
                level.block.append(ResnetBlock(block_in, block_out, config.dropout))
                block_in = block_out
                if vanilla and curr_res in attn_resolutions:
                    level.attn.append(AttnBlock(block_in))
            if i_level != 0:
                level.upsample = Upsample(block_in)
                curr_res *= 2
            levels.insert(0, level)
        self.up = nn.ModuleList(levels)

        self.norm_out = _group_norm(block_in)
        self.conv_out = nn.Conv2d(block_in, config.in_channels, kernel_size=3, padding=1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.mid.block_2(self.mid.attn_1(self.mid.block_1(self.conv_in(z))))
        for i_level in reversed(range(len(self.up))):
            level = self.up[i_level]
            for i_block, block in enumerate(level.block):
                h = block(h)
                if len(level.attn) > 0:
                    h = level.attn[i_block](h)
            if i_level != 0:
                h = level.upsample(h)
        return self.conv_out(F.silu(self.norm_out(h)))


def _validate_config(config: ChameleonVQVAEConfig) -> None:
    mults = list(config.channel_multiplier)
    problems = []
    if config.base_channels <= 0 or config.base_channels % 32:
        problems.append(f"base_channels must be a positive multiple of 32 (got {config.base_channels})")
    if not mults or any(m <= 0 for m in mults):
        problems.append(f"channel_multiplier must be non-empty and positive (got {mults})")
    elif config.resolution <= 0 or config.resolution % 2 ** (len(mults) - 1):
        problems.append(
            f"resolution {config.resolution} must be a positive multiple of 2**{len(mults) - 1} for {len(mults)} levels"
        )
    if config.num_res_blocks < 0:
        problems.append(f"num_res_blocks must be >= 0 (got {config.num_res_blocks})")
    if config.attn_type not in ("vanilla", "none"):
        problems.append(f"attn_type must be 'vanilla' or 'none' (got {config.attn_type!r})")
    if problems:
        raise EngineError("Invalid VQGAN configuration: " + "; ".join(problems) + ".")


class VQGANDecoder(nn.Module):
    """Codebook indices -> images: codebook lookup, ``post_quant_conv``, then the taming ``decoder``.

    Its ``state_dict`` keys (``quantize.embedding.weight``, ``post_quant_conv.*``, ``decoder.*``) are
    the same as in the original release's ``vqgan.ckpt``.
    """

    def __init__(self, config: ChameleonVQVAEConfig) -> None:
        super().__init__()
        _validate_config(config)
        self.config = config
        self.latent_size = config.resolution // 2 ** (len(config.channel_multiplier) - 1)
        self.quantize = Codebook(config.num_embeddings, config.embed_dim)
        self.post_quant_conv = nn.Conv2d(config.embed_dim, config.latent_channels, kernel_size=1)
        self.decoder = Decoder(config)

    @property
    def tokens_per_image(self) -> int:
        return self.latent_size**2

    def forward(self, indices: torch.Tensor) -> torch.Tensor:
        """LongTensor [B, h*w] of codebook indices -> FloatTensor [B, 3, H, W], roughly in [-1, 1]."""
        if indices.ndim != 2 or indices.shape[1] != self.tokens_per_image:
            raise EngineError(
                f"Expected codebook indices of shape [batch, {self.tokens_per_image}], got {list(indices.shape)}."
            )
        if indices.numel() and (int(indices.min()) < 0 or int(indices.max()) >= self.config.num_embeddings):
            raise EngineError(
                f"Codebook indices must lie in [0, {self.config.num_embeddings}); "
                f"got values from {int(indices.min())} to {int(indices.max())}."
            )
        b, s = indices.shape[0], self.latent_size
        z = self.quantize.embedding(indices).reshape(b, s, s, -1).permute(0, 3, 1, 2)
        return self.decoder(self.post_quant_conv(z))


def _config_metadata(config: ChameleonVQVAEConfig) -> dict[str, str]:
    """The config's shape fields as JSON strings, normalised (tuples as lists, no attention as [])."""
    values = {field: getattr(config, field) for field in _CONFIG_FIELDS}
    values["channel_multiplier"] = list(values["channel_multiplier"])
    values["attn_resolutions"] = sorted(values["attn_resolutions"] or [])
    return {field: json.dumps(value) for field, value in values.items()}


def save_decoder(decoder: VQGANDecoder, path: Path) -> None:
    """Write the decoder's weights as safetensors, with the config's shape fields as metadata."""
    state = {k: v.detach().cpu().contiguous() for k, v in decoder.state_dict().items()}
    save_file(state, str(path), metadata=_config_metadata(decoder.config))


def _load_checked(decoder: VQGANDecoder, state: Mapping[str, torch.Tensor], source: Path) -> None:
    """Copy ``state`` into ``decoder`` after checking that every key and shape matches."""
    expected = decoder.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    mismatched = [
        f"{k}: file {list(state[k].shape)} vs config {list(v.shape)}"
        for k, v in expected.items()
        if k in state and state[k].shape != v.shape
    ]
    if not (missing or unexpected or mismatched):
        decoder.load_state_dict(state)
        return
    if len(missing) == len(expected):
        raise EngineError(f"{source} holds no VQGAN decoder weights (no 'decoder.*' or codebook tensors).")
    details = []
    for label, items in (("missing", missing), ("unexpected", unexpected), ("shape mismatch", mismatched)):
        if items:
            more = f" (and {len(items) - 5} more)" if len(items) > 5 else ""
            details.append(f"{label} ({len(items)}): " + "; ".join(items[:5]) + more)
    raise EngineError(
        f"The VQGAN decoder weights in {source} do not match the model's VQ config "
        f"(was the file made for another model?). " + " | ".join(details)
    )


def _read_ckpt_state(ckpt_path: Path) -> dict[str, torch.Tensor]:
    """Load the decoder-related tensors of a taming ``vqgan.ckpt`` without unpickling arbitrary objects."""
    try:
        payload = torch.load(ckpt_path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise EngineError(
            f"Could not read {ckpt_path} as a plain weights file ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0] if str(exc) else 'no details'}). Familiar only loads checkpoints "
            "made of tensors and never unpickles other Python objects; use the unmodified vqgan.ckpt "
            "from the Chameleon/Anole release."
        ) from exc
    state = payload.get("state_dict", payload) if isinstance(payload, dict) else None
    if not isinstance(state, dict):
        raise EngineError(f"{ckpt_path} is not a VQGAN checkpoint: expected a dict with a 'state_dict'.")
    return {
        k: v
        for k, v in state.items()
        if isinstance(v, torch.Tensor) and (k.startswith(_KEPT_PREFIXES) or k == _CODEBOOK_KEY)
    }


def _read_safetensors_state(path: Path, config: ChameleonVQVAEConfig) -> dict[str, torch.Tensor]:
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
        state = load_file(str(path))
    except Exception as exc:
        raise EngineError(f"Could not read {path} as a safetensors file: {exc}") from exc
    expected = _config_metadata(config)
    differing = [
        f"{field} file={metadata[field]} config={expected[field]}"
        for field in _CONFIG_FIELDS
        if field in metadata and metadata[field] != expected[field]
    ]
    if differing:
        raise EngineError(
            f"{path} was saved for a different VQ config: " + "; ".join(differing) + ". Convert it again."
        )
    return state


def load_decoder(model_dir: Path, vq_config: ChameleonVQVAEConfig) -> VQGANDecoder:
    """Build the decoder for ``vq_config`` and load its weights from ``model_dir``.

    Looks for ``model_dir/vqgan_decoder.safetensors`` first, then the original release's
    ``model_dir/tokenizer/vqgan.ckpt`` (loaded with ``weights_only=True``). Returns it in eval mode.
    """
    model_dir = Path(model_dir)
    decoder = VQGANDecoder(vq_config)
    converted, ckpt = model_dir / DECODER_FILE, model_dir / CKPT_FILE
    if converted.is_file():
        source, state = converted, _read_safetensors_state(converted, vq_config)
    elif ckpt.is_file():
        source, state = ckpt, _read_ckpt_state(ckpt)
    else:
        raise ModelNotFoundError(
            f"No VQGAN decoder weights in {model_dir}: expected {ckpt} (or a converted {converted}). "
            "The Hugging Face conversion of Chameleon dropped the image decoder, so drawing needs the "
            "original Chameleon/Anole release's tokenizer/vqgan.ckpt: `familiar model get` fetches and converts "
            f"it, or copy vqgan.ckpt to {ckpt}."
        )
    _load_checked(decoder, state, source)
    return decoder.eval()


def convert_vqgan_ckpt(ckpt_path: Path, out_path: Path, vq_config: ChameleonVQVAEConfig) -> None:
    """Convert a release ``vqgan.ckpt`` to a decoder-only safetensors file, checked against ``vq_config``."""
    ckpt_path = Path(ckpt_path)
    if not ckpt_path.is_file():
        raise ModelNotFoundError(f"{ckpt_path} does not exist.")
    decoder = VQGANDecoder(vq_config)
    _load_checked(decoder, _read_ckpt_state(ckpt_path), ckpt_path)
    save_decoder(decoder, Path(out_path))
