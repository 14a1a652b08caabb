"""The micro-world's attribute reader: a small CNN that reads a scene's attributes from its pixels.

It is this world's stand-in for CLIP and DINO: `read` says what a (generated) picture shows, `probabilities`
gives each attribute's distribution, and `embed` gives an L2-normalised feature vector for image-to-image
similarity (CLIP-I / DINO-style scores) and for ranking a retrieval pool.

Input: PIL images of any size, converted to RGB and resized to 32x32 with bilinear resampling (only when not
already 32x32), as pixel values in [0, 1]. Architecture (about 100k parameters, see docs/microworld.md):

    conv3x3(3->16) conv3x3(16->32) pool  conv3x3(32->48) pool  conv3x3(48->64) pool  conv1x1(64->32)
    (each conv with batch norm and ReLU) -> flatten 32x4x4 = 512 features, which keep *where* things are
      -> Linear(512->64) ReLU = identity features -> one head per identity attribute (shape ... accessory_colour)
      -> Linear(512->32) ReLU = pose features     -> one head per pose attribute (size, position, background)

`embed` returns the identity features: they are trained only to tell *which creature* it is, so two pictures
of the same creature in different poses are close and a creature with one attribute changed is further away.

`train_reader` trains on freshly rendered scenes from `sample_scene` with light augmentation (Gaussian blur,
small colour gains, pixel noise), since generated images come through a VQ decoder and are a little blurry.
A reader is saved as one safetensors file whose metadata holds its config; loading checks it (never pickle).
"""

from __future__ import annotations

import json
import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from safetensors.torch import save as save_bytes
from torch import nn

from engine.atomic_write import write_atomic
from engine.errors import EngineError
from engine.microworld.world import ATTRIBUTE_VALUES, IDENTITY, POSE, SIZE, Scene, render, sample_scene
from engine.progress import Progress, ProgressCallback
from engine.safetensors_file import read_checked

FORMAT = "familiar.microworld-reader/1"
RESAMPLE = Image.Resampling.BILINEAR
MAX_READER_BYTES = 64 * 2**20
CHUNK = 512

Images = Image.Image | Sequence[Image.Image]


class ReaderError(EngineError):
    """A reader file is missing, malformed, or was trained for a different world."""


def reader_values() -> dict[str, tuple[str, ...]]:
    """The labels of each head: the world's attribute values, with "none" for a missing accessory's colour."""
    values = {name: tuple(options) for name, options in ATTRIBUTE_VALUES.items()}
    if "none" not in values["accessory_colour"]:
        values["accessory_colour"] = (*values["accessory_colour"], "none")
    return values


def default_reader_path() -> Path:
    """The reader shipped in `resources/` (trained by scripts/train_reader.py)."""
    from engine.model.loading import resources_dir  # lazy: it imports transformers

    return resources_dir() / "microworld-reader.safetensors"


@dataclass(frozen=True)
class ReaderConfig:
    """The reader's shape and the labels of its heads (attribute -> values, in head order)."""

    channels: tuple[int, int, int, int] = (16, 32, 48, 64)
    reduced: int = 32
    identity_dim: int = 64
    pose_dim: int = 32
    values: dict[str, tuple[str, ...]] = field(default_factory=reader_values)

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> ReaderConfig:
        """Parse and check a config; raises ReaderError with what is wrong."""
        try:
            raw = json.loads(text)
            config = cls(
                channels=tuple(int(c) for c in raw["channels"]),
                reduced=int(raw["reduced"]),
                identity_dim=int(raw["identity_dim"]),
                pose_dim=int(raw["pose_dim"]),
                values={str(k): tuple(str(v) for v in vs) for k, vs in raw["values"].items()},
            )
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            raise ReaderError(f"reader config is malformed ({type(exc).__name__}: {exc})") from None
        if len(config.channels) != 4 or min(*config.channels, config.reduced, config.identity_dim, config.pose_dim) < 1:
            raise ReaderError(f"reader config has invalid sizes: {text[:200]}")
        return config


