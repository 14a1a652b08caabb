"""The image and text encoders behind CLIP-I, CLIP-T and DINO, read from local folders only.

- CLIP: a folder in open_clip's hub layout (`open_clip_config.json` with `model_cfg` and optional
  `preprocess_cfg`, plus `open_clip_model.safetensors` or `open_clip_pytorch_model.bin`), e.g. a snapshot of
  `laion/CLIP-ViT-L-14-laion2B-s32B-b82K`. Both towers are kept (the retrieval embedder keeps only the image
  one). Text goes through open_clip's own BPE tokenizer, so the text vocabulary must be its 49,408 tokens.
- DINO: a transformers ViT folder (`config.json`, `model_type: vit`), e.g. `facebook/dino-vits16`; the
  feature is the last layer's CLS token, after DreamBooth's preprocessing: shorter side resized to 256
  (bicubic), centre crop 224, ImageNet mean and std.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import open_clip
import torch
from PIL import Image

from engine.errors import EngineError, ModelNotFoundError

CLIP_CONFIG = "open_clip_config.json"
CLIP_WEIGHTS = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")
CLIP_VOCAB = 49408
DINO_RESIZE = 256
DINO_CROP = 224
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
BATCH = 16


def _folder(path: Path | str, what: str, needs: str) -> Path:
    folder = Path(path).expanduser()
    if not folder.is_dir():
        raise ModelNotFoundError(f"{what} model folder {folder} does not exist; it needs {needs}")
    return folder


def _read_state(path: Path) -> dict[str, torch.Tensor]:
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(path)
    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise EngineError(f"{path} is not a state dict of tensors")
    return state


class ClipModel:
    """Both open_clip towers; `embed_images` and `embed_texts` give L2-normalised float32 rows."""

    def __init__(self, model: open_clip.CLIP, preprocess: Any, tokenizer: Any, device: torch.device) -> None:
        self.model = model.eval().to(device)
        self.preprocess = preprocess
        self.tokenizer = tokenizer
        self.device = device

    @torch.no_grad()
    def embed_images(self, images: Sequence[Image.Image]) -> np.ndarray:
        rows = []
        for start in range(0, len(images), BATCH):
            batch = [self.preprocess(image.convert("RGB")) for image in images[start : start + BATCH]]
            rows.append(self.model.encode_image(torch.stack(batch).to(self.device), normalize=True).float().cpu())
        return torch.cat(rows).numpy()

    @torch.no_grad()
    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        tokens = self.tokenizer(list(texts)).to(self.device)
        return self.model.encode_text(tokens, normalize=True).float().cpu().numpy()


def load_clip(path: Path | str, device: str | torch.device = "cpu") -> ClipModel:
    """The open_clip model in `path` (see the module docstring for the layout)."""
    needs = f"{CLIP_CONFIG} and {' or '.join(CLIP_WEIGHTS)} (open_clip's hub layout)"
    folder = _folder(path, "CLIP", needs)
    weights = next((folder / name for name in CLIP_WEIGHTS if (folder / name).is_file()), None)
    if not (folder / CLIP_CONFIG).is_file() or weights is None:
        raise ModelNotFoundError(f"CLIP model folder {folder} is incomplete: it needs {needs}")
    config = json.loads((folder / CLIP_CONFIG).read_text())
    model_cfg = config.get("model_cfg")
    if not isinstance(model_cfg, dict) or "vision_cfg" not in model_cfg or "text_cfg" not in model_cfg:
        raise EngineError(f"{folder / CLIP_CONFIG} has no model_cfg with vision_cfg and text_cfg")
    text_cfg = model_cfg["text_cfg"]
    if "hf_model_name" in text_cfg or text_cfg.get("vocab_size", CLIP_VOCAB) != CLIP_VOCAB:
        raise EngineError(f"{folder}: only CLIP text towers with open_clip's own {CLIP_VOCAB}-token BPE are supported")
    model = open_clip.CLIP(**model_cfg)
    try:
        model.load_state_dict(_read_state(weights), strict=True)
    except RuntimeError as exc:
        raise EngineError(f"{weights} does not match {folder / CLIP_CONFIG}: {str(exc)[:400]}") from None
    pre = config.get("preprocess_cfg", {})
    preprocess = open_clip.image_transform(
        model.visual.image_size,
        is_train=False,
        mean=pre.get("mean"),
        std=pre.get("std"),
        interpolation=pre.get("interpolation"),
        resize_mode=pre.get("resize_mode"),
    )
    tokenizer = open_clip.SimpleTokenizer(context_length=text_cfg.get("context_length", 77))
    return ClipModel(model, preprocess, tokenizer, torch.device(device))


def dino_pixels(image: Image.Image) -> torch.Tensor:
    """DreamBooth's DINO preprocessing: resize (shorter side 256, bicubic), centre crop 224, normalise."""
    image = image.convert("RGB")
    scale = DINO_RESIZE / min(image.size)
    width, height = max(DINO_CROP, round(image.width * scale)), max(DINO_CROP, round(image.height * scale))
    image = image.resize((width, height), Image.Resampling.BICUBIC)
    left, top = (width - DINO_CROP) // 2, (height - DINO_CROP) // 2
    image = image.crop((left, top, left + DINO_CROP, top + DINO_CROP))
    pixels = torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0).permute(2, 0, 1)
    return (pixels - torch.tensor(IMAGENET_MEAN)[:, None, None]) / torch.tensor(IMAGENET_STD)[:, None, None]


class DinoModel:
    """A DINO ViT; `embed_images` gives the CLS features (unnormalised float32 rows)."""

    def __init__(self, model: torch.nn.Module, device: torch.device) -> None:
        self.model = model.eval().to(device)
        self.device = device

    @torch.no_grad()
    def embed_images(self, images: Sequence[Image.Image]) -> np.ndarray:
        rows = []
        for start in range(0, len(images), BATCH):
            pixels = torch.stack([dino_pixels(image) for image in images[start : start + BATCH]]).to(self.device)
            rows.append(self.model(pixel_values=pixels).last_hidden_state[:, 0].float().cpu())
        return torch.cat(rows).numpy()


def load_dinov1(path: Path | str, device: str | torch.device = "cpu") -> DinoModel:
    """The transformers ViT of DINO (v1, as in the DINO score) in `path`; its input size must be 224."""
    from transformers import ViTConfig, ViTModel

    needs = "config.json and model.safetensors of a DINO ViT (e.g. facebook/dino-vits16)"
    folder = _folder(path, "DINO", needs)
    if not (folder / "config.json").is_file():
        raise ModelNotFoundError(f"DINO model folder {folder} is incomplete: it needs {needs}")
    config = json.loads((folder / "config.json").read_text())
    if config.get("model_type") != "vit":
        raise EngineError(
            f"{folder} holds a {config.get('model_type')!r} model; the DINO score needs a ViT (model_type vit)"
        )
    if config.get("image_size", DINO_CROP) != DINO_CROP:
        raise EngineError(
            f"{folder}: the DINO score crops images to {DINO_CROP}, the model expects {config['image_size']}"
        )
    try:
        model = ViTModel.from_pretrained(
            folder, config=ViTConfig.from_pretrained(folder), add_pooling_layer=False, local_files_only=True
        )
    except OSError as exc:
        raise ModelNotFoundError(f"cannot load the DINO model from {folder}: {str(exc)[:300]}") from None
    return DinoModel(model, torch.device(device))
