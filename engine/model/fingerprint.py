"""A stable fingerprint of a base model, so a concept's learned state only loads into the model it was
trained for.

It hashes the architecture's shape and sampled rows of the input embedding and output head (both stay
unquantized), rounded to bfloat16 so that the same checkpoint gives the same fingerprint whether it is
loaded in float32, bfloat16 or 4-bit, on any device.
"""

from __future__ import annotations

import hashlib
import json

import torch
from transformers import ChameleonForConditionalGeneration

SAMPLED_ROWS = 256


def _row_bytes(weight: torch.Tensor, rows: torch.Tensor) -> bytes:
    sample = weight.detach()[rows.to(weight.device)].to("cpu", torch.bfloat16).contiguous()
    return sample.view(torch.int16).numpy().tobytes()


def model_fingerprint(model: ChameleonForConditionalGeneration) -> str:
    """Hex sha256 of the architecture and sampled embedding and head rows of the base model."""
    config = model.config
    shape = {
        "model_type": config.model_type,
        "vocab_size": config.vocab_size,
        "hidden_size": config.hidden_size,
        "intermediate_size": config.intermediate_size,
        "num_hidden_layers": config.num_hidden_layers,
        "num_attention_heads": config.num_attention_heads,
        "codebook": config.vq_config.num_embeddings,
    }
    digest = hashlib.sha256(json.dumps(shape, sort_keys=True).encode())
    rows = torch.linspace(0, config.vocab_size - 1, SAMPLED_ROWS).round().long()
    base_embedding = model.get_input_embeddings()
    digest.update(_row_bytes(getattr(base_embedding, "base", base_embedding).weight, rows))
    base_head = model.get_output_embeddings()
    digest.update(_row_bytes(getattr(base_head, "base", base_head).weight, rows))
    return digest.hexdigest()
