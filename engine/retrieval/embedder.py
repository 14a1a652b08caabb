"""Image embeddings with open_clip, for retrieval: L2-normalised float32 vectors, computed locally.

Weights come only from a local file; nothing is ever downloaded. Only the image tower is kept. The default,
ViT-L-14 with the `openai` tag's settings (QuickGELU, OpenAI mean and std), is the model behind the public
LAION-5B kNN indexes. `demo` is a tiny model with deterministic random weights so every command runs without
a weights file: its similarities reflect little more than colour statistics. `microworld-reader` is the
micro-world's stand-in for CLIP: the attribute reader's identity features (engine/microworld/reader.py), the
embedder of the demo model's bundled subset.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import open_clip
import torch
from PIL import Image

from engine.errors import EngineError
from engine.progress import Progress, ProgressCallback
from engine.retrieval.embedder_info import EmbedderInfo

DEFAULT_EMBEDDER = "ViT-L-14"
DEFAULT_TAG = "openai"
DEMO_EMBEDDER = "demo"
READER_EMBEDDER = "microworld-reader"
DEMO_SEED = 20240611
DEMO_CONFIG: dict[str, Any] = {
    "embed_dim": 64,
    "vision_cfg": {"image_size": 64, "layers": 2, "width": 64, "head_width": 32, "patch_size": 16, "pool_type": "avg"},
    "text_cfg": {"context_length": 8, "vocab_size": 64, "width": 32, "heads": 1, "layers": 1},
}
"""The demo embedder's architecture. Average pooling keeps random-weight features image-dependent (a random
ViT's class token gives nearly the same vector for every image)."""


class Embedder:
    """An open_clip image tower with its preprocessing; ``embed`` maps images to unit vectors."""

    def __init__(
        self,
        visual: torch.nn.Module,
        preprocess: Callable[[Image.Image], torch.Tensor],
        info: EmbedderInfo,
        device: torch.device,
    ) -> None:
        self.visual = visual.eval().to(device)
        self.preprocess = preprocess
        self.info = info
        self.device = device

    @property
    def dim(self) -> int:
        return self.info.dim

    @torch.no_grad()
    def embed(
        self, images: Sequence[Image.Image], batch_size: int = 32, progress: ProgressCallback | None = None
    ) -> np.ndarray:
        """Images -> float32 array [N, dim] of L2-normalised embeddings; an "embedding" event per batch."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, not {batch_size}")
        out = np.empty((len(images), self.dim), dtype=np.float32)
        for start in range(0, len(images), batch_size):
            batch = images[start : start + batch_size]
            pixels = torch.stack([self.preprocess(image.convert("RGB")) for image in batch]).to(self.device)
            features = self.visual(pixels).float()
            out[start : start + len(batch)] = torch.nn.functional.normalize(features, dim=-1).cpu().numpy()
            if progress is not None:
                progress(Progress("embedding", start + len(batch), len(images)))
        return out


@contextmanager
def _quiet_logging() -> Iterator[None]:
    """open_clip logs through the root logger (e.g. "initialized randomly" before weights are loaded)."""
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        yield
    finally:
        logging.disable(previous)


def _demo_embedder(device: torch.device) -> Embedder:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(DEMO_SEED)
        model = open_clip.CLIP(**DEMO_CONFIG)
    size = DEMO_CONFIG["vision_cfg"]["image_size"]
    info = EmbedderInfo(DEMO_EMBEDDER, None, DEMO_CONFIG["embed_dim"], untrained=True, weights_file=None)
    return Embedder(model.visual, open_clip.image_transform(size, is_train=False), info, device)


class _ReaderFeatures(torch.nn.Module):
    """The attribute reader's identity features, as an image tower."""

    def __init__(self, reader: torch.nn.Module) -> None:
        super().__init__()
        self.reader = reader

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.reader.features(pixels)[0]


def _reader_embedder(weights: Path | str | None, device: torch.device) -> Embedder:
    from engine.microworld.reader import default_reader_path, load_reader, to_pixels

    path = Path(weights) if weights is not None else default_reader_path()
    reader = load_reader(path)
    info = EmbedderInfo(READER_EMBEDDER, None, reader.config.identity_dim, untrained=False, weights_file=path.name)
    return Embedder(_ReaderFeatures(reader), lambda image: to_pixels(image)[0], info, device)


def _tag_settings(name: str, tag: str | None) -> dict[str, Any]:
    if tag is None:
        return {}
    settings = open_clip.get_pretrained_cfg(name, tag)
    if not settings:
        known = ", ".join(open_clip.list_pretrained_tags_by_model(name)) or "none"
        raise EngineError(
            f"{name} has no release tagged {tag!r} (known tags: {known}); the tag only selects preprocessing "
            "and activation settings, pass none if the weights are your own"
        )
    return settings


