"""Sampling loops: streamed text, and exactly one image's worth of image tokens.

Image generation allows, after the begin-of-image token, only image tokens for exactly
`tokens_per_image` steps; each step samples from the model's own distribution restricted to the image
rows of the vocabulary (with temperature, top-k and optional classifier-free guidance). The caller then
closes the image with end-of-image.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import torch
from transformers import DynamicCache

from engine.model.chameleon import FamiliarChameleon
from engine.progress import Progress, ProgressCallback

Cancelled = Callable[[], bool]


@dataclass(frozen=True)
class Sampling:
    """Sampling settings; `temperature=0` is greedy."""

    temperature: float = 1.0
    top_k: int | None = None
    top_p: float | None = None
    seed: int | None = None


class GenerationCancelled(Exception):
    """Raised inside a sampling loop when the caller's cancel check returns True."""


def restricted_probs(
    logits: torch.Tensor, allowed: torch.Tensor, temperature: float, top_k: int | None
) -> torch.Tensor:
    """Probabilities over `allowed` vocabulary rows: softmax(logits[allowed] / T), top-k truncated."""
    scores = logits[..., allowed].float()
    if temperature <= 0:
        probs = torch.zeros_like(scores)
        probs.scatter_(-1, scores.argmax(-1, keepdim=True), 1.0)
        return probs
    scores = scores / temperature
    if top_k is not None and 0 < top_k < scores.shape[-1]:
        threshold = scores.topk(top_k, dim=-1).values[..., -1:]
        scores = scores.masked_fill(scores < threshold, float("-inf"))
    return torch.softmax(scores, dim=-1)


def _top_p(probs: torch.Tensor, top_p: float | None) -> torch.Tensor:
    if top_p is None or top_p >= 1:
        return probs
    ordered, order = probs.sort(dim=-1, descending=True)
    keep = ordered.cumsum(-1) - ordered < top_p
    kept = torch.zeros_like(probs).scatter(-1, order, ordered * keep)
    return kept / kept.sum(-1, keepdim=True)


class _Stepper:
    """Runs the model one token at a time over a KV cache."""

    def __init__(self, model: FamiliarChameleon, prompt_ids: Sequence[int]) -> None:
        self.model = model
        self.cache = DynamicCache(config=model.config)
        self.device = model.get_input_embeddings().weight.device
        self.logits = self._forward(list(prompt_ids))

    def _forward(self, ids: list[int]) -> torch.Tensor:
        input_ids = torch.tensor([ids], dtype=torch.long, device=self.device)
        out = self.model(input_ids=input_ids, past_key_values=self.cache, use_cache=True, logits_to_keep=1)
        return out.logits[0, -1]

    def push(self, token: int) -> None:
        self.logits = self._forward([token])


def _generator(seed: int | None, device: torch.device) -> torch.Generator:
    generator = torch.Generator(device=device)
    generator.manual_seed(seed if seed is not None else int(torch.seed() % 2**63))
    return generator


@torch.no_grad()
def sample_image_tokens(
    model: FamiliarChameleon,
    prompt_ids: Sequence[int],
    image_token_ids: torch.Tensor,
    n_tokens: int,
    sampling: Sampling,
    guidance_scale: float = 1.0,
    unconditional_ids: Sequence[int] | None = None,
    progress: ProgressCallback | None = None,
    cancelled: Cancelled | None = None,
) -> torch.Tensor:
    """Sample `n_tokens` image-token vocabulary ids after `prompt_ids` (which end with begin-of-image), with a
    "drawing" progress event per token.

    With `guidance_scale != 1` and `unconditional_ids`, logits are uncond + scale * (cond - uncond).
    """
    cond = _Stepper(model, prompt_ids)
    uncond = _Stepper(model, unconditional_ids) if guidance_scale != 1.0 and unconditional_ids else None
    allowed = image_token_ids.to(cond.device)
    generator = _generator(sampling.seed, cond.device)
    out = torch.empty(n_tokens, dtype=torch.long)
    for step in range(n_tokens):
        if cancelled is not None and cancelled():
            raise GenerationCancelled
        logits = cond.logits
        if uncond is not None:
            logits = uncond.logits + guidance_scale * (cond.logits - uncond.logits)
        probs = _top_p(restricted_probs(logits, allowed, sampling.temperature, sampling.top_k), sampling.top_p)
        token = int(allowed[torch.multinomial(probs, 1, generator=generator)])
        out[step] = token
        if step + 1 < n_tokens:
            cond.push(token)
            if uncond is not None:
                uncond.push(token)
        if progress is not None:
            progress(Progress("drawing", step + 1, n_tokens))
    return out


@torch.no_grad()
def stream_text_tokens(
    model: FamiliarChameleon,
    prompt_ids: Sequence[int],
    blocked_ids: torch.Tensor,
    stop_ids: Sequence[int],
    max_new_tokens: int,
    sampling: Sampling,
    cancelled: Cancelled | None = None,
) -> Iterator[int]:
    """Yield sampled token ids one by one, never one of `blocked_ids`, until a stop id or the limit."""
    stepper = _Stepper(model, prompt_ids)
    allowed_mask = torch.ones(model.config.vocab_size, dtype=torch.bool, device=stepper.device)
    allowed_mask[blocked_ids.to(stepper.device)] = False
    allowed = allowed_mask.nonzero().squeeze(-1)
    generator = _generator(sampling.seed, stepper.device)
    for _ in range(max_new_tokens):
        if cancelled is not None and cancelled():
            raise GenerationCancelled
        probs = _top_p(restricted_probs(stepper.logits, allowed, sampling.temperature, sampling.top_k), sampling.top_p)
        token = int(allowed[torch.multinomial(probs, 1, generator=generator)])
        if token in stop_ids:
            return
        yield token
        stepper.push(token)


@torch.no_grad()
def first_token_probs(model: FamiliarChameleon, prompt_ids: Sequence[int]) -> torch.Tensor:
    """The model's next-token distribution after the prompt (for the self-prompt decision)."""
    return torch.softmax(_Stepper(model, prompt_ids).logits.float(), dim=-1)
