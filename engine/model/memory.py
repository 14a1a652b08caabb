"""How much memory a model needs, predicted from its config before anything is loaded: the one memory model that
`load_model`, the Settings view, `familiar train`, the app's training and the benchmarks use.

- **Weights**: decoder-layer Linear weights in 4-bit NF4 (~0.52 bytes a weight with double quantization) or the
  model's dtype, everything else in the dtype, except the VQ image tokenizer (encoder and decoder), which always
  runs in float32.
- **Inference** (chat and drawing): a KV cache of `CONTEXT_TOKENS` tokens, or of two streams of one picture's
  length where drawing uses classifier-free guidance (both streams run as one batch of 2), whichever is larger.
- **Training** (`training_memory`): the model is frozen, so only activations that the input gradients need are
  kept, roughly 8 x hidden + 3 x intermediate elements per token and decoder layer (norm inputs, attention inputs
  and output, the MLP's gate, up and activation). With gradient checkpointing only each layer's input is kept and
  one layer at a time is recomputed. On CUDA training checkpoints only where no micro-batch fits without it
  (`training_shape`). The loss holds logits for at most `chunk` labelled positions at a time:
  image targets over the image-token rows only, other targets over the full vocabulary
  (`engine.training.trainer`); per row, the logits in the model's dtype (twice where concept rows are patched in),
  a float32 copy, its log-softmax and that one's gradient. Attention is taken to be SDPA (no sequence-squared
  scores); the concept's own rows and AdamW moments (a few MB) are left out.
- Everything is multiplied by `SLACK` for the allocator's fragmentation and the CUDA context.
"""

from __future__ import annotations

from dataclasses import dataclass

import psutil
import torch
from transformers import ChameleonConfig, ChameleonVQVAEConfig

from engine.model.folder_checks import one_layer_model

SAVED_PER_TOKEN_HIDDEN = 8
SAVED_PER_TOKEN_INTERMEDIATE = 3
LOGIT_FLOAT32_COPIES = 3
NF4_BYTES_PER_WEIGHT = 0.52
CONTEXT_TOKENS = 4096
PROMPT_TOKENS = 64
"""Tokens besides the picture in a drawing or an image training sample: the concept's soft prompt, the request,
the turn markers."""
TEXT_TARGETS_PER_IMAGE_SAMPLE = 3
"""Labelled positions of an image sample that are not image tokens: begin-image, end-image, end of turn."""
LOSS_CHUNK_ROWS = 256
"""Labelled positions whose logits exist at a time in the training loss (`engine.training.trainer`)."""
SLACK = 1.15


def can_checkpoint(device: torch.device) -> bool:
    """Whether training on `device` recomputes activations when memory is short: on CUDA, where memory is scarce.
    On the CPU memory is plentiful and recomputing would only cost time."""
    return device.type == "cuda"


def parameter_counts(config: ChameleonConfig) -> tuple[int, int]:
    """(parameters in quantizable decoder-layer Linear weights, all other parameters): one decoder layer and
    the rest are counted on the meta device and the layer is multiplied out, so the cost does not grow with
    the number of layers."""
    model = one_layer_model(config)
    layer = model.model.layers[0]
    quantizable = sum(m.weight.numel() for m in layer.modules() if isinstance(m, torch.nn.Linear))
    in_layer = sum(p.numel() for p in layer.parameters())
    rest = sum(p.numel() for p in model.parameters()) - in_layer
    layers = config.num_hidden_layers
    return layers * quantizable, rest + layers * (in_layer - quantizable)


def vq_parameters(config: ChameleonConfig) -> tuple[int, int]:
    """(parameters of the VQ encoder inside the model, of the separately loaded VQGAN decoder)."""
    from engine.model.vqgan import VQGANDecoder

    with torch.device("meta"):
        decoder = VQGANDecoder(_vq_config(config))
    encoder = one_layer_model(config).model.vqmodel
    return sum(p.numel() for p in encoder.parameters()), sum(p.numel() for p in decoder.parameters())


