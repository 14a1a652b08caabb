"""The training loop both trainers run: a concept's rows (`engine.training.trainer`) and the Aligner
(`engine.aligner.training`). A trainer says only what differs: the order of an epoch's items, a batch's loss,
and what its checkpoints hold.

AdamW over the trained parameters; each step takes the next `batch_size` items of the epoch's order, accumulates
gradients over micro-batches of at most `micro_batch` items (0: the whole batch) and clips them to `max_grad_norm`.
The frozen model runs in train mode and is back in eval mode afterwards. On CUDA the micro-batch and gradient
checkpointing come from the memory model (`engine.model.memory.training_shape`): the largest micro-batch that fits
without checkpointing, else checkpointing; where a step without it still runs out of memory, the step is taken again
with checkpointing, which stays on for the rest of the run. Runs repeat exactly for a seed, so a run resumed from
any checkpoint ends bit-identical to an uninterrupted one.

A checkpoint goes to `on_checkpoint` at the end of every epoch; where `stop` then says so (early stopping), the run
ends there as finished, not cancelled. A cancelled run raises `TrainingCancelled` with the
checkpoint of the step it stopped at: the one it last handed over (or resumed from) when that is at this step,
else a new one, handed over first. No two checkpoints for the same step are ever handed over.
"""

from __future__ import annotations

import math
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Generic, Protocol, TypeVar

import torch
from safetensors.torch import load as load_tensors
from safetensors.torch import save as save_tensors
from torch import nn

from engine.model.loading import LoadedModel, loaded_training_shape
from engine.progress import Progress, ProgressCallback

ItemT = TypeVar("ItemT")
CheckpointT = TypeVar("CheckpointT", bound="TrainingCheckpoint")


class LoopConfig(Protocol):
    """The settings the loop reads (`TrainConfig` and `AlignerTrainConfig` have them)."""

    @property
    def epochs(self) -> int: ...

    @property
    def batch_size(self) -> int: ...

    @property
    def micro_batch(self) -> int: ...

    @property
    def learning_rate(self) -> float: ...

    @property
    def weight_decay(self) -> float: ...

    @property
    def max_grad_norm(self) -> float: ...


@dataclass(kw_only=True)
class TrainingCheckpoint:
    """What every checkpoint holds: AdamW's moments (safetensors bytes), the step reached, its epoch, the loss of
    every step so far, and whether the run is finished."""

    optimizer: bytes
    step: int
    epoch: int
    losses: list[float] = field(default_factory=list)
    final: bool = False


class TrainingCancelled(Exception):
    """Raised when a run is cancelled, after its checkpoint was handed over."""

    def __init__(self, checkpoint: TrainingCheckpoint) -> None:
        super().__init__(f"training cancelled at step {checkpoint.step}")
        self.checkpoint = checkpoint


def _pack_optimizer(optimizer: torch.optim.Optimizer) -> bytes:
    """The optimizer's per-parameter state as safetensors bytes (`INDEX.NAME` keys)."""
    tensors: dict[str, torch.Tensor] = {}
    for index, state in optimizer.state_dict()["state"].items():
        for key, value in state.items():
            tensors[f"{index}.{key}"] = torch.as_tensor(value).detach().cpu().clone()
    return save_tensors(tensors)


def _unpack_optimizer(optimizer: torch.optim.Optimizer, data: bytes) -> None:
    """Restore state written by `_pack_optimizer`, keeping the optimizer's own parameter groups."""
    state: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in load_tensors(data).items():
        index, name = key.split(".", 1)
        state.setdefault(int(index), {})[name] = value
    optimizer.load_state_dict({"state": state, "param_groups": optimizer.state_dict()["param_groups"]})


