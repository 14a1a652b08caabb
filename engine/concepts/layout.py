"""How many tokens a concept has and how prompts use them; no torch, so the CLI can read it at once."""

from __future__ import annotations

from dataclasses import dataclass

N_GENERATION = 16
N_UNDERSTANDING = 16
SLOT_SIZE = 1 + N_GENERATION + N_UNDERSTANDING
"""A concept's slot: its identifier, then its generation tokens, then its understanding tokens."""


@dataclass(frozen=True)
class PromptLayout:
    """How a concept's slot tokens are used. The default is Yo'Chameleon's: dual sets (generation and
    understanding) of 16 latent tokens each, the task's set opening every answer (self-prompting).
    `tokens` uses only the first n of each set; `shared` uses the generation set for both tasks."""

    tokens: int = N_GENERATION
    shared: bool = False
    self_prompting: bool = True


DEFAULT_LAYOUT = PromptLayout()
"""The product's layout; every concept in a library is used this way."""
