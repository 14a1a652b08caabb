"""Concept slots: attach a concept's learned rows to the model without writing the base matrices.

Each attached concept occupies 33 of the tokenizer's unused reserved tokens (identifier, 16 generation,
16 understanding). Its rows live in a small `ConceptParams` module of their own; the model's input
embedding and output head are wrapped so that, at run time, slot ids read their embedding from those
rows and slot logits are computed from their head rows. The base tensors are never modified, and only
the concept's parameters receive gradients.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch
from torch import nn
from transformers import PreTrainedTokenizerBase

from engine.concepts.layout import N_GENERATION, SLOT_SIZE
from engine.concepts.state import ConceptState
from engine.errors import SlotError
from engine.model.chameleon import FamiliarChameleon

RESERVED_TOKEN = re.compile(r"^<reserved\d+>$")
MEAN_CHUNK_ROWS = 4096


@dataclass(frozen=True)
class Slot:
    """The vocabulary ids a concept occupies."""

    ids: tuple[int, ...]

    @property
    def identifier(self) -> int:
        return self.ids[0]

    @property
    def generation(self) -> tuple[int, ...]:
        return self.ids[1 : 1 + N_GENERATION]

    @property
    def understanding(self) -> tuple[int, ...]:
        return self.ids[1 + N_GENERATION :]


class ConceptParams(nn.Module):
    """The trainable rows of one concept (float32)."""

    def __init__(self, state: ConceptState, device: torch.device) -> None:
        super().__init__()
        self.embed = nn.Parameter(state.embed.detach().clone().to(device, torch.float32))
        self.head = nn.Parameter(state.head.detach().clone().to(device, torch.float32))


class _Bank:
    """The attached concepts, concatenated for the wrappers."""

    def __init__(self, vocab_size: int, device: torch.device) -> None:
        self.params: dict[str, ConceptParams] = {}
        self.slots: dict[str, Slot] = {}
        self.lookup = torch.full((vocab_size,), -1, dtype=torch.long, device=device)
        self.ids = torch.empty(0, dtype=torch.long, device=device)

    def rebuild(self) -> None:
        self.lookup.fill_(-1)
        ids = [i for name in self.params for i in self.slots[name].ids]
        self.ids = torch.tensor(ids, dtype=torch.long, device=self.lookup.device)
        self.lookup[self.ids] = torch.arange(len(ids), device=self.lookup.device)

    def rows(self, which: str) -> torch.Tensor:
        return torch.cat([getattr(p, which) for p in self.params.values()])


class _SlotWrapper(nn.Module):
    """A base layer (kept as `base`, never written) plus the attached concepts' rows."""

    def __init__(self, base: nn.Module, bank: _Bank) -> None:
        super().__init__()
        self.base = base
        self._bank = bank

    @property
    def weight(self) -> torch.Tensor:
        return self.base.weight


class ConceptEmbedding(_SlotWrapper):
    """Input embedding whose slot ids read from the attached concepts' rows."""

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        out = self.base(input_ids)
        if not self._bank.params:
            return out
        index = self._bank.lookup[input_ids]
        mask = index >= 0
        if not bool(mask.any()):
            return out
        # A one-hot matmul rather than indexing: its gradient is a plain matmul, deterministic on CPU,
        # where the scatter-add behind an indexing gradient is not (runs must repeat exactly for resume).
        rows = self._bank.rows("embed").to(out.dtype)
        onehot = nn.functional.one_hot(index.clamp(min=0), rows.shape[0]).to(out.dtype)
        return torch.where(mask.unsqueeze(-1), onehot @ rows, out)


class ConceptHead(_SlotWrapper):
    """Output head whose slot logits come from the attached concepts' head rows."""

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        logits = self.base(hidden)
        if not self._bank.params:
            return logits
        slot_logits = hidden @ self._bank.rows("head").to(hidden.dtype).T
        return logits.index_copy(-1, self._bank.ids, slot_logits.to(logits.dtype))

    def rows(self, ids: torch.Tensor) -> torch.Tensor:
        """The head's rows for vocabulary `ids`: an attached concept's own row where an id is in its slot."""
        rows = self.base.weight[ids]
        if not self._bank.params:
            return rows
        index = self._bank.lookup[ids]
        slot_rows = self._bank.rows("head").to(rows.dtype)[index.clamp(min=0)]
        return torch.where((index >= 0).unsqueeze(-1), slot_rows, rows)


def free_reserved_ids(tokenizer: PreTrainedTokenizerBase, vocab_size: int) -> list[int]:
    """Reserved tokens the tokenizer does not use for anything (separator and other specials excluded)."""
    used = set(tokenizer.all_special_ids)
    return sorted(
        i
        for token, i in tokenizer.get_vocab().items()
        if RESERVED_TOKEN.match(token) and i not in used and i < vocab_size
    )


def mean_row(weight: torch.Tensor, ids: list[int], chunk: int = MEAN_CHUNK_ROWS) -> torch.Tensor:
    """The float32 mean of `weight`'s rows `ids` (of all rows when `ids` is empty), never casting more than
    `chunk` rows at a time: a float32 copy of a whole bfloat16 65536 x 4096 matrix would be 1 GiB."""
    if ids:
        return weight[ids].float().mean(0)
    total = torch.zeros(weight.shape[1], dtype=torch.float32, device=weight.device)
    for start in range(0, weight.shape[0], chunk):
        total += weight[start : start + chunk].float().sum(0)
    return total / weight.shape[0]


