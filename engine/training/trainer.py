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
) -> torch.Tensor:
    """Summed cross-entropy of `head(hidden)` (float32 logits) against `labels`, one row per labelled position.

    At most `chunk` rows of logits exist at a time, in the forward pass and in the backward pass: each chunk's
    logits are recomputed for its backward (activation checkpointing) instead of being kept. Up to `chunk` rows it
    is exactly the plain computation; above, the same loss and gradients up to rounding.
    """
    if hidden.shape[0] <= chunk:
        return nn.functional.cross_entropy(head(hidden).float(), labels, reduction="sum")

    def summed(rows: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return nn.functional.cross_entropy(head(rows).float(), targets, reduction="sum")

    total = hidden.new_zeros((), dtype=torch.float32)
    for i in range(0, hidden.shape[0], chunk):
        rows, targets = hidden[i : i + chunk], labels[i : i + chunk]
        total = total + checkpoint(summed, rows, targets, use_reentrant=False, preserve_rng_state=False)
    return total


def target_loss(head: ConceptHead, hidden: torch.Tensor, labels: torch.Tensor, image_ids: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy over labelled positions: a position whose target is an image token over the image-token
    rows only (the distribution drawing samples from inside a picture), any other over the full vocabulary (where
    the concept's own head rows take part)."""
    is_image = torch.isin(labels, image_ids)
    total = hidden.new_zeros((), dtype=torch.float32)
    if bool(is_image.any()):
        image_head = _image_rows(head, image_ids)
        position = torch.searchsorted(image_ids, labels[is_image])
        total = total + chunked_cross_entropy(lambda rows: rows @ image_head.T, hidden[is_image], position)
    if not bool(is_image.all()):
        total = total + chunked_cross_entropy(head, hidden[~is_image], labels[~is_image])
    return total / labels.shape[0]


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
        super().__init__(loaded.model, loaded.device, self.params.parameters(), config, len(self.samples))

    def epoch_items(self, epoch: int) -> list[Sample]:
        generator = torch.Generator().manual_seed(self.config.seed * 100_003 + epoch)
        return [self.samples[i] for i in torch.randperm(len(self.samples), generator=generator).tolist()]

    def loss(self, batch: Sequence[Sample]) -> torch.Tensor:
        """Mean next-token cross-entropy over the labelled positions of `batch`."""
        ids, mask, labels = collate(batch, int(self.assistant.loaded.tokenizer.pad_token_id), self.device)
        autocast = torch.autocast("cuda", dtype=torch.bfloat16) if self.device.type == "cuda" else nullcontext()
        with autocast:
            hidden = self.model.model(input_ids=ids, attention_mask=mask).last_hidden_state
            selected = labels != IGNORE
            return target_loss(self.model.lm_head, hidden[selected], labels[selected], self.image_ids)

    def batch_loss(self, batch: Sequence[Sample]) -> Callable[[slice], torch.Tensor]:
        return lambda part: self.loss(batch[part]) * (len(batch[part]) / len(batch))

    def checkpoint(self, common: TrainingCheckpoint) -> Checkpoint:
        return Checkpoint(**vars(common), state=self.assistant.slots.state(self.name))

    def restore(self, checkpoint: Checkpoint) -> None:
        self.assistant.slots.load(self.name, checkpoint.state)

    def train_mode(self, on: bool) -> None:
        self.params.requires_grad_(on)
