"""Every token sequence Familiar feeds the model, rendered in one place.

Formats (ids shown as text; `<g*>`/`<u*>` are a concept's 16 generation / understanding slot tokens):

    concept prefix   <bo> is <g1>...<g16><u1>...<u16>.
    prompt           <s>{prefixes}User: {<racm3:break> image tokens <eoss>}{text}\\nAssistant:
    text answer      <u1>...<u16>{answer}</s>            (self-prompt: understanding set first)
    image answer     <g1>...<g16><racm3:break>{1024 image tokens}<eoss></s>   (generation set first)

`PromptLayout` changes how a concept's tokens are used, for the paper's ablations (fewer latent tokens, one
shared set for both tasks, no self-prompting); the product always uses the default layout.

The user writes `<bo>`; here it becomes the identifier token of the slot where `bo` is attached, and
model output is mapped back the same way. A mention of a concept that is not attached is an error.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

from transformers import PreTrainedTokenizerBase

from engine.concepts.layout import DEFAULT_LAYOUT, N_GENERATION, PromptLayout
from engine.concepts.slots import ConceptSlots

# A concept name as the library accepts it (store/validation.py NAME_PATTERN): a letter of any alphabet,
# then up to 31 letters, digits, '_' or '-'.
MENTION = re.compile(r"<([^\W\d_][\w-]{0,31})>")
CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")
IGNORE = -100
USER = "User: "
ASSISTANT = "\nAssistant:"

Task = Literal["text", "image"]


@dataclass
class Sample:
    """A training sequence: ids, and labels that are IGNORE except on the target."""

    ids: list[int]
    labels: list[int]
    decision: tuple[int, ...] = ()
    """Positions in `ids` of the tokens that decide a recognition answer (Yes or No), marked where
    `Recipe.answer_weight` weighs them in the loss (not at the default 1)."""


class Prompts:
    """Renders prompts and targets for one tokenizer and one set of concept slots."""

    def __init__(
        self,
        tokenizer: PreTrainedTokenizerBase,
        slots: ConceptSlots,
        boi_id: int,
        eoi_id: int,
        layout: PromptLayout = DEFAULT_LAYOUT,
    ) -> None:
        if not 1 <= layout.tokens <= N_GENERATION:
            raise ValueError(f"a layout uses 1 to {N_GENERATION} latent tokens, not {layout.tokens}")
        self.tokenizer = tokenizer
        self.slots = slots
        self.boi_id = boi_id
        self.eoi_id = eoi_id
        self.layout = layout
        self.bos_id = int(tokenizer.bos_token_id)
        self.eos_id = int(tokenizer.eos_token_id)

    def mentions(self, text: str) -> list[str]:
        """Concept names written as `<name>` in `text`, in order, without repeats."""
        return list(dict.fromkeys(match.group(1).lower() for match in MENTION.finditer(text)))

    def text(self, text: str) -> list[int]:
        """Token ids of `text`, with each `<name>` mapped to its concept's identifier token."""
        ids: list[int] = []
        position = 0
        for match in MENTION.finditer(text):
            ids += self._encode(text[position : match.start()])
            ids.append(self.slots.slot(match.group(1)).identifier)
            position = match.end()
        return ids + self._encode(text[position:])

    def _encode(self, text: str) -> list[int]:
        return list(self.tokenizer.encode(text, add_special_tokens=False)) if text else []

    def generation_ids(self, name: str) -> tuple[int, ...]:
        """The concept's generation tokens in this layout."""
        return self.slots.slot(name).generation[: self.layout.tokens]

    def understanding_ids(self, name: str) -> tuple[int, ...]:
        """The concept's understanding tokens in this layout (the generation set when shared)."""
        if self.layout.shared:
            return self.generation_ids(name)
        return self.slots.slot(name).understanding[: self.layout.tokens]

    def concept_prefix(self, name: str) -> list[int]:
        """`<name> is <g1>...<g16><u1>...<u16>.` followed by a space (one set when shared)."""
        latent = self.generation_ids(name) + (() if self.layout.shared else self.understanding_ids(name))
        return [self.slots.slot(name).identifier, *self._encode(" is"), *latent, *self._encode(". ")]

    def image(self, image_ids: Sequence[int]) -> list[int]:
        return [self.boi_id, *image_ids, self.eoi_id]

    def prompt(
        self, text: str, image_ids: Sequence[int] | None = None, concepts: Iterable[str] | None = None
    ) -> list[int]:
        """A user turn ready for the assistant's answer. Concepts default to those mentioned in `text`."""
        names = self.mentions(text) if concepts is None else [c.lower() for c in concepts]
        ids = [self.bos_id]
        for name in names:
            ids += self.concept_prefix(name)
        ids += self._encode(USER)
        if image_ids is not None:
            ids += self.image(image_ids)
        return ids + self.text(text) + self._encode(ASSISTANT)

    def self_prompt(self, names: Iterable[str], task: Task) -> list[int]:
        """The token sets that open an answer: understanding sets for text, generation sets for images
        (none without self-prompting)."""
        ids: list[int] = []
        if not self.layout.self_prompting:
            return ids
        for name in names:
            ids += self.understanding_ids(name) if task == "text" else self.generation_ids(name)
        return ids

    def text_target(self, answer: str, names: Iterable[str]) -> list[int]:
        return [*self.self_prompt(names, "text"), *self.text(f" {answer}"), self.eos_id]

    def image_target(self, image_ids: Sequence[int], names: Iterable[str]) -> list[int]:
        return [*self.self_prompt(names, "image"), *self.image(image_ids), self.eos_id]

    def sample(self, prompt_ids: Sequence[int], target_ids: Sequence[int]) -> Sample:
        """A training sample whose loss covers only the target."""
        return Sample(ids=[*prompt_ids, *target_ids], labels=[IGNORE] * len(prompt_ids) + list(target_ids))

    def render(self, ids: Iterable[int]) -> str:
        """Model output as text: identifiers back to `<name>`, other slot tokens dropped."""
        identifiers = {self.slots.slot(name).identifier: name for name in self.slots.names()}
        hidden = {i for name in self.slots.names() for i in self.slots.slot(name).ids}
        pieces: list[str] = []
        run: list[int] = []
        for token in ids:
            if token in identifiers or token in hidden:
                pieces.append(self.tokenizer.decode(run, skip_special_tokens=True))
                run = []
                if token in identifiers:
                    pieces.append(f"<{identifiers[token]}>")
            else:
                run.append(token)
        pieces.append(self.tokenizer.decode(run, skip_special_tokens=True))
        return CONTROL.sub("", "".join(pieces))
