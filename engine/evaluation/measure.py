"""Measure a model with attached concepts: recognition, multiple-choice QA, generation, and whether the
base model is untouched. The arithmetic lives in `engine.evaluation.metrics`; this module asks the model.

QA file (JSON): a list of questions, each
`{"concept": "bo", "question": "What colour is <bo>'s collar?", "options": ["red", "blue"], "answer": 0}`.
The concept is loaded for its question; the model's answer is the option whose text has the highest total
log-likelihood after the question and the concept's understanding tokens (the self-prompt of a text answer).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image

from engine.errors import EngineError
from engine.evaluation import metrics
from engine.inference.assistant import Assistant
from engine.training.selection import draw, says_yes

FIXED_PROMPT = "Describe a sunny morning at the beach."


@dataclass(frozen=True)
class Question:
    concept: str
    question: str
    options: tuple[str, ...]
    answer: int


def load_questions(path: Path | str) -> list[Question]:
    """Read and validate a QA file (format in the module docstring)."""
    try:
        raw = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise EngineError(f"cannot read the QA file {path}: {exc}") from None
    if not isinstance(raw, list):
        raise EngineError(f"{path}: expected a JSON list of questions")
    questions = []
    for number, item in enumerate(raw, 1):
        ok = (
            isinstance(item, dict)
            and isinstance(item.get("concept"), str)
            and isinstance(item.get("question"), str)
            and isinstance(item.get("options"), list)
            and len(item["options"]) >= 2
            and all(isinstance(o, str) and o for o in item["options"])
            and isinstance(item.get("answer"), int)
            and 0 <= item["answer"] < len(item["options"])
        )
        if not ok:
            raise EngineError(
                f"{path}: question {number} needs concept, question, options (2 or more strings) and answer "
                "(the index of the right option)"
            )
        questions.append(Question(item["concept"].lower(), item["question"], tuple(item["options"]), item["answer"]))
    return questions


@torch.no_grad()
def option_scores(
    assistant: Assistant,
    concept: str | None,
    question: str,
    options: Sequence[str],
    image_ids: Sequence[int] | None = None,
) -> list[float]:
    """Each option's total log-likelihood as the answer to `question` about `concept` (None: a question in
    plain words, only the concepts it mentions in the prompt), about the image `image_ids` if given."""
    prompts = assistant.prompts
    names = list(dict.fromkeys([*([concept] if concept else []), *prompts.mentions(question)]))
    prefix = prompts.prompt(question, image_ids, names) + prompts.self_prompt(names, "text")
    scores = []
    for option in options:
        ids = prefix + prompts.text(f" {option}")
        logits = assistant.loaded.model(input_ids=torch.tensor([ids], device=assistant.loaded.device)).logits[0]
        scores.append(metrics.sequence_log_likelihood(logits, ids, len(prefix)))
    return scores


def qa_predictions(assistant: Assistant, questions: Sequence[Question]) -> list[int]:
    """The chosen option of every question (its concept must be attached)."""
    return [metrics.choose(option_scores(assistant, q.concept, q.question, q.options)) for q in questions]


def recognition(
    assistant: Assistant, test_photos: Mapping[str, Sequence[Sequence[int]]]
) -> dict[str, metrics.Recognition]:
    """Every attached concept asked "Is <name> in this photo?" about every concept's test photos (VQ ids)."""
    return metrics.recognition(lambda name, ids: says_yes(assistant, name, ids), test_photos)


def generate(
    assistant: Assistant, name: str, count: int, seed: int, done: Callable[[], None] | None = None
) -> list[Image.Image]:
    """`count` unlabelled pictures for "A photo of <name>.", seeds `seed`, `seed + 1`, ..."""
    images = []
    for index in range(count):
        images.append(draw(assistant, name, seed + index))
        if done is not None:
            done()
    return images


@torch.no_grad()
def fixed_prompt_logits(assistant: Assistant) -> torch.Tensor:
    """The logits of every position of a fixed text prompt, with whatever concepts are attached."""
    ids = assistant.prompts.prompt(FIXED_PROMPT, None, [])
    return assistant.loaded.model(input_ids=torch.tensor([ids], device=assistant.loaded.device)).logits[0].cpu()


def base_difference(assistant: Assistant, reference: torch.Tensor) -> float:
    """Largest absolute logit difference on the fixed prompt between `assistant` with every concept detached
    and `reference` (`fixed_prompt_logits` of the freshly loaded base model): 0.0 means attaching, training
    and using concepts left the base model untouched."""
    for name in list(assistant.slots.names()):
        assistant.slots.detach(name)
    return float((fixed_prompt_logits(assistant) - reference).abs().max())
