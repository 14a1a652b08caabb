"""Chat and image generation over a loaded model with attached concepts.

`Assistant.respond` implements the automatic mode: a request to draw ("Draw <bo> at the beach", see
`engine.inference.requests`) is drawn from the description it asks for; otherwise, after the prompt, the model's
own first token (its self-prompt) says whether it is about to draw (begin-of-image or a concept's first
generation token) or to talk, and Familiar follows whichever has more probability.
"""

from __future__ import annotations

import math
import secrets
from collections.abc import Iterator
from dataclasses import dataclass, replace

import torch
from PIL import Image, ImageDraw, ImageFont

from engine.concepts.prompts import Prompts
from engine.concepts.slots import ConceptSlots, Slot
from engine.concepts.state import ConceptState
from engine.inference.generation import (
    Cancelled,
    Sampling,
    first_token_probs,
    sample_image_tokens,
    stream_text_tokens,
)
from engine.inference.requests import drawing_prompt
from engine.model.loading import LoadedModel
from engine.progress import ProgressCallback

SHOWN_SIZE = 256
"""A demo picture smaller than this (the micro-world's are 32x32) is scaled up to it before it is labelled."""
LABEL_PADDING = 3


@dataclass
class GeneratedImage:
    """A decoded picture and how it was made."""

    image: Image.Image
    tokens: torch.Tensor
    prompt: str
    seed: int
    notice: str | None
    """The demo model's warning, which the picture's file must carry; None from a real model."""

    @property
    def from_demo(self) -> bool:
        return self.notice is not None


@dataclass
class Response:
    """The automatic mode's result: text, or an image."""

    kind: str
    text: str = ""
    image: GeneratedImage | None = None


def stamp_demo(image: Image.Image, label: str) -> Image.Image:
    """The picture as a user sees it from a demo model: scaled up by a whole factor (nearest neighbour, so
    every pixel stays a sharp square) when it is smaller than SHOWN_SIZE, then `label` in a thin black bar
    across the bottom. Only for showing and saving: metrics measure the unlabelled decode."""
    scale = math.ceil(SHOWN_SIZE / max(image.size))
    shown = image.resize((image.width * scale, image.height * scale), Image.Resampling.NEAREST)
    draw = ImageDraw.Draw(shown)
    font = ImageFont.load_default()
    _, top, _, bottom = draw.textbbox((0, 0), label, font=font)
    bar_top = shown.height - (bottom - top) - 2 * LABEL_PADDING
    draw.rectangle((0, bar_top, shown.width, shown.height), fill=(0, 0, 0))
    draw.text((LABEL_PADDING, bar_top + LABEL_PADDING - top), label, fill=(255, 255, 255), font=font)
    return shown