def _image_tower_weights(path: Path) -> dict[str, torch.Tensor]:
    """The ``visual.*`` tensors of a CLIP checkpoint (safetensors, or a torch file read with weights_only)."""
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            checkpoint: Any = load_file(path)
        else:
            checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise EngineError(
            f"cannot read embedder weights {path} ({type(exc).__name__}: {str(exc)[:300]}); use a .safetensors "
            "file or a plain state-dict checkpoint (TorchScript archives are not read)"
        ) from None
    if isinstance(checkpoint, dict) and isinstance(checkpoint.get("state_dict"), dict):
        checkpoint = checkpoint["state_dict"]
    if not isinstance(checkpoint, dict):
        raise EngineError(f"{path} is not a state dict of tensors")
    prefixes = ("visual.", "module.visual.")
    state = {
        key.split("visual.", 1)[1]: value
        for key, value in checkpoint.items()
        if isinstance(key, str) and key.startswith(prefixes) and isinstance(value, torch.Tensor)
    }
    if not state:
        raise EngineError(f"{path} holds no image-tower weights (no 'visual.*' tensors); is it a CLIP checkpoint?")
    return state


def load_embedder(
    name: str = DEFAULT_EMBEDDER,
    weights: Path | str | None = None,
    tag: str | None = DEFAULT_TAG,
    device: str | torch.device = "cpu",
) -> Embedder:
    """The image tower of open_clip model ``name`` with weights read from the local file ``weights``.

    ``tag`` names the open_clip release the weights file comes from (e.g. ``openai``, ``laion2b_s32b_b82k``);
    it is looked up in open_clip's built-in table (never fetched) for QuickGELU and the image mean and std.
    ``name="demo"`` gives the untrained demo embedder and ignores ``weights`` and ``tag``;
    ``name="microworld-reader"`` the micro-world's attribute reader (``weights``, default the shipped one),
    ignoring ``tag``.
    """
    device = torch.device(device)
    if name == DEMO_EMBEDDER:
        return _demo_embedder(device)
    if name == READER_EMBEDDER:
        return _reader_embedder(weights, device)
    config = None if ":" in name else open_clip.get_model_config(name)  # a schema would mean a download
    if config is None:
        raise EngineError(
            f"unknown embedder {name!r}; use 'demo', '{READER_EMBEDDER}' or an open_clip model name such as "
            f"{DEFAULT_EMBEDDER} (see open_clip.list_models())"
        )
    if "hf_model_name" in config.get("text_cfg", {}):
        raise EngineError(f"{name} needs a text tower from the Hugging Face hub; Familiar does not fetch models")
    if weights is None:
        release = f" (open_clip release {tag!r})" if tag else ""
        raise EngineError(
            f"the {name} embedder needs its weights file{release}, e.g. open_clip_model.safetensors or a .pt "
            "checkpoint saved on a machine with network; pass it with --weights (nothing is downloaded), "
            "or use --embedder demo to try the commands with an untrained model"
        )
    path = Path(weights).expanduser().resolve()
    if not path.is_file():
        raise EngineError(f"embedder weights file {path} does not exist")
    settings = _tag_settings(name, tag)
    state = _image_tower_weights(path)
    with _quiet_logging():
        model = open_clip.create_model(
            name,
            pretrained=None,
            load_weights=False,
            pretrained_image=False,
            pretrained_text=False,
            force_quick_gelu=bool(settings.get("quick_gelu", False)),
        )
    try:
        model.visual.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise EngineError(f"{path} does not hold {name} image-tower weights: {str(exc)[:400]}") from None
    preprocess = open_clip.image_transform(
        model.visual.image_size,
        is_train=False,
        mean=settings.get("mean"),
        std=settings.get("std"),
        interpolation=settings.get("interpolation"),
        resize_mode=settings.get("resize_mode"),
    )
    info = EmbedderInfo(name, tag, int(config["embed_dim"]), untrained=False, weights_file=path.name)
    return Embedder(model.visual, preprocess, info, device)


def load_embedder_for(info: EmbedderInfo, weights: Path | str | None, device: str | torch.device = "cpu") -> Embedder:
    """The embedder that produced embeddings described by ``info`` (e.g. an index's), checked to match."""
    embedder = load_embedder(info.name, weights, info.tag, device)
    info.check_compatible(embedder.info)
    return embedder