def weight_bytes(config: ChameleonConfig, dtype: torch.dtype, quantize: bool) -> float:
    """Bytes of the model's weights: `dtype` throughout, except 4-bit NF4 decoder-layer Linear weights when
    `quantize`, and the VQ encoder and decoder in float32."""
    quantizable, other = parameter_counts(config)
    element = _element(dtype)
    encoder, decoder = vq_parameters(config)  # `other` includes the encoder
    return (
        quantizable * (NF4_BYTES_PER_WEIGHT if quantize else element)
        + (other - encoder) * element
        + (encoder + decoder) * 4
    )


def tokens_per_image(config: ChameleonConfig) -> int:
    """Image tokens in one picture: the VQ latent grid (resolution halved once per level after the first)."""
    vq = _vq_config(config)
    side = vq.resolution // 2 ** (len(vq.channel_multiplier) - 1)
    return side * side


def kv_cache_bytes(config: ChameleonConfig, dtype: torch.dtype, tokens: int) -> int:
    """Keys and values of every decoder layer for `tokens` tokens (summed over streams)."""
    heads = config.num_key_value_heads or config.num_attention_heads
    head_dim = config.hidden_size // config.num_attention_heads
    return 2 * config.num_hidden_layers * tokens * heads * head_dim * _element(dtype)


def inference_bytes(config: ChameleonConfig, dtype: torch.dtype) -> dict[str, int]:
    """What chat and drawing allocate beside the weights: the larger of a full context's KV cache and a guided
    picture's (two streams), and one step's logits."""
    guided_picture = 2 * (PROMPT_TOKENS + tokens_per_image(config) + 2)
    return {
        "KV cache": kv_cache_bytes(config, dtype, max(CONTEXT_TOKENS, guided_picture)),
        "logits": 2 * config.vocab_size * 4,
    }


@dataclass(frozen=True)
class TrainingShape:
    """One training micro-batch: `micro_batch` image samples (the longest kind) of a picture and a prompt."""

    micro_batch: int
    checkpointing: bool
    chunk: int = LOSS_CHUNK_ROWS

    def length(self, config: ChameleonConfig) -> int:
        return PROMPT_TOKENS + tokens_per_image(config) + TEXT_TARGETS_PER_IMAGE_SAMPLE

    def labelled(self, config: ChameleonConfig) -> tuple[int, int]:
        """(image-token targets, other targets) in the micro-batch."""
        return self.micro_batch * tokens_per_image(config), self.micro_batch * TEXT_TARGETS_PER_IMAGE_SAMPLE


@dataclass(frozen=True)
class TrainingMemory:
    """Predicted bytes of one training micro-batch: the weights, plus what the step itself allocates."""

    weights: int
    activations: int
    logits: int

    @property
    def step(self) -> int:
        """Bytes the forward and backward pass allocate on top of the weights."""
        return self.activations + self.logits

    @property
    def peak(self) -> int:
        return self.weights + self.step


def training_memory(
    config: ChameleonConfig,
    dtype: torch.dtype,
    quantize: bool,
    *,
    batch: int,
    length: int,
    labelled: int,
    chunk: int,
    checkpointing: bool,
    image_labelled: int = 0,
    image_rows: int = 0,
) -> TrainingMemory:
    """Peak bytes of a forward and backward pass over `batch` sequences of `length` tokens with `labelled` labelled
    positions over the full vocabulary and `image_labelled` more over `image_rows` image-token rows, the loss taken
    `chunk` positions at a time (`engine.training.trainer`)."""
    element = _element(dtype)
    tokens = batch * length
    hidden, intermediate = config.hidden_size, config.intermediate_size
    layer = tokens * (SAVED_PER_TOKEN_HIDDEN * hidden + SAVED_PER_TOKEN_INTERMEDIATE * intermediate) * element
    layers = config.num_hidden_layers
    kept = layers * tokens * hidden * element + layer if checkpointing else layers * layer
    gradients = tokens * 2 * (hidden + intermediate) * element  # one layer's input and MLP gradients in flight
    per_logit = 4 * LOGIT_FLOAT32_COPIES
    full = min(labelled, chunk) * config.vocab_size * (2 * element + per_logit)
    image = min(image_labelled, chunk) * image_rows * (element + per_logit)
    return TrainingMemory(
        weights=int(weight_bytes(config, dtype, quantize)), activations=kept + gradients, logits=max(full, image)
    )