class TrainingLoop(ABC, Generic[ItemT, CheckpointT]):
    """Trains `parameters` with the frozen model of `loaded` over `items_per_epoch` items an epoch."""

    def __init__(
        self, loaded: LoadedModel, parameters: Iterable[nn.Parameter], config: LoopConfig, items_per_epoch: int
    ) -> None:
        self.model: nn.Module = loaded.model
        self.device = loaded.device
        self.config = config
        self.trained = list(parameters)
        self.optimizer = torch.optim.AdamW(self.trained, lr=config.learning_rate, weight_decay=config.weight_decay)
        self.steps_per_epoch = math.ceil(items_per_epoch / config.batch_size)
        self.total_steps = self.steps_per_epoch * config.epochs
        shape = loaded_training_shape(loaded, config.batch_size, config.micro_batch or config.batch_size)
        self.micro_batch = shape.micro_batch
        """Items per forward pass: the config's, or on CUDA fewer where that avoids checkpointing."""
        self.checkpointing = shape.checkpointing
        """Gradient checkpointing while training (recompute activations in the backward pass): on CUDA where no
        micro-batch fits without it; off for everything the caller does with a handed-over checkpoint (scoring
        draws and asks)."""

    @abstractmethod
    def epoch_items(self, epoch: int) -> Sequence[ItemT]:
        """The epoch's items in training order, drawn from the seed and the epoch."""

    @abstractmethod
    def batch_loss(self, batch: Sequence[ItemT]) -> Callable[[slice], torch.Tensor]:
        """The loss of a micro-batch (a slice of `batch`), scaled so that the micro-batches' losses add up to
        the batch's loss."""

    @abstractmethod
    def checkpoint(self, common: TrainingCheckpoint) -> CheckpointT:
        """This trainer's checkpoint: what it trains, plus `common`."""

    @abstractmethod
    def restore(self, checkpoint: CheckpointT) -> None:
        """Put what `checkpoint` holds of what this trainer trains back in place."""

    @abstractmethod
    def train_mode(self, on: bool) -> None:
        """Switch what this trainer trains into (or out of) training."""

    def _checkpoint(self, step: int, losses: list[float]) -> CheckpointT:
        return self.checkpoint(
            TrainingCheckpoint(
                optimizer=_pack_optimizer(self.optimizer),
                step=step,
                epoch=step // self.steps_per_epoch,
                losses=list(losses),
                final=step == self.total_steps,
            )
        )

    def _set_training(self, on: bool) -> None:
        self.train_mode(on)
        self.model.train(on)
        if self.checkpointing:
            if on:
                self.model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
            else:
                self.model.activation_checkpointing_disable()

    def _hand_over(self, checkpoint: CheckpointT, save: Callable[[CheckpointT], None]) -> None:
        """Give `checkpoint` to the caller with the model in eval mode and checkpointing off: checkpointed layers
        in train mode keep no KV cache, so scoring would draw and answer wrongly; training resumes after."""
        self._set_training(False)
        try:
            save(checkpoint)
        finally:
            if checkpoint.step < self.total_steps:
                self._set_training(True)

    def _gradients(self, batch: Sequence[ItemT]) -> float:
        """Accumulate the gradients of `batch`, a micro-batch at a time; returns its loss."""
        self.optimizer.zero_grad(set_to_none=True)
        loss_of = self.batch_loss(batch)
        total = 0.0
        for start in range(0, len(batch), self.micro_batch):
            loss = loss_of(slice(start, start + self.micro_batch))
            loss.backward()
            total += loss.item()
        return total

    def _start_checkpointing(self) -> None:
        """A step without checkpointing ran out of memory (the memory model's estimate was short): drop its partial
        gradients and checkpoint from now on, at the same micro-batch, which needs less than the step that failed."""
        self.optimizer.zero_grad(set_to_none=True)
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
        self.checkpointing = True
        self._set_training(True)

    def run(
        self,
        progress: ProgressCallback | None = None,
        cancelled: Callable[[], bool] | None = None,
        on_checkpoint: Callable[[CheckpointT], None] | None = None,
        resume: CheckpointT | None = None,
        stop: Callable[[], bool] | None = None,
    ) -> list[float]:
        """Train to the end (or raise TrainingCancelled), from `resume` when given; returns the loss of every
        step. `progress` gets a "training" event after every step. `stop` is asked after each epoch's checkpoint
        was handed over: True ends the run there (an early stop; the steps so far are returned)."""
        report = progress or (lambda _p: None)
        save = on_checkpoint or (lambda _c: None)
        step, losses = 0, []
        if resume is not None:
            self.restore(resume)
            _unpack_optimizer(self.optimizer, resume.optimizer)
            step, losses = resume.step, list(resume.losses)
        saved = resume  # the latest checkpoint the caller has: handed over by this run, or resumed from
        started, first_step = time.monotonic(), step
        size = self.config.batch_size
        order: tuple[int, Sequence[ItemT]] = (-1, [])
        self._set_training(True)
        try:
            while step < self.total_steps:
                if cancelled is not None and cancelled():
                    if saved is None or saved.step != step:
                        saved = self._checkpoint(step, losses)
                        self._hand_over(saved, save)
                    raise TrainingCancelled(saved)
                epoch, within = divmod(step, self.steps_per_epoch)
                if order[0] != epoch:
                    order = (epoch, self.epoch_items(epoch))
                batch = order[1][within * size : (within + 1) * size]
                try:
                    total = self._gradients(batch)
                except torch.OutOfMemoryError:
                    if self.checkpointing:
                        raise
                    self._start_checkpointing()
                    total = self._gradients(batch)
                nn.utils.clip_grad_norm_(self.trained, self.config.max_grad_norm)
                self.optimizer.step()
                step += 1
                losses.append(total)
                rate = (time.monotonic() - started) / (step - first_step)
                report(Progress("training", step, self.total_steps, total, rate * (self.total_steps - step), epoch))
                if step % self.steps_per_epoch == 0:
                    saved = self._checkpoint(step, losses)
                    self._hand_over(saved, save)
                    if stop is not None and stop():
                        break
        finally:
            self._set_training(False)
        return losses
