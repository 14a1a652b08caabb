"""Score a training checkpoint the way the best one is chosen: recognition accuracy on held-out photos
and negatives, and the similarity of a generated picture to the real photos.

Recognition asks "Is <name> in this photo?" and compares the model's next-token probability of "Yes"
and "No" after the understanding tokens (the self-prompt); accuracy is reported on positives, on
negatives, and as their mean (the weighted accuracy, insensitive to the class balance). A score with nothing
to measure it on (no held-out photo, no negative) is None, "not measured", never 0; recognition is measured
only where both exist, and without it there is no `score`: the caller then chooses by a loss instead
(engine/training/personalization.py). The scores keep the counts they were measured on and the one picture drawn.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field

import torch
from PIL import Image

from engine.inference.assistant import Assistant
from engine.inference.generation import Sampling, sample_image_tokens
from engine.training.data import Decision

ImageSimilarity = Callable[[Sequence[Image.Image], Sequence[Image.Image]], float]
QUESTION = "Is <{n}> in this photo?"


@dataclass
class Scores:
    """A checkpoint's scores, the counts they were measured on, and the picture drawn (not in `as_dict`)."""

    recognition_positive: float | None
    recognition_negative: float | None
    recognition: float | None
    image_similarity: float | None
    score: float | None
    held_out_photos: int = 0
    held_out_negatives: int = 0
    picture: Image.Image | None = field(default=None, repr=False)

    def as_dict(self) -> dict[str, float | None]:
        """Every score, None where it was not measured (image similarity only where it was asked for), and the
        counts."""
        scores = {k: v for k, v in asdict(self).items() if k != "picture"}
        if scores["image_similarity"] is None:
            del scores["image_similarity"]
        return scores


def answer_tokens(assistant: Assistant) -> tuple[list[int], int, int]:
    """(shared prefix, Yes token, No token): " Yes" and " No" may start with the same tokens (a lone space
    in a byte-level BPE), so the decision is read at the first token where they differ (`Decision`)."""
    decision = Decision.of(assistant.loaded.tokenizer)
    return list(decision.prefix), decision.yes[0], decision.no[0]


@torch.no_grad()
def yes_no_logits(
    assistant: Assistant, question: str, image_ids: Sequence[int], names: Sequence[str]
) -> tuple[float, float]:
    """The logits of " Yes" and " No" as the answer to `question` about this image, with the concepts `names` in
    the prompt (none for a question in plain words)."""
    prompts = assistant.prompts
    prefix, yes, no = answer_tokens(assistant)
    ids = prompts.prompt(question, image_ids, names) + prompts.self_prompt(names, "text") + prefix
    device = assistant.loaded.device
    logits = assistant.loaded.model(input_ids=torch.tensor([ids], device=device), logits_to_keep=1).logits[0, -1]
    return float(logits[yes]), float(logits[no])


def answers_yes(assistant: Assistant, question: str, image_ids: Sequence[int], names: Sequence[str]) -> bool:
    """Whether " Yes" is likelier than " No" as the answer to `question` about this image."""
    yes, no = yes_no_logits(assistant, question, image_ids, names)
    return yes > no


def says_yes(assistant: Assistant, name: str, image_ids: Sequence[int]) -> bool:
    """Whether the model answers yes to the recognition question about this image."""
    return answers_yes(assistant, QUESTION.format(n=name), image_ids, [name])


def yes_probability(assistant: Assistant, name: str, image_ids: Sequence[int]) -> float:
    """P(" Yes") / (P(" Yes") + P(" No")) as the answer to the recognition question about this image."""
    yes, no = yes_no_logits(assistant, QUESTION.format(n=name), image_ids, [name])
    return float(torch.sigmoid(torch.tensor(yes - no)))


def recognition_accuracy(
    assistant: Assistant,
    name: str,
    positives: Sequence[Sequence[int]],
    negatives: Sequence[Sequence[int]],
    soft: bool = False,
) -> tuple[float | None, float | None]:
    """(accuracy on photos of the concept, accuracy on photos without it); None where there are none. `soft`
    counts each answer by its probability (the mean P(yes) on photos of the concept, P(no) on the others), which
    tells apart checkpoints that a handful of held-out photos would score the same."""

    def right(image: Sequence[int], positive: bool) -> float:
        if soft:
            p = yes_probability(assistant, name, image)
            return p if positive else 1 - p
        return float(says_yes(assistant, name, image) == positive)

    positive = sum(right(image, True) for image in positives) / len(positives) if positives else None
    negative = sum(right(image, False) for image in negatives) / len(negatives) if negatives else None
    return positive, negative


def draw(assistant: Assistant, name: str, seed: int) -> Image.Image:
    """One picture for "A photo of <name>." without the demo label (it would bias similarity)."""
    return draw_prompt(assistant, f"A photo of <{name}>.", [name], seed)


def draw_prompt(assistant: Assistant, text: str, names: Sequence[str], seed: int) -> Image.Image:
    """One unlabelled picture for `text`, with the concepts `names` in the prompt."""
    tokens = assistant.loaded.image_tokenizer
    prompts = assistant.prompts
    ids = [*prompts.prompt(text, None, names), *prompts.self_prompt(names, "image"), tokens.boi_id]
    image_ids = sample_image_tokens(
        assistant.loaded.model, ids, tokens.image_token_ids, tokens.tokens_per_image, Sampling(seed=seed)
    )
    return tokens.decode(image_ids.unsqueeze(0))[0]


def score(
    assistant: Assistant,
    name: str,
    positives: Sequence[Sequence[int]],
    negatives: Sequence[Sequence[int]],
    real_photos: Sequence[Image.Image] = (),
    similarity: ImageSimilarity | None = None,
    seed: int = 0,
    sample: bool = False,
    soft: bool = False,
) -> Scores:
    """Recognition (`soft`: by probability, `recognition_accuracy`) and, where a similarity function is given,
    image similarity; `score` is their mean, None where recognition is not measured (no held-out photo or no
    negative). One picture is drawn when similarity is measured or `sample` asks for it, and kept in the scores."""
    positive, negative = recognition_accuracy(assistant, name, positives, negatives, soft)
    recognition = None if positive is None or negative is None else (positive + negative) / 2
    measure = similarity is not None and bool(real_photos)
    picture = draw(assistant, name, seed) if measure or sample else None
    image_similarity = None
    if similarity is not None and measure and picture is not None:
        image_similarity = float(similarity([picture], real_photos))
    counts = {"held_out_photos": len(positives), "held_out_negatives": len(negatives), "picture": picture}
    if recognition is None:
        return Scores(positive, negative, None, image_similarity, None, **counts)
    parts = [recognition] if image_similarity is None else [recognition, image_similarity]
    return Scores(positive, negative, recognition, image_similarity, sum(parts) / len(parts), **counts)
