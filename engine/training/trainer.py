"""Personalize one concept: AdamW over its own 33 embedding and 33 head rows, the model frozen.

Runs are repeatable for a seed (the sample order of each epoch is drawn from the seed and the epoch),
so a run resumed from any checkpoint ends exactly where an uninterrupted run would. A checkpoint holds
the concept state, the optimizer's moments and the step; one is handed to `on_checkpoint` at the end of
every epoch and when the run is cancelled. Logits are computed only at labelled positions.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field

import torch
from safetensors.torch import load as load_tensors
from safetensors.torch import save as save_tensors
from torch import nn

from engine.concepts.prompts import IGNORE, Sample
from engine.concepts.state import ConceptState
from engine.errors import EngineError
from engine.inference.assistant import Assistant
from engine.training.recipe import Recipe


@dataclass
class Progress:
    phase: str
    step: int
    total: int
    loss: float | None
    eta_seconds: float | None
    epoch: int


@dataclass
class Checkpoint:
    """Everything needed to continue a run: concept rows, optimizer moments, position, history."""

    state: ConceptState
    optimizer: bytes
    step: int
    epoch: int
    losses: list[float] = field(default_factory=list)
    metrics: dict[str, float] = field(default_factory=dict)
    final: bool = False


class TrainingCancelled(Exception):
    """Raised after the cancel checkpoint was handed over."""

    def __init__(self, checkpoint: Checkpoint) -> None:
        super().__init__(f"training cancelled at step {checkpoint.step}")
        self.checkpoint = checkpoint


def _pack_optimizer(optimizer: torch.optim.Optimizer) -> bytes:
    tensors: dict[str, torch.Tensor] = {}
    for index, state in optimizer.state_dict()["state"].items():
        for key, value in state.items():
            tensors[f"{index}.{key}"] = torch.as_tensor(value).detach().cpu().clone()
    return save_tensors(tensors)


def _unpack_optimizer(optimizer: torch.optim.Optimizer, data: bytes) -> None:
    packed = load_tensors(data)
    state: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in packed.items():
        index, name = key.split(".", 1)
        state.setdefault(int(index), {})[name] = value
    current = optimizer.state_dict()
    optimizer.load_state_dict({"state": state, "param_groups": current["param_groups"]})


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


class Trainer:
    """Trains the concept `name`, already attached to `assistant`, on `samples`."""

    def __init__(self, assistant: Assistant, name: str, samples: Sequence[Sample], config: Recipe) -> None:
        if not samples:
            raise EngineError("no training samples: add photos to the concept first")
        self.assistant = assistant
        self.name = name
        self.samples = list(samples)
        self.config = config
        self.model = assistant.loaded.model
        self.device = assistant.loaded.device
        self.params = assistant.slots.params(name)
        self.optimizer = torch.optim.AdamW(
            self.params.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay
        )
        self.steps_per_epoch = math.ceil(len(self.samples) / config.batch_size)
        self.total_steps = self.steps_per_epoch * config.epochs

    def _order(self, epoch: int) -> list[int]:
        generator = torch.Generator().manual_seed(self.config.seed * 100_003 + epoch)
        return torch.randperm(len(self.samples), generator=generator).tolist()

    def loss(self, batch: Sequence[Sample]) -> torch.Tensor:
        """Mean next-token cross-entropy over the labelled positions of `batch`."""
        ids, mask, labels = collate(batch, int(self.assistant.loaded.tokenizer.pad_token_id), self.device)
        autocast = torch.autocast("cuda", dtype=torch.bfloat16) if self.device.type == "cuda" else nullcontext()
        with autocast:
            hidden = self.model.model(input_ids=ids, attention_mask=mask).last_hidden_state
            selected = labels != IGNORE
            logits = self.model.lm_head(hidden[selected])
        return nn.functional.cross_entropy(logits.float(), labels[selected])

    def _checkpoint(self, step: int, epoch: int, losses: list[float], final: bool = False) -> Checkpoint:
        return Checkpoint(
            state=self.assistant.slots.state(self.name),
            optimizer=_pack_optimizer(self.optimizer),
            step=step,
            epoch=epoch,
            losses=list(losses),
            final=final,
        )

    def run(
        self,
        progress: Callable[[Progress], None] | None = None,
        cancelled: Callable[[], bool] | None = None,
        on_checkpoint: Callable[[Checkpoint], None] | None = None,
        resume: Checkpoint | None = None,
    ) -> list[float]:
        """Train to the end (or raise TrainingCancelled); returns the loss of every step."""
        report = progress or (lambda _p: None)
        save = on_checkpoint or (lambda _c: None)
        step, losses = 0, []
        if resume is not None:
            resumed = resume.state
            with torch.no_grad():
                self.params.embed.copy_(resumed.embed.to(self.params.embed.device))
                self.params.head.copy_(resumed.head.to(self.params.head.device))
            _unpack_optimizer(self.optimizer, resume.optimizer)
            step, losses = resume.step, list(resume.losses)
        self.params.requires_grad_(True)
        self.model.train()
        if self.device.type == "cuda":
            self.model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        started, first_step = time.monotonic(), step
        saved: Checkpoint | None = None  # the last checkpoint handed over, reused when cancelling right after it
        try:
            while step < self.total_steps:
                epoch, within = divmod(step, self.steps_per_epoch)
                order = self._order(epoch)
                batch = [self.samples[i] for i in order[within * self.config.batch_size :][: self.config.batch_size]]
                if cancelled is not None and cancelled():
                    checkpoint = (
                        saved if saved is not None and saved.step == step else self._checkpoint(step, epoch, losses)
                    )
                    if checkpoint is not saved:
                        save(checkpoint)
                    raise TrainingCancelled(checkpoint)
                self.optimizer.zero_grad(set_to_none=True)
                total = 0.0
                for start in range(0, len(batch), self.config.micro_batch):
                    micro = batch[start : start + self.config.micro_batch]
                    loss = self.loss(micro) * (len(micro) / len(batch))
                    loss.backward()
                    total += loss.item()
                nn.utils.clip_grad_norm_(self.params.parameters(), self.config.max_grad_norm)
                self.optimizer.step()
                step += 1
                losses.append(total)
                rate = (time.monotonic() - started) / (step - first_step)
                report(Progress("training", step, self.total_steps, total, rate * (self.total_steps - step), epoch))
                if step % self.steps_per_epoch == 0 or step == self.total_steps:
                    saved = self._checkpoint(step, step // self.steps_per_epoch, losses, final=step == self.total_steps)
                    save(saved)
        finally:
            self.params.requires_grad_(False)
            self.model.eval()
            if self.device.type == "cuda":
                self.model.gradient_checkpointing_disable()
        return losses
