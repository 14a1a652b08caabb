"""Instant concepts (PLVM): a frozen image encoder reads one reference photo and a small Aligner predicts the
concept's 33 embedding rows and 33 output-head rows, so the concept is usable without training.

The encoder is DINOv2 for real models; the micro-world's demo model uses the micro-world attribute reader
(`engine.microworld.reader`), that world's stand-in for DINOv2. Either gives a global feature (DINOv2's CLS,
the reader's identity features) and a grid of patch features. The Aligner is a cross-attention resampler with
learnable queries over the patch features, plus MLPs on the global feature (see docs/aligner.md):

    identifier embedding row  <- MLP(CLS)                     identifier head row  <- MLP(CLS)
    32 latent embedding rows  <- Linear(resampler queries)    32 latent head rows  <- Linear(resampler queries)

With 16 queries each query yields two rows: query i gives `<g_i>` and `<u_i>` (in general 32 / n_queries rows
per query: the k-th output of every query, in query order, fills the next block of rows). Every output layer
starts at zero weight with a bias equal to the base model's mean embedding (or head) row, so an untrained
Aligner predicts exactly the neutral rows a trained concept starts from.

A checkpoint is one safetensors file whose metadata holds the config, the fingerprint of the base model, and
the kind, fingerprint and source of the image encoder it was trained with; loading it for another base model
or encoder is refused.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Protocol

import torch
from PIL import Image
from safetensors.torch import save as save_bytes
from torch import nn
from transformers import Dinov2Config, Dinov2Model
from transformers.utils import logging as hf_logging

from engine.atomic_write import write_atomic
from engine.concepts.state import N_GENERATION, N_UNDERSTANDING, ConceptState
from engine.errors import EngineError, ModelNotFoundError
from engine.microworld.reader import AttributeReader, ReaderError, default_reader_path, load_reader, to_pixels
from engine.model.images import open_image, to_pixel_values
from engine.model.loading import LoadedModel, resources_dir
from engine.safetensors_file import read_checked

FORMAT = "familiar.aligner/1"
LATENT_ROWS = N_GENERATION + N_UNDERSTANDING
MAX_ALIGNER_BYTES = 4 * 2**30
DINOV2 = "dinov2"
READER = "microworld-reader"
ENCODER_NAMES = {DINOV2: "DINOv2", READER: "micro-world attribute reader"}
SHIPPED_READER = "demo"
"""The `encoder_source` of an Aligner that reads with the reader shipped in resources/."""
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
FINGERPRINT_SAMPLES = 64


class AlignerError(EngineError):
    """An Aligner checkpoint is malformed, or belongs to another base model or image encoder."""


def demo_aligner_path() -> Path:
    """The Aligner shipped for the demo model."""
    return resources_dir() / "demo-aligner.safetensors"


@dataclass(frozen=True)
class AlignerConfig:
    """Sizes of an Aligner. Paper (PLVM): 16 queries, 4 blocks, hidden 1024; `text_hidden` is the language
    model's hidden size (4096 for Anole-7b), `vision_hidden` the image encoder's (768 for dinov2-base, 64 for
    the micro-world reader)."""

    vision_hidden: int
    text_hidden: int
    hidden: int = 1024
    n_queries: int = 16
    n_blocks: int = 4
    n_heads: int = 16
    mlp_ratio: int = 4
    image_size: int = 224

    def __post_init__(self) -> None:
        for field in fields(self):
            value = getattr(self, field.name)
            if type(value) is not int or value < 1:
                raise AlignerError(f"aligner config: {field.name} must be a positive integer, not {value!r}")
        if LATENT_ROWS % self.n_queries:
            raise AlignerError(f"aligner config: n_queries must divide {LATENT_ROWS} (the latent rows)")
        if self.hidden % self.n_heads:
            raise AlignerError("aligner config: hidden must be a multiple of n_heads")

    @property
    def rows_per_query(self) -> int:
        return LATENT_ROWS // self.n_queries

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> AlignerConfig:
        try:
            values = json.loads(text)
        except json.JSONDecodeError as exc:
            raise AlignerError(f"aligner config is not JSON: {exc}") from None
        known = {field.name for field in fields(cls)}
        if not isinstance(values, dict) or not values.keys() <= known:
            raise AlignerError(f"aligner config has unknown fields: {sorted(set(values) - known)}")
        try:
            return cls(**values)
        except TypeError as exc:
            raise AlignerError(f"aligner config is incomplete: {exc}") from None


class ResamplerBlock(nn.Module):
    """Queries attend to the image features and to themselves (Flamingo's perceiver resampler), then an MLP;
    pre-norm, residual."""

    def __init__(self, dim: int, heads: int, mlp_ratio: int) -> None:
        super().__init__()
        self.norm_features = nn.LayerNorm(dim)
        self.norm_queries = nn.LayerNorm(dim)
        self.attention = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.norm_mlp = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, dim * mlp_ratio), nn.GELU(), nn.Linear(dim * mlp_ratio, dim))

    def forward(self, queries: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
        normed = self.norm_queries(queries)
        context = torch.cat([self.norm_features(features), normed], dim=1)
        queries = queries + self.attention(normed, context, context, need_weights=False)[0]
        return queries + self.mlp(self.norm_mlp(queries))


def _mlp(source: int, hidden: int, out: int) -> nn.Sequential:
    return nn.Sequential(nn.LayerNorm(source), nn.Linear(source, hidden), nn.GELU(), nn.Linear(hidden, out))


class Aligner(nn.Module):
    """Image features -> a concept's rows: `forward(cls [B, Dv], patches [B, N, Dv])` returns embedding and
    head rows, each [B, 33, text_hidden], in the concept state's order (identifier, <g1..g16>, <u1..u16>)."""

    def __init__(self, config: AlignerConfig) -> None:
        super().__init__()
        self.config = config
        dim, out = config.hidden, config.text_hidden
        self.project = nn.Sequential(nn.LayerNorm(config.vision_hidden), nn.Linear(config.vision_hidden, dim))
        self.queries = nn.Parameter(torch.randn(config.n_queries, dim) * 0.02)
        self.blocks = nn.ModuleList(
            ResamplerBlock(dim, config.n_heads, config.mlp_ratio) for _ in range(config.n_blocks)
        )
        self.norm = nn.LayerNorm(dim)
        self.latent_embed = nn.Linear(dim, config.rows_per_query * out, bias=False)
        self.latent_head = nn.Linear(dim, config.rows_per_query * out, bias=False)
        self.latent_embed_bias = nn.Parameter(torch.zeros(LATENT_ROWS, out))
        self.latent_head_bias = nn.Parameter(torch.zeros(LATENT_ROWS, out))
        self.identifier_embed = _mlp(config.vision_hidden, dim, out)
        self.identifier_head = _mlp(config.vision_hidden, dim, out)

    @torch.no_grad()
    def initialize(self, embed_mean: torch.Tensor, head_mean: torch.Tensor) -> None:
        """Zero every output weight and set the biases to the base model's mean rows: the untrained Aligner
        then predicts the neutral start a trained concept has without a class word."""
        for layer in (self.latent_embed, self.latent_head, self.identifier_embed[-1], self.identifier_head[-1]):
            layer.weight.zero_()
        self.identifier_embed[-1].bias.copy_(embed_mean)
        self.identifier_head[-1].bias.copy_(head_mean)
        self.latent_embed_bias.copy_(embed_mean.expand(LATENT_ROWS, -1))
        self.latent_head_bias.copy_(head_mean.expand(LATENT_ROWS, -1))

    def _latent(self, queries: torch.Tensor, layer: nn.Linear, bias: torch.Tensor) -> torch.Tensor:
        batch = queries.shape[0]
        rows = layer(queries).view(batch, self.config.n_queries, self.config.rows_per_query, -1)
        return rows.transpose(1, 2).reshape(batch, LATENT_ROWS, -1) + bias

    def forward(self, cls: torch.Tensor, patches: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.project(patches)
        queries = self.queries.expand(patches.shape[0], -1, -1)
        for block in self.blocks:
            queries = block(queries, features)
        queries = self.norm(queries)
        embed = torch.cat(
            [self.identifier_embed(cls).unsqueeze(1), self._latent(queries, self.latent_embed, self.latent_embed_bias)],
            dim=1,
        )
        head = torch.cat(
            [self.identifier_head(cls).unsqueeze(1), self._latent(queries, self.latent_head, self.latent_head_bias)],
            dim=1,
        )
        return embed, head


def new_aligner(config: AlignerConfig, loaded: LoadedModel, seed: int = 0) -> Aligner:
    """A fresh Aligner for `loaded`'s hidden size, initialized deterministically from `seed`."""
    if config.text_hidden != loaded.config.hidden_size:
        raise AlignerError(
            f"aligner config: text_hidden {config.text_hidden} differs from the model's {loaded.config.hidden_size}"
        )
    torch.manual_seed(seed)
    aligner = Aligner(config)
    embedding, head = loaded.model.get_input_embeddings(), loaded.model.get_output_embeddings()
    base_embed = getattr(embedding, "base", embedding).weight.detach().float().cpu()
    base_head = getattr(head, "base", head).weight.detach().float().cpu()
    aligner.initialize(base_embed.mean(0), base_head.mean(0))
    return aligner


def _weights_digest(shape: Mapping[str, object], module: nn.Module) -> str:
    """Hex sha256 of `shape` and 64 evenly spaced values of every tensor of `module` (in bfloat16, so the same
    weights give the same fingerprint in any float dtype, on any device)."""
    digest = hashlib.sha256(json.dumps(shape, sort_keys=True).encode())
    for name, tensor in sorted(module.state_dict().items()):
        flat = tensor.detach().reshape(-1)
        index = torch.linspace(0, flat.numel() - 1, min(FINGERPRINT_SAMPLES, flat.numel())).round().long()
        sample = flat[index.to(flat.device)].to("cpu", torch.bfloat16).contiguous()
        digest.update(name.encode())
        digest.update(sample.view(torch.int16).numpy().tobytes())
    return digest.hexdigest()


def dino_fingerprint(model: Dinov2Model) -> str:
    """A DINOv2's fingerprint: its shape (type, width, layers, heads, patch) and sampled weights."""
    config = model.config
    keys = ("model_type", "hidden_size", "num_hidden_layers", "num_attention_heads", "patch_size")
    return _weights_digest({key: getattr(config, key) for key in keys}, model)


def reader_fingerprint(reader: AttributeReader) -> str:
    """A micro-world reader's fingerprint: its config and sampled weights (batch-norm statistics included)."""
    return _weights_digest({"model_type": READER, "config": reader.config.to_json()}, reader)


class ImageEncoder(Protocol):
    """A frozen image encoder the Aligner reads photos with: a global feature and patch features."""

    kind: str
    source: str
    fingerprint: str

    @property
    def hidden_size(self) -> int: ...

    @property
    def patch_size(self) -> int: ...

    def features(self, images: Sequence[Image.Image], image_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(global features [B, D], patch features [B, N, D]) in float32."""
        ...


class DinoEncoder:
    """A frozen DINOv2 with its preprocessing (centre square crop, resize, ImageNet normalization)."""

    kind = DINOV2

    def __init__(self, model: Dinov2Model, source: str) -> None:
        self.model = model.requires_grad_(False).eval()
        self.source = source
        self.fingerprint = dino_fingerprint(model)

    @property
    def hidden_size(self) -> int:
        return int(self.model.config.hidden_size)

    @property
    def patch_size(self) -> int:
        return int(self.model.config.patch_size)

    @torch.no_grad()
    def features(self, images: Sequence[Image.Image], image_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(CLS features [B, D], patch features [B, (image_size / patch)^2, D]) in float32."""
        parameter = next(self.model.parameters())
        pixels = (to_pixel_values(images, image_size) + 1) / 2
        mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
        std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
        pixels = ((pixels - mean) / std).to(parameter.device, parameter.dtype)
        hidden = self.model(pixel_values=pixels).last_hidden_state.float()
        return hidden[:, 0], hidden[:, 1:]


class ReaderEncoder:
    """The micro-world attribute reader as the Aligner's encoder: its identity features (the layer before the
    identity heads) as the global feature, and the 4x4 grid of its last 3x3 convolution (before the 1x1
    reduction) as 16 patch features of the same width. It reads every photo at 32x32, whatever `image_size`."""

    kind = READER
    patch_size = 8
    """A grid cell covers 8x8 of the reader's 32x32 input."""

    def __init__(self, reader: AttributeReader, source: str) -> None:
        if reader.config.channels[-1] != reader.config.identity_dim:
            raise AlignerError(
                f"the reader's grid width {reader.config.channels[-1]} differs from its identity features' "
                f"{reader.config.identity_dim}; the Aligner needs one feature width"
            )
        self.reader = reader.requires_grad_(False).eval()
        self.source = source
        self.fingerprint = reader_fingerprint(reader)

    @property
    def hidden_size(self) -> int:
        return int(self.reader.config.identity_dim)

    @torch.no_grad()
    def features(self, images: Sequence[Image.Image], image_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(identity features [B, 64], grid features [B, 16, 64]) in float32."""
        parameter = next(self.reader.parameters())
        pixels = to_pixels(list(images)).to(parameter.device) - 0.5
        trunk = self.reader.trunk
        grid = trunk[:-2](pixels)
        identity = self.reader.identity(trunk[-2:](grid))
        return identity.float(), grid.flatten(2).transpose(1, 2).float()


def load_dinov2(spec: str | Path, device: str | torch.device = "cpu") -> DinoEncoder:
    """Load a DINOv2 encoder from a local folder; never downloads."""
    path = Path(spec).expanduser()
    hint = "download a DINOv2 model (e.g. facebook/dinov2-base) on a machine with network and pass its folder"
    if not path.is_dir():
        raise ModelNotFoundError(f"DINOv2 folder {path} does not exist; {hint}")
    missing = [] if (path / "config.json").is_file() else ["config.json"]
    if not any(path.glob("*.safetensors")):
        missing.append("weights (*.safetensors)")
    if missing:
        raise ModelNotFoundError(f"DINOv2 folder {path} is incomplete; missing: {'; '.join(missing)} ({hint})")
    try:
        config = Dinov2Config.from_pretrained(path)
    except Exception as exc:
        raise ModelNotFoundError(f"cannot read {path / 'config.json'}: {exc}") from None
    if config.model_type != "dinov2":
        raise EngineError(f"{path} holds a {config.model_type!r} model; the Aligner needs a DINOv2 encoder")
    hf_logging.disable_progress_bar()
    try:
        model = Dinov2Model.from_pretrained(path, local_files_only=True, use_safetensors=True)
    except (OSError, ValueError, RuntimeError) as exc:
        raise ModelNotFoundError(f"cannot load the DINOv2 weights in {path}: {exc}") from None
    return DinoEncoder(model.to(device), str(path.resolve()))


def load_reader_encoder(spec: str | Path = SHIPPED_READER, device: str | torch.device = "cpu") -> ReaderEncoder:
    """The micro-world attribute reader as an encoder: `demo` is the one shipped in resources/, else a file."""
    path = default_reader_path() if str(spec) == SHIPPED_READER else Path(spec).expanduser()
    try:
        reader = load_reader(path)
    except ReaderError as exc:
        raise AlignerError(str(exc)) from None
    source = SHIPPED_READER if str(spec) == SHIPPED_READER else str(path.resolve())
    return ReaderEncoder(reader.to(device), source)


def load_encoder(kind: str, spec: str | Path, device: str | torch.device = "cpu") -> ImageEncoder:
    """An image encoder of `kind` (`dinov2`: a folder; `microworld-reader`: `demo` or a reader file)."""
    if kind == DINOV2:
        return load_dinov2(spec, device)
    if kind == READER:
        return load_reader_encoder(spec, device)
    raise AlignerError(f"unknown image encoder {kind!r}; known: {', '.join(ENCODER_NAMES)}")


def aligner_metadata(
    config: AlignerConfig, base_fingerprint: str, encoder: ImageEncoder, extra: Mapping[str, str] | None = None
) -> dict[str, str]:
    """The header every Aligner file carries (see docs/aligner.md)."""
    return {
        **(extra or {}),
        "format": FORMAT,
        "config": config.to_json(),
        "base_fingerprint": base_fingerprint,
        "encoder": encoder.kind,
        "encoder_fingerprint": encoder.fingerprint,
        "encoder_source": encoder.source,
    }


def recorded_encoder(metadata: Mapping[str, str]) -> tuple[str, str, str]:
    """(kind, fingerprint, source) of the encoder an Aligner file was trained with; files written before the
    encoder was pluggable name only a DINOv2 (`dino_fingerprint`, `dino_source`)."""
    if "encoder" in metadata:
        return metadata["encoder"], metadata.get("encoder_fingerprint", ""), metadata.get("encoder_source", "")
    return DINOV2, metadata.get("dino_fingerprint", ""), metadata.get("dino_source", "")


def save_aligner(path: Path, tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, str]) -> None:
    """Write tensors (float32) and metadata as safetensors, atomically."""
    data = {name: value.detach().float().cpu().contiguous() for name, value in tensors.items()}
    write_atomic(path, save_bytes(data, metadata=dict(metadata)))


def read_aligner_file(path: Path, expected_format: str = FORMAT) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """The tensors and metadata of an Aligner file (or of a training run's resume file), format-checked."""
    return read_checked(path, expected_format, MAX_ALIGNER_BYTES, "Aligner", "a Familiar Aligner file", AlignerError)


def build_aligner(tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, str], source: str) -> Aligner:
    """An Aligner of the metadata's config holding `tensors`, checked for shapes and finite values."""
    aligner = Aligner(AlignerConfig.from_json(metadata.get("config", "")))
    try:
        aligner.load_state_dict(dict(tensors), strict=True)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[:2]
        raise AlignerError(f"{source} does not match its own config: {' '.join(first)}") from None
    if not all(torch.isfinite(value).all() for value in tensors.values()):
        raise AlignerError(f"{source} contains NaN or infinite values")
    return aligner


def check_bindings(
    metadata: Mapping[str, str], base_fingerprint: str, encoder: ImageEncoder | None, source: str
) -> None:
    """Refuse an Aligner made for another base model (or, when `encoder` is given, another image encoder: of
    another kind, or with other weights)."""
    made_for = metadata.get("base_fingerprint", "")
    if made_for != base_fingerprint:
        raise AlignerError(
            f"{source} is an Aligner for another base model (fingerprint {made_for[:12]}..., loaded model "
            f"{base_fingerprint[:12]}...); train one for this model with `familiar aligner train`"
        )
    if encoder is None:
        return
    kind, expected, recorded_source = recorded_encoder(metadata)
    trained_with = ENCODER_NAMES.get(kind, repr(kind))
    if encoder.kind != kind:
        raise AlignerError(
            f"{source} was trained with the {trained_with} as its image encoder, not a "
            f"{ENCODER_NAMES.get(encoder.kind, encoder.kind)}; use the encoder it records ({recorded_source or '?'})"
        )
    if encoder.fingerprint != expected:
        raise AlignerError(
            f"{source} was trained with another {trained_with} (fingerprint {expected[:12]}..., given encoder "
            f"{encoder.fingerprint[:12]}...); pass the one it was trained with ({recorded_source or '?'})"
            + (" via --dino" if kind == DINOV2 else "")
        )


@dataclass
class LoadedAligner:
    """An Aligner ready to predict: its frozen encoder and the base model it is bound to."""

    aligner: Aligner
    encoder: ImageEncoder
    base_fingerprint: str
    metadata: dict[str, str]

    @torch.no_grad()
    def predict(self, images: Sequence[Image.Image]) -> tuple[torch.Tensor, torch.Tensor]:
        """Embedding and head rows [B, 33, text_hidden] for one reference photo each."""
        cls, patches = self.encoder.features(images, self.aligner.config.image_size)
        device = next(self.aligner.parameters()).device
        return self.aligner(cls.to(device), patches.to(device))


def check_encoder(aligner: Aligner, encoder: ImageEncoder, source: str) -> None:
    """The encoder's width and patch size must suit the Aligner."""
    config = aligner.config
    if encoder.hidden_size != config.vision_hidden:
        raise AlignerError(
            f"{source} expects image features of width {config.vision_hidden}, the "
            f"{ENCODER_NAMES.get(encoder.kind, encoder.kind)} gives {encoder.hidden_size}"
        )
    if config.image_size % encoder.patch_size:
        raise AlignerError(f"{source}: image size {config.image_size} is not a multiple of patch {encoder.patch_size}")


def load_aligner(
    path: Path, base_fingerprint: str, dino: str | Path | None = None, device: str | torch.device = "cpu"
) -> LoadedAligner:
    """Load an Aligner for the base model with `base_fingerprint`, with the encoder it records; `dino` replaces
    the recorded DINOv2 folder (an Aligner trained with the micro-world reader refuses it). Refuses files made
    for another base model or encoder."""
    tensors, metadata = read_aligner_file(path)
    check_bindings(metadata, base_fingerprint, None, str(path))
    aligner = build_aligner(tensors, metadata, str(path))
    kind, _, recorded = recorded_encoder(metadata)
    if dino is not None and kind != DINOV2:
        raise AlignerError(
            f"{path} was trained with the {ENCODER_NAMES.get(kind, repr(kind))} as its image encoder, not "
            "DINOv2; leave out --dino"
        )
    if dino is None and not recorded:
        raise AlignerError(f"{path} does not say which image encoder it needs; pass a DINOv2 folder with --dino")
    encoder = load_encoder(kind, dino if dino is not None else recorded, device)
    check_bindings(metadata, base_fingerprint, encoder, str(path))
    check_encoder(aligner, encoder, str(path))
    aligner.to(device).requires_grad_(False).eval()
    return LoadedAligner(aligner, encoder, base_fingerprint, metadata)


def instant_state(aligner: LoadedAligner, photo: Image.Image | Path, name: str, fingerprint: str) -> ConceptState:
    """A concept's rows predicted from one reference photo, for the base model with `fingerprint`; it attaches
    to concept slots like a trained state."""
    if fingerprint != aligner.base_fingerprint:
        raise AlignerError(
            f"the Aligner is bound to another base model (fingerprint {aligner.base_fingerprint[:12]}..., "
            f"model {fingerprint[:12]}...)"
        )
    image = photo if isinstance(photo, Image.Image) else open_image(photo)
    embed, head = aligner.predict([image])
    return ConceptState(name=name, embed=embed[0].cpu(), head=head[0].cpu(), base_fingerprint=fingerprint)