def training_step(config: ChameleonConfig, dtype: torch.dtype, quantize: bool, shape: TrainingShape) -> TrainingMemory:
    """`training_memory` for a micro-batch of full-length image samples of `shape`."""
    image, text = shape.labelled(config)
    return training_memory(
        config,
        dtype,
        quantize,
        batch=shape.micro_batch,
        length=shape.length(config),
        labelled=text,
        image_labelled=image,
        image_rows=image_vocabulary(config),
        chunk=shape.chunk,
        checkpointing=shape.checkpointing,
    )


def image_vocabulary(config: ChameleonConfig) -> int:
    """Image tokens in the vocabulary (one per codebook entry)."""
    return _vq_config(config).num_embeddings


@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes a job needs on `device` (with `parts` saying what for) versus bytes free there."""

    needed: int
    available: int
    device: str
    parts: tuple[tuple[str, int], ...] = ()

    @property
    def fits(self) -> bool:
        return self.needed <= self.available

    def describe(self) -> str:
        parts = ", ".join(f"{what} {_gib(amount)}" for what, amount in self.parts if amount >= 2**20)
        detail = f" ({parts}, with {round((SLACK - 1) * 100)}% slack)" if parts else ""
        return f"needs about {_gib(self.needed)}{detail}, {_gib(self.available)} free on {self.device}"


def free_bytes(device: torch.device) -> int:
    """Memory free on `device` now: the GPU's free memory (with what torch's allocator holds unused), or the
    machine's available RAM."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free) + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
    return int(psutil.virtual_memory().available)


def estimate_memory(
    config: ChameleonConfig,
    device: torch.device,
    dtype: torch.dtype,
    quantize: bool,
    training: TrainingShape | None = None,
) -> MemoryEstimate:
    """What loading the model needs for chat and (guided) drawing, and for training a concept at `training`."""
    parts = [("weights", int(weight_bytes(config, dtype, quantize)))]
    work = inference_bytes(config, dtype)
    if training is not None:
        step = training_step(config, dtype, quantize, training)
        if step.step > sum(work.values()):
            work = {"training activations": step.activations, "training logits": step.logits}
    parts += list(work.items())
    needed = int(sum(amount for _, amount in parts) * SLACK)
    return MemoryEstimate(needed=needed, available=free_bytes(device), device=str(device), parts=tuple(parts))


def training_estimate(
    config: ChameleonConfig, device: torch.device, dtype: torch.dtype, quantize: bool, shape: TrainingShape
) -> MemoryEstimate:
    """What training needs on top of a model already loaded on `device`, against what is free there now."""
    step = training_step(config, dtype, quantize, shape)
    parts = (("training activations", step.activations), ("training logits", step.logits))
    return MemoryEstimate(needed=int(step.step * SLACK), available=free_bytes(device), device=str(device), parts=parts)


def training_shape(
    config: ChameleonConfig,
    dtype: torch.dtype,
    quantize: bool,
    *,
    batch_size: int,
    micro_batch: int,
    available: int | None,
) -> TrainingShape:
    """How a training step runs. With `available` None (the CPU: `can_checkpoint`) as asked, without gradient
    checkpointing. Otherwise the largest micro-batch up to `micro_batch` that divides `batch_size` and whose step
    fits in `available` bytes without checkpointing (with `SLACK`): recomputing the forward pass makes a token cost
    6N FLOP instead of 4N (docs/training.md, "Cost"), while a smaller micro-batch only splits the same batch. Where
    none fits, `micro_batch` with checkpointing."""
    if available is None:
        return TrainingShape(micro_batch, checkpointing=False)
    for size in range(micro_batch, 0, -1):
        shape = TrainingShape(size, checkpointing=False)
        if batch_size % size == 0 and training_step(config, dtype, quantize, shape).step * SLACK <= available:
            return shape
    return TrainingShape(micro_batch, checkpointing=True)


def _vq_config(config: ChameleonConfig) -> ChameleonVQVAEConfig:
    vq = config.vq_config
    return vq if isinstance(vq, ChameleonVQVAEConfig) else ChameleonVQVAEConfig(**(vq or {}))


def _element(dtype: torch.dtype) -> int:
    return torch.finfo(dtype).bits // 8


def _gib(count: int) -> str:
    return f"{count / 2**30:.1f} GiB" if count >= 2**30 else f"{count / 2**20:.0f} MiB"