def to_pixels(images: Images) -> torch.Tensor:
    """PIL images as a float tensor [B, 3, 32, 32] in [0, 1] (RGB; resized bilinearly when not 32x32)."""
    if isinstance(images, Image.Image):
        images = [images]
    arrays = []
    for image in images:
        image = image.convert("RGB")
        if image.size != (SIZE, SIZE):
            image = image.resize((SIZE, SIZE), RESAMPLE)
        arrays.append(np.asarray(image, dtype=np.uint8))
    if not arrays:
        return torch.zeros((0, 3, SIZE, SIZE))
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).float().div_(255.0)


def _conv(cin: int, cout: int, kernel: int = 3) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, kernel, padding=kernel // 2, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)
    )


class AttributeReader(nn.Module):
    """Reads a micro-world scene's attributes from pixels; one classification head per attribute."""

    def __init__(self, config: ReaderConfig | None = None) -> None:
        super().__init__()
        self.config = config = config or ReaderConfig()
        c1, c2, c3, c4 = config.channels
        self.trunk = nn.Sequential(
            _conv(3, c1),
            _conv(c1, c2),
            nn.MaxPool2d(2),
            _conv(c2, c3),
            nn.MaxPool2d(2),
            _conv(c3, c4),
            nn.MaxPool2d(2),
            _conv(c4, config.reduced, kernel=1),
            nn.Flatten(),
        )
        flat = config.reduced * (SIZE // 8) ** 2
        self.identity = nn.Sequential(nn.Linear(flat, config.identity_dim), nn.ReLU(inplace=True))
        self.pose = nn.Sequential(nn.Linear(flat, config.pose_dim), nn.ReLU(inplace=True))
        self.heads = nn.ModuleDict(
            {
                name: nn.Linear(config.identity_dim if name in IDENTITY else config.pose_dim, len(values))
                for name, values in config.values.items()
            }
        )
        self.eval()

    def features(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(identity features [B, identity_dim], pose features [B, pose_dim]) of pixels [B, 3, 32, 32] in [0, 1]."""
        shared = self.trunk(pixels - 0.5)
        return self.identity(shared), self.pose(shared)

    def forward(self, pixels: torch.Tensor) -> dict[str, torch.Tensor]:
        """Logits per attribute, each [B, number of values], for pixels [B, 3, 32, 32] in [0, 1]."""
        identity, pose = self.features(pixels)
        return {name: head(identity if name in IDENTITY else pose) for name, head in self.heads.items()}

    @torch.no_grad()
    def _run(self, images: Images, fn: Callable[[torch.Tensor], torch.Tensor | dict[str, torch.Tensor]]) -> list:
        was_training = self.training
        self.eval()
        try:
            pixels = to_pixels(images)
            return [fn(pixels[i : i + CHUNK]) for i in range(0, max(len(pixels), 1), CHUNK)]
        finally:
            self.train(was_training)

    def probabilities(self, images: Images) -> dict[str, torch.Tensor]:
        """Per attribute, the probability of each value (in `config.values` order): tensors [B, n_values]."""
        chunks = self._run(images, self.forward)
        return {name: torch.cat([c[name] for c in chunks]).softmax(dim=-1) for name in self.config.values}

    def read(self, images: Images) -> list[dict[str, str]]:
        """The most likely value of every attribute, one dict per image."""
        probs = self.probabilities(images)
        best = {name: p.argmax(dim=-1).tolist() for name, p in probs.items()}
        count = len(next(iter(best.values()))) if best else 0
        return [{name: self.config.values[name][best[name][i]] for name in best} for i in range(count)]

    def embed(self, images: Images) -> np.ndarray:
        """L2-normalised identity features [B, identity_dim] (float32): cosine similarity says how alike two
        creatures look, largely regardless of pose."""
        chunks = self._run(images, lambda pixels: self.features(pixels)[0])
        return F.normalize(torch.cat(chunks), dim=-1, eps=1e-8).numpy().astype(np.float32)

    def save(self, path: Path | str, extra: dict[str, str] | None = None) -> None:
        """Write the weights and config as one safetensors file, atomically; `extra` adds metadata strings."""
        tensors = {name: value.detach().cpu().contiguous() for name, value in self.state_dict().items()}
        metadata = {**(extra or {}), "format": FORMAT, "config": self.config.to_json()}
        write_atomic(Path(path), save_bytes(tensors, metadata=metadata))

    def parameter_count(self) -> int:
        return sum(p.numel() for p in self.parameters())


def load_reader(path: Path | str | None = None) -> AttributeReader:
    """A reader from a safetensors file (default: the shipped one), checked against the current world."""
    path = Path(path) if path is not None else default_reader_path()
    tensors, metadata = read_checked(
        path, FORMAT, MAX_READER_BYTES, "attribute reader", "a micro-world reader file", ReaderError
    )
    config = ReaderConfig.from_json(metadata.get("config", ""))
    world = reader_values()
    if {k: set(v) for k, v in config.values.items()} != {k: set(v) for k, v in world.items()}:
        raise ReaderError(
            f"{path} was trained for a different micro-world (its attribute values differ from the world's); "
            "retrain it with scripts/train_reader.py"
        )
    reader = AttributeReader(config)
    try:
        reader.load_state_dict(tensors, strict=True)
    except RuntimeError as exc:
        first = " ".join(str(exc).strip().splitlines()[:2])
        raise ReaderError(f"{path} does not match its own config: {first}") from None
    if not all(torch.isfinite(value).all() for value in tensors.values() if value.is_floating_point()):
        raise ReaderError(f"{path} contains NaN or infinite values")
    return reader.eval()


def _gaussian_kernels(sigmas: torch.Tensor, radius: int = 2) -> torch.Tensor:
    """Normalised 1-D Gaussian kernels [B, 2 * radius + 1]; sigma 0 gives the identity kernel."""
    taps = torch.arange(-radius, radius + 1, dtype=torch.float32)
    kernels = torch.exp(-(taps[None] ** 2) / (2 * sigmas.clamp(min=1e-3)[:, None] ** 2))
    return kernels / kernels.sum(dim=1, keepdim=True)


def augment(pixels: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Light, generated-image-like corruption of a batch in [0, 1]: for half the images a Gaussian blur
    (sigma 0.3-1.0 px); for a quarter a bilinear round trip through a smaller size (16-24 px, one size per
    batch), the softness of a VQ decoder; for half small brightness and per-channel gains (+-6%, +-4%); and
    pixel noise (std 0-0.03) for all."""
    b = pixels.shape[0]

    def uniform(*shape: int, low: float, high: float) -> torch.Tensor:
        return low + (high - low) * torch.rand(shape, generator=generator)

    sigmas = torch.where(torch.rand(b, generator=generator) < 0.5, uniform(b, low=0.3, high=1.0), torch.zeros(b))
    kernels = _gaussian_kernels(sigmas).repeat_interleave(3, dim=0)  # [B*3, 5]
    x = pixels.reshape(1, b * 3, SIZE, SIZE)
    x = F.conv2d(F.pad(x, (2, 2, 0, 0), mode="replicate"), kernels[:, None, None, :], groups=b * 3)
    x = F.conv2d(F.pad(x, (0, 0, 2, 2), mode="replicate"), kernels[:, None, :, None], groups=b * 3)
    x = x.reshape(b, 3, SIZE, SIZE)
    resampled = torch.rand(b, generator=generator) < 0.25
    if resampled.any():
        side = int(torch.randint(16, 25, (1,), generator=generator))
        small = F.interpolate(x[resampled], size=(side, side), mode="bilinear", antialias=True, align_corners=False)
        x[resampled] = F.interpolate(small, size=(SIZE, SIZE), mode="bilinear", align_corners=False)
    jitter = torch.rand(b, 1, 1, 1, generator=generator) < 0.5
    gains = uniform(b, 1, 1, 1, low=0.94, high=1.06) * uniform(b, 3, 1, 1, low=0.96, high=1.04)
    x = torch.where(jitter, x * gains, x)
    x = x + uniform(b, 1, 1, 1, low=0.0, high=0.03) * torch.randn(x.shape, generator=generator)
    return x.clamp_(0.0, 1.0)


def _labels(scenes: Sequence[Scene], values: dict[str, tuple[str, ...]]) -> dict[str, torch.Tensor]:
    index = {name: {v: i for i, v in enumerate(options)} for name, options in values.items()}
    attrs = [scene.attributes() for scene in scenes]
    return {name: torch.tensor([index[name][a[name]] for a in attrs]) for name in values}


def scene_pixels(scenes: Sequence[Scene]) -> torch.Tensor:
    """Rendered scenes as [B, 3, 32, 32] in [0, 1]."""
    return to_pixels([render(scene) for scene in scenes])


def train_reader(
    seed: int = 0,
    steps: int = 3000,
    batch: int = 64,
    lr: float = 3e-3,
    weight_decay: float = 1e-4,
    augmentation: bool = True,
    config: ReaderConfig | None = None,
    progress: ProgressCallback | None = None,
    log_every: int = 250,
) -> tuple[AttributeReader, dict]:
    """Train a reader on `steps` batches of freshly sampled scenes (AdamW, cross-entropy summed over heads,
    linear warm-up then cosine decay). Returns the reader (in eval mode) and a report: settings, parameter
    count, seconds, and the mean loss every `log_every` steps. Uses torch's current thread count."""
    torch.manual_seed(seed)
    rng = random.Random(seed)
    generator = torch.Generator().manual_seed(seed)
    reader = AttributeReader(config)
    reader.train()
    optimizer = torch.optim.AdamW(reader.parameters(), lr=lr, weight_decay=weight_decay)
    warmup = max(1, steps // 20)

    def schedule(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, steps - warmup)))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    values = reader.config.values
    losses: list[dict[str, float]] = []
    running = 0.0
    start = time.perf_counter()
    for step in range(steps):
        scenes = [sample_scene(rng) for _ in range(batch)]
        pixels = scene_pixels(scenes)
        if augmentation:
            pixels = augment(pixels, generator)
        targets = _labels(scenes, values)
        logits = reader(pixels)
        loss = sum(F.cross_entropy(logits[name], targets[name]) for name in values)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        running += float(loss.detach())
        if (step + 1) % log_every == 0 or step + 1 == steps:
            count = (step % log_every) + 1
            losses.append({"step": step + 1, "loss": round(running / count, 4)})
            running = 0.0
            if progress:
                progress(Progress("training", step + 1, steps, losses[-1]["loss"]))
    reader.eval()
    report = {
        "seed": seed,
        "steps": steps,
        "batch": batch,
        "lr": lr,
        "weight_decay": weight_decay,
        "augmentation": augmentation,
        "parameters": reader.parameter_count(),
        "train_seconds": round(time.perf_counter() - start, 1),
        "torch_threads": torch.get_num_threads(),
        "losses": losses,
    }
    return reader, report


def held_out_scenes(count: int, seed: int = 12345) -> list[Scene]:
    """`count` scenes from their own seed (training uses seed 0 by default)."""
    rng = random.Random(seed)
    return [sample_scene(rng) for _ in range(count)]


def accuracy(
    reader: AttributeReader, scenes: Sequence[Scene], transform: Callable[[Image.Image], Image.Image] | None = None
) -> dict[str, float]:
    """Fraction of `scenes` whose attribute the reader reads right, per attribute, plus "mean" (over
    attributes), "identity_mean" (over identity attributes), "identity_exact" (all identity attributes right)
    and "exact" (everything right). `transform` corrupts each rendered image first (e.g. a blur)."""
    images = [render(scene) for scene in scenes]
    if transform is not None:
        images = [transform(image) for image in images]
    reads = reader.read(images)
    truth = [scene.attributes() for scene in scenes]
    right = {name: np.array([r[name] == t[name] for r, t in zip(reads, truth, strict=True)]) for name in reader.heads}
    out = {name: float(hits.mean()) for name, hits in right.items()}
    out["mean"] = float(np.mean([out[name] for name in right]))
    out["identity_mean"] = float(np.mean([out[name] for name in IDENTITY]))
    out["identity_exact"] = float(np.all([right[name] for name in IDENTITY], axis=0).mean())
    out["exact"] = float(np.all([right[name] for name in (*IDENTITY, *POSE)], axis=0).mean())
    return out
