"""Peak memory of one concept-training micro-batch, predicted from the model's shape.

The model is frozen: only activations that the input gradients need are kept, roughly 8 x hidden + 3 x
intermediate elements per token and decoder layer (norm inputs, attention inputs and output, the MLP's gate, up
and activation). With gradient checkpointing only each layer's input is kept and one layer at a time is recomputed.
The loss holds full-vocabulary logits for at most `chunk` labelled positions: the base and slot-patched logits in
the model's dtype, a float32 copy, its log-softmax and that one's gradient. Attention is taken to be SDPA (no
sequence-squared scores); the concept's own rows and AdamW moments (a few MB) are left out.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers import ChameleonConfig

from engine.model.loading import weight_bytes

SAVED_PER_TOKEN_HIDDEN = 8
SAVED_PER_TOKEN_INTERMEDIATE = 3
LOGIT_FLOAT32_COPIES = 3


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
) -> TrainingMemory:
    """Peak bytes of a forward and backward pass over `batch` sequences of `length` tokens with `labelled`
    labelled positions in all, the loss taken `chunk` positions at a time (`engine.training.trainer`)."""
    element = torch.finfo(dtype).bits // 8
    tokens = batch * length
    hidden, intermediate = config.hidden_size, config.intermediate_size
    layer = tokens * (SAVED_PER_TOKEN_HIDDEN * hidden + SAVED_PER_TOKEN_INTERMEDIATE * intermediate) * element
    layers = config.num_hidden_layers
    kept = layers * tokens * hidden * element + layer if checkpointing else layers * layer
    gradients = tokens * 2 * (hidden + intermediate) * element  # one layer's input and MLP gradients in flight
    logits = min(labelled, chunk) * config.vocab_size * (2 * element + 4 * LOGIT_FLOAT32_COPIES)
    return TrainingMemory(
        weights=int(weight_bytes(config, dtype, quantize)), activations=kept + gradients, logits=logits
    )