class Assistant:
    """One loaded model, its concept slots and prompt renderer."""

    def __init__(self, loaded: LoadedModel) -> None:
        self.loaded = loaded
        self.slots = ConceptSlots(loaded.model, loaded.tokenizer, loaded.fingerprint)
        tokens = loaded.image_tokenizer
        self.prompts = Prompts(loaded.tokenizer, self.slots, tokens.boi_id, tokens.eoi_id)

    @property
    def notice(self) -> str | None:
        """A warning every output must carry, or None for a real model."""
        return self.loaded.demo.warning if self.loaded.demo else None

    def attach(self, state: ConceptState) -> Slot:
        return self.slots.attach(state)

    def _with_seed(self, sampling: Sampling) -> Sampling:
        return sampling if sampling.seed is not None else replace(sampling, seed=secrets.randbelow(2**31))

    def _text_blocked_ids(self) -> torch.Tensor:
        """Ids a text answer may not contain: image tokens, image markers, non-identifier slot tokens."""
        tokens = self.loaded.image_tokenizer
        hidden = [i for name in self.slots.names() for i in self.slots.slot(name).ids[1:]]
        extra = torch.tensor([tokens.boi_id, tokens.eoi_id, *hidden], dtype=torch.long)
        return torch.cat([tokens.image_token_ids.cpu(), extra])

    def _image_ids(self, image: Image.Image | None) -> list[int] | None:
        if image is None:
            return None
        return self.loaded.image_tokenizer.encode([image])[0].tolist()

    def chat(
        self,
        question: str,
        image: Image.Image | None = None,
        sampling: Sampling | None = None,
        max_new_tokens: int = 200,
        cancelled: Cancelled | None = None,
    ) -> Iterator[str]:
        """Stream the answer's text as it is sampled. The mentioned concepts' understanding tokens open
        the answer (the self-prompt the concepts were trained with)."""
        names = self.prompts.mentions(question)
        prompt = self.prompts.prompt(question, self._image_ids(image), names)
        prompt += self.prompts.self_prompt(names, "text")
        tokens = stream_text_tokens(
            self.loaded.model,
            prompt,
            self._text_blocked_ids(),
            [self.prompts.eos_id],
            max_new_tokens,
            self._with_seed(sampling or Sampling(temperature=0.7, top_p=0.9)),
            cancelled,
        )
        produced: list[int] = []
        shown = ""
        for token in tokens:
            produced.append(token)
            text = self.prompts.render(produced)
            if not text.endswith("\ufffd") and len(text) > len(shown):
                yield text[len(shown) :]
                shown = text

    def generate(
        self,
        prompt: str,
        sampling: Sampling | None = None,
        guidance_scale: float = 1.0,
        progress: ProgressCallback | None = None,
        cancelled: Cancelled | None = None,
    ) -> GeneratedImage:
        """Draw one image for `prompt`; the mentioned concepts' generation tokens open the answer."""
        sampling = self._with_seed(sampling or Sampling(temperature=1.0, top_k=None))
        names = self.prompts.mentions(prompt)
        tokens = self.loaded.image_tokenizer
        ids = [*self.prompts.prompt(prompt, None, names), *self.prompts.self_prompt(names, "image"), tokens.boi_id]
        unconditional = [*self.prompts.prompt("", None, []), tokens.boi_id]
        image_ids = sample_image_tokens(
            self.loaded.model,
            ids,
            tokens.image_token_ids,
            tokens.tokens_per_image,
            sampling,
            guidance_scale=guidance_scale,
            unconditional_ids=unconditional,
            progress=progress,
            cancelled=cancelled,
        )
        picture = tokens.decode(image_ids.unsqueeze(0))[0]
        if self.loaded.demo:
            picture = stamp_demo(picture, self.loaded.demo.label)
        assert sampling.seed is not None
        return GeneratedImage(picture, image_ids, prompt, sampling.seed, self.notice)

    def wants_image(self, text: str, image: Image.Image | None = None) -> bool:
        """True when the model's first answer token is more likely to open an image than text."""
        names = self.prompts.mentions(text)
        probs = first_token_probs(self.loaded.model, self.prompts.prompt(text, self._image_ids(image), names))
        opens_image = [
            self.loaded.image_tokenizer.boi_id,
            *(self.slots.slot(n).generation[0] for n in self.slots.names()),
        ]
        p_image = float(probs[opens_image].sum())
        p_text = float(1 - p_image - probs[self.loaded.image_tokenizer.image_token_ids.to(probs.device)].sum())
        return p_image > p_text

    def drawing_for(self, text: str, image: Image.Image | None = None) -> str | None:
        """The prompt the automatic mode draws for `text`, or None when it answers in words: a request to draw
        (with no photo attached: drawing does not take one) becomes the description it asks for; anything
        else is drawn as written when the model's self-prompt opens an image (`wants_image`)."""
        request = drawing_prompt(text) if image is None else None
        if request is not None:
            return request
        return text if self.wants_image(text, image) else None

    def respond(
        self,
        text: str,
        image: Image.Image | None = None,
        sampling: Sampling | None = None,
        cancelled: Cancelled | None = None,
    ) -> Response:
        """Draw a request to draw; else answer or draw, as the model's own self-prompt decides."""
        prompt = self.drawing_for(text, image)
        if prompt is not None:
            return Response(kind="image", image=self.generate(prompt, sampling, cancelled=cancelled))
        return Response(kind="text", text="".join(self.chat(text, image, sampling, cancelled=cancelled)))
