"""Personalize one concept: AdamW over its own 33 embedding and 33 head rows, the model frozen.

The step loop, checkpoints, cancel and resume are `engine.training.loop`'s; this trainer draws each epoch's
sample order from the seed and the epoch, computes logits only at labelled positions and only `LOSS_CHUNK_ROWS` of
them at a time, and checkpoints the concept's rows.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from engine.concepts.prompts import IGNORE, Sample
from engine.concepts.slots import ConceptHead
from engine.concepts.state import ConceptState
from engine.errors import EngineError
from engine.inference.assistant import Assistant
from engine.model.memory import LOSS_CHUNK_ROWS
from engine.training.loop import TrainingCheckpoint, TrainingLoop
from engine.training.recipe import Recipe


@dataclass(kw_only=True)
class Checkpoint(TrainingCheckpoint):
    """A concept run's checkpoint: the concept's rows, with the optimizer's moments and the run's position."""

    state: ConceptState


def collate(samples: Sequence[Sample], pad_id: int, device: torch.device) -> tuple[torch.Tensor, ...]:
    """Right-padded ids, attention mask, and next-token labels (IGNORE on padding)."""
    length = max(len(s.ids) for s in samples)
    ids = torch.full((len(samples), length), pad_id, dtype=torch.long)
    mask = torch.zeros((len(samples), length), dtype=torch.long)
    labels = torch.full((len(samples), length), IGNORE, dtype=torch.long)
    for row, sample in enumerate(samples):
        n = len(sample.ids)
        ids[row, :n] = torch.tensor(sample.ids)
        mask[row, :n] = 1
        labels[row, : n - 1] = torch.tensor(sample.labels[1:])
    return ids.to(device), mask.to(device), labels.to(device)


def chunked_cross_entropy(
    head: Callable[[torch.Tensor], torch.Tensor],
    hidden: torch.Tensor,
    labels: torch.Tensor,
    chunk: int = LOSS_CHUNK_ROWS,
    weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """Summed cross-entropy of `head(hidden)` (float32 logits) against `labels`, one row per labelled position,
    each row times its weight where `weights` are given.

    At most `chunk` rows of logits exist at a time, in the forward pass and in the backward pass: each chunk's
    logits are recomputed for its backward (activation checkpointing) instead of being kept. Up to `chunk` rows it
    is exactly the plain computation; above, the same loss and gradients up to rounding.
    """

    def summed(rows: torch.Tensor, targets: torch.Tensor, weight: torch.Tensor | None) -> torch.Tensor:
        if weight is None:
            return nn.functional.cross_entropy(head(rows).float(), targets, reduction="sum")
        return (nn.functional.cross_entropy(head(rows).float(), targets, reduction="none") * weight).sum()

    if hidden.shape[0] <= chunk:
        return summed(hidden, labels, weights)
    total = hidden.new_zeros((), dtype=torch.float32)
    for i in range(0, hidden.shape[0], chunk):
        part = None if weights is None else weights[i : i + chunk]
        rows, targets = hidden[i : i + chunk], labels[i : i + chunk]
        total = total + checkpoint(summed, rows, targets, part, use_reentrant=False, preserve_rng_state=False)
    return total


def target_loss(
    head: ConceptHead,
    hidden: torch.Tensor,
    labels: torch.Tensor,
    image_ids: torch.Tensor,
    weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """Cross-entropy over labelled positions: a position whose target is an image token over the image-token
    rows only (the distribution drawing samples from inside a picture), any other over the full vocabulary (where
    the concept's own head rows take part). The mean over positions, or with `weights` (one per position,
    summing to 1) their weighted sum."""
    is_image = torch.isin(labels, image_ids)
    total = hidden.new_zeros((), dtype=torch.float32)

    def part(where: torch.Tensor) -> torch.Tensor | None:
        return None if weights is None else weights[where]

    if bool(is_image.any()):
        image_head = _image_rows(head, image_ids)
        position = torch.searchsorted(image_ids, labels[is_image])
        rows = hidden[is_image]
        total = total + chunked_cross_entropy(lambda r: r @ image_head.T, rows, position, weights=part(is_image))
    if not bool(is_image.all()):
        total = total + chunked_cross_entropy(head, hidden[~is_image], labels[~is_image], weights=part(~is_image))
    return total if weights is not None else total / labels.shape[0]


def sample_weights(selected: torch.Tensor) -> torch.Tensor:
    """Per labelled position (row-major, as `tensor[selected]` orders them), 1 / (its sample's labelled positions x
    samples): the weights that make the loss the mean over samples of each sample's mean over its target."""
    counts = selected.sum(1, keepdim=True).clamp(min=1).float()
    return (1.0 / (counts * selected.shape[0])).expand_as(selected)[selected]