class ConceptSlots:
    """Attaches and detaches concepts on one loaded model."""

    def __init__(self, model: FamiliarChameleon, tokenizer: PreTrainedTokenizerBase, fingerprint: str) -> None:
        self.model = model
        self.fingerprint = fingerprint
        device = model.get_input_embeddings().weight.device  # a new ConceptSlots replaces earlier wrappers
        self._bank = _Bank(model.config.vocab_size, device)
        self._device = device
        free = free_reserved_ids(tokenizer, model.config.vocab_size)
        self._free = [Slot(tuple(free[i : i + SLOT_SIZE])) for i in range(0, len(free) - SLOT_SIZE + 1, SLOT_SIZE)]
        if not self._free:
            raise SlotError("the tokenizer has no unused reserved tokens for concept slots")
        embedding, head = model.model.embed_tokens, model.lm_head
        model.model.embed_tokens = ConceptEmbedding(getattr(embedding, "base", embedding), self._bank)
        model.lm_head = ConceptHead(getattr(head, "base", head), self._bank)

    @property
    def capacity(self) -> int:
        return len(self._free) + len(self._bank.slots)

    def names(self) -> list[str]:
        return list(self._bank.params)

    def _key(self, name: str) -> str:
        key = name.lower()
        if key not in self._bank.params:
            raise SlotError(f"unknown concept <{name}>: it is not in the library or not loaded")
        return key

    def attach(self, state: ConceptState) -> Slot:
        """Give `state` a free slot; refuses states made for another base model."""
        state = ConceptState.from_bytes(state.to_bytes(), self.fingerprint, source=f"concept <{state.name}>")
        key = state.name.lower()
        if key in self._bank.params:
            raise SlotError(f"concept <{state.name}> is already loaded")
        if state.hidden_size != self.model.config.hidden_size:
            raise SlotError(
                f"concept <{state.name}> has hidden size {state.hidden_size}, model {self.model.config.hidden_size}"
            )
        if not self._free:
            raise SlotError(f"all {self.capacity} concept slots are in use; detach a concept first")
        slot = self._free.pop(0)
        self._bank.params[key] = ConceptParams(state, self._device)
        self._bank.slots[key] = slot
        self._bank.rebuild()
        return slot

    def detach(self, name: str) -> None:
        key = self._key(name)
        del self._bank.params[key]
        self._free.insert(0, self._bank.slots.pop(key))
        self._free.sort(key=lambda slot: slot.identifier)
        self._bank.rebuild()

    def slot(self, name: str) -> Slot:
        return self._bank.slots[self._key(name)]

    def params(self, name: str) -> ConceptParams:
        return self._bank.params[self._key(name)]

    def load(self, name: str, state: ConceptState) -> None:
        """Write `state`'s rows into the attached concept `name` (a checkpoint to resume from, the best epoch)."""
        params = self.params(name)
        if state.embed.shape != params.embed.shape or state.head.shape != params.head.shape:
            raise SlotError(
                f"concept <{name}> has rows of shape {tuple(params.embed.shape)}; the state's are "
                f"{tuple(state.embed.shape)} and {tuple(state.head.shape)}"
            )
        with torch.no_grad():
            params.embed.copy_(state.embed.to(params.embed.device))
            params.head.copy_(state.head.to(params.head.device))

    def state(self, name: str) -> ConceptState:
        """The concept's current rows as a savable state."""
        params = self.params(name)
        return ConceptState(
            name=name,
            embed=params.embed.detach().cpu().clone(),
            head=params.head.detach().cpu().clone(),
            base_fingerprint=self.fingerprint,
        )

    def initial_state(
        self,
        name: str,
        tokenizer: PreTrainedTokenizerBase,
        class_word: str | None = None,
        latent: torch.Tensor | None = None,
    ) -> ConceptState:
        """Rows to start training from: every row is the class word's mean embedding and head row
        (e.g. "dog"), or the mean over all rows when no class word is given. With `latent` (N_GENERATION rows,
        `engine.concepts.start_rows`), both latent sets' embedding rows start from it instead."""
        ids = tokenizer.encode(f" {class_word}", add_special_tokens=False) if class_word else []
        embed = mean_row(self.model.get_input_embeddings().weight.detach(), ids).cpu().expand(SLOT_SIZE, -1).clone()
        if latent is not None:
            if latent.shape != (N_GENERATION, embed.shape[1]):
                raise SlotError(f"latent start rows must be {N_GENERATION} x {embed.shape[1]}")
            embed[1 : 1 + N_GENERATION] = latent
            embed[1 + N_GENERATION :] = latent[: SLOT_SIZE - 1 - N_GENERATION]
        head = mean_row(self.model.get_output_embeddings().weight.detach(), ids)
        return ConceptState(
            name=name,
            embed=embed,
            head=head.cpu().expand(SLOT_SIZE, -1).clone(),
            base_fingerprint=self.fingerprint,
        )
