"""Sampling loops: streamed text, and exactly one image's worth of image tokens.

Image generation allows, after the begin-of-image token, only image tokens for exactly
`tokens_per_image` steps; each step samples from the model's own distribution restricted to the image
rows of the vocabulary (with temperature, top-k and optional classifier-free guidance). The caller then
closes the image with end-of-image.

Images are drawn by a fast decoder by default: a preallocated KV cache, the conditional and unconditional
streams as one batch of 2, the output head cut to the image rows, sampling on the device with no host
sync per token, and on CUDA a compiled decode step. The original loop stays as the reference
(`reference=True`); both draw from the same generator with the same calls, so a seed gives the same
tokens (up to floating-point rounding of the batched kernels).
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import torch
from torch.nn import functional
from transformers import DynamicCache

from engine.concepts.slots import ConceptHead
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
    return _probs(logits[..., allowed].float(), temperature, top_k)


def _probs(scores: torch.Tensor, temperature: float, top_k: int | None) -> torch.Tensor:
    """softmax(scores / T), top-k truncated; a one-hot argmax when T <= 0."""
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


def _sample(probs: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """One index drawn from `probs`, on its device. Both image paths draw through this one call, so the
    same seed consumes the generator identically."""
    return torch.multinomial(probs, 1, generator=generator)


class _StaticKV:
    """A preallocated KV cache for a batch of streams: `update` writes each layer's new keys and values in
    place at the slot `slot` (a device tensor) and returns the whole buffers; `mask` (additive, 0 where a
    slot holds a token, the dtype's minimum elsewhere) hides left padding and the slots not yet written."""

    def __init__(self, caches: Sequence[DynamicCache], extra: int) -> None:
        lengths = [cache.layers[0].keys.shape[2] for cache in caches]
        prefix = max(lengths)
        first = caches[0].layers[0].keys
        shape = (len(caches), first.shape[1], prefix + extra, first.shape[3])
        self.keys = [first.new_zeros(shape) for _ in caches[0].layers]
        self.values = [first.new_zeros(shape) for _ in caches[0].layers]
        self.mask = torch.full(
            (len(caches), 1, 1, shape[2]), torch.finfo(first.dtype).min, dtype=first.dtype, device=first.device
        )
        for row, (cache, length) in enumerate(zip(caches, lengths, strict=True)):
            for layer, (keys, values) in enumerate(zip(self.keys, self.values, strict=True)):
                keys[row, :, prefix - length : prefix] = cache.layers[layer].keys[0]
                values[row, :, prefix - length : prefix] = cache.layers[layer].values[0]
            self.mask[row, ..., prefix - length : prefix] = 0
        self.slot = torch.tensor([prefix], dtype=torch.long, device=first.device)
        self.positions = torch.tensor(lengths, dtype=torch.long, device=first.device).unsqueeze(-1)

    def update(self, keys: torch.Tensor, values: torch.Tensor, layer_idx: int) -> tuple[torch.Tensor, torch.Tensor]:
        self.keys[layer_idx].index_copy_(2, self.slot, keys)
        self.values[layer_idx].index_copy_(2, self.slot, values)
        return self.keys[layer_idx], self.values[layer_idx]

    def advance(self) -> None:
        """Open the current slot to attention (before the step that writes it)."""
        self.mask.index_fill_(-1, self.slot, 0)

    def next(self) -> None:
        """Move to the next slot and position (after a step)."""
        self.slot.add_(1)
        self.positions.add_(1)


def _decode_step(model: FamiliarChameleon, embeds: torch.Tensor, cache: _StaticKV, head: torch.Tensor) -> torch.Tensor:
    """One token per stream through the decoder over the static cache; logits for the rows of `head`."""
    base = model.model
    position_embeddings = base.rotary_emb(embeds, position_ids=cache.positions)
    hidden = embeds
    for layer in base.layers:
        hidden = layer(
            hidden,
            attention_mask=cache.mask,
            position_ids=cache.positions,
            past_key_values=cache,
            use_cache=True,
            position_embeddings=position_embeddings,
        )[0]
    return functional.linear(base.norm(hidden)[:, -1], head)


@functools.cache
def _compiled_decode_step() -> Callable[[FamiliarChameleon, torch.Tensor, _StaticKV, torch.Tensor], torch.Tensor]:
    """The decode step for CUDA, compiled once per process (CPU decoding never compiles). Where compiling fails
    (no compiler toolchain, an unsupported layer), the step runs uncompiled from then on: slower, same tokens."""
    compiled = torch.compile(_decode_step, dynamic=True)
    eager_only = False

    def step(model: FamiliarChameleon, embeds: torch.Tensor, cache: _StaticKV, head: torch.Tensor) -> torch.Tensor:
        nonlocal eager_only
        if not eager_only:
            try:
                return compiled(model, embeds, cache, head)
            except Exception as exc:  # torch.compile raises many types; none of them means wrong tokens
                eager_only = True
                warnings.warn(f"compiling the image decoder failed, decoding uncompiled: {exc}", stacklevel=2)
        return _decode_step(model, embeds, cache, head)

    return step


def _head_rows(model: FamiliarChameleon, ids: torch.Tensor) -> torch.Tensor:
    """The output head's rows for vocabulary `ids`, attached concepts' rows included."""
    head = model.get_output_embeddings()
    return head.rows(ids) if isinstance(head, ConceptHead) else head.weight[ids]


def _prefill(model: FamiliarChameleon, ids: Sequence[int], device: torch.device) -> tuple[DynamicCache, torch.Tensor]:
    """The prompt through the model into a fresh cache, and its last hidden state."""
    cache = DynamicCache(config=model.config)
    input_ids = torch.tensor([list(ids)], dtype=torch.long, device=device)
    hidden = model.model(input_ids=input_ids, past_key_values=cache, use_cache=True).last_hidden_state
    return cache, hidden[:, -1]


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
    reference: bool = False,
) -> torch.Tensor:
    """Sample `n_tokens` image-token vocabulary ids after `prompt_ids` (which end with begin-of-image), with a
    "drawing" progress event per token.

    With `guidance_scale != 1` and `unconditional_ids`, logits are uncond + scale * (cond - uncond).
    `reference=True` runs the original loop (two batch-1 streams, full head, a host sync per token) instead
    of the fast decoder; a seed gives the same tokens on both.
    """
    if reference:
        return _reference_image_tokens(
            model,
            prompt_ids,
            image_token_ids,
            n_tokens,
            sampling,
            guidance_scale,
            unconditional_ids,
            progress,
            cancelled,
        )
    device = model.get_input_embeddings().weight.device
    allowed = image_token_ids.to(device)
    streams = [prompt_ids]
    if guidance_scale != 1.0 and unconditional_ids:
        streams.append(unconditional_ids)
    prefilled = [_prefill(model, ids, device) for ids in streams]
    head = _head_rows(model, allowed)
    embeddings = model.get_input_embeddings()(allowed)
    cache = _StaticKV([c for c, _ in prefilled], n_tokens)
    logits = functional.linear(torch.cat([h for _, h in prefilled]), head)
    step_fn = _compiled_decode_step() if device.type == "cuda" else _decode_step
    generator = _generator(sampling.seed, device)
    out = torch.empty(n_tokens, dtype=torch.long, device=device)
    for step in range(n_tokens):
        if cancelled is not None and cancelled():
            raise GenerationCancelled
        scores = logits[0] if len(streams) == 1 else logits[1] + guidance_scale * (logits[0] - logits[1])
        probs = _top_p(_probs(scores.float(), sampling.temperature, sampling.top_k), sampling.top_p)
        index = _sample(probs, generator)
        out[step : step + 1] = allowed[index]
        if step + 1 < n_tokens:
            cache.advance()
            logits = step_fn(model, embeddings[index].expand(len(streams), 1, -1), cache, head)
            cache.next()
        if progress is not None:
            progress(Progress("drawing", step + 1, n_tokens))
    return out.cpu()


def _reference_image_tokens(
    model: FamiliarChameleon,
    prompt_ids: Sequence[int],
    image_token_ids: torch.Tensor,
    n_tokens: int,
    sampling: Sampling,
    guidance_scale: float,
    unconditional_ids: Sequence[int] | None,
    progress: ProgressCallback | None,
    cancelled: Cancelled | None,
) -> torch.Tensor:
    """The original image loop: growing caches, two batch-1 streams, the full head, a host sync per token."""
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
        token = int(allowed[_sample(probs, generator)])
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