def answer_weights(
    batch: Sequence[Sample], selected: torch.Tensor, weight: float, base: torch.Tensor | None = None
) -> torch.Tensor:
    """Per labelled position (as `sample_weights` orders them), `base` (the token mean where None) with the
    positions that predict a sample's deciding tokens (`Sample.decision`) `weight` times heavier, summing to 1."""
    emphasis = torch.ones(selected.shape, device=selected.device)
    for row, sample in enumerate(batch):
        for position in sample.decision:
            emphasis[row, position - 1] = weight  # the label at position - 1 is the token at `position`
    weights = emphasis[selected] * (base if base is not None else 1.0)
    return weights / weights.sum()


def _image_rows(head: ConceptHead, ids: torch.Tensor) -> torch.Tensor:
    """The head's rows for the sorted image-token `ids`: base rows (concept slots are reserved tokens, never image
    tokens), as a view without a copy where the ids are one run (as Chameleon's are)."""
    weight = head.base.weight
    first, last = int(ids[0]), int(ids[-1])
    return weight[first : last + 1] if last - first + 1 == len(ids) else weight[ids]


class Trainer(TrainingLoop[Sample, Checkpoint]):
    """Trains the concept `name`, already attached to `assistant`, on `samples`."""

    config: Recipe

    def __init__(self, assistant: Assistant, name: str, samples: Sequence[Sample], config: Recipe) -> None:
        if not samples:
            raise EngineError("no training samples: add photos to the concept first")
        self.assistant = assistant
        self.name = name
        self.samples = list(samples)
        self.params = assistant.slots.params(name)
        loaded = assistant.loaded
        self.image_ids = loaded.image_tokenizer.image_token_ids.sort().values.to(loaded.device)
        prompts = assistant.prompts
        sets = (prompts.generation_ids(name), prompts.understanding_ids(name))
        self.sets = tuple(torch.tensor(ids, dtype=torch.long, device=loaded.device) for ids in sets)
        super().__init__(loaded, self.params.parameters(), config, len(self.samples))

    def epoch_items(self, epoch: int) -> list[Sample]:
        generator = torch.Generator().manual_seed(self.config.seed * 100_003 + epoch)
        return [self.samples[i] for i in torch.randperm(len(self.samples), generator=generator).tolist()]

    def loss(self, batch: Sequence[Sample]) -> torch.Tensor:
        """Next-token cross-entropy over the labelled positions of `batch`: their mean, or with
        `Recipe.sample_mean` the mean over samples of each one's mean."""
        ids, mask, labels = collate(batch, int(self.assistant.loaded.tokenizer.pad_token_id), self.device)
        autocast = torch.autocast("cuda", dtype=torch.bfloat16) if self.device.type == "cuda" else nullcontext()
        with autocast:
            if self.config.route_rows and not self.config.layout.shared:
                inputs = self.routed(self.model.get_input_embeddings()(ids), ids, labels)
                hidden = self.model.model(inputs_embeds=inputs, attention_mask=mask).last_hidden_state
            else:
                hidden = self.model.model(input_ids=ids, attention_mask=mask).last_hidden_state
            selected = labels != IGNORE
            weights = sample_weights(selected) if self.config.sample_mean else None
            if self.config.answer_weight != 1.0:
                weights = answer_weights(batch, selected, self.config.answer_weight, weights)
            return target_loss(self.model.lm_head, hidden[selected], labels[selected], self.image_ids, weights)

    def routed(self, inputs: torch.Tensor, ids: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """`inputs` with the other task's latent set detached in each sample (`Recipe.route_rows`): the
        understanding rows in a drawing (a sample with an image-token target), the generation rows elsewhere."""
        drawing = torch.isin(labels, self.image_ids).any(1, keepdim=True)
        generation, understanding = (torch.isin(ids, rows) for rows in self.sets)
        frozen = torch.where(drawing, understanding, generation)
        return torch.where(frozen.unsqueeze(-1), inputs.detach(), inputs)

    def batch_loss(self, batch: Sequence[Sample]) -> Callable[[slice], torch.Tensor]:
        return lambda part: self.loss(batch[part]) * (len(batch[part]) / len(batch))

    def checkpoint(self, common: TrainingCheckpoint) -> Checkpoint:
        return Checkpoint(**vars(common), state=self.assistant.slots.state(self.name))

    def restore(self, checkpoint: Checkpoint) -> None:
        self.assistant.slots.load(self.name, checkpoint.state)

    def train_mode(self, on: bool) -> None:
        self.params.requires_grad_(on)
