"""Evaluation metrics as pure functions of answers, embeddings and logits (no model inside).

- Recognition: every concept is asked about every concept's test photos; its own are positives, the
  others' negatives. Accuracy is reported on positives, on negatives, and as their mean (weighted accuracy,
  insensitive to the class balance: a recogniser that always says yes scores 0.5).
- CLIP-I: cosine of each generated image's embedding to the normalised mean of the real photos' embeddings.
- DINO: mean pairwise cosine between generated and real images' features (DreamBooth's definition).
- CLIP-T: mean cosine between each generated image and the text of the prompt it was drawn for.
- Multiple choice: the option with the highest log-likelihood after the question is the model's answer.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TypeVar

import numpy as np
import torch

Image = TypeVar("Image")


@dataclass(frozen=True)
class Recognition:
    """Accuracy on photos of the concept, on photos without it, and their mean."""

    positive: float
    negative: float
    positives: int
    negatives: int

    @property
    def weighted(self) -> float:
        return (self.positive + self.negative) / 2


def recognition(
    says_yes: Callable[[str, Image], bool], test_photos: Mapping[str, Sequence[Image]]
) -> dict[str, Recognition]:
    """Ask `says_yes(name, photo)` of every concept about every concept's test photos."""
    results = {}
    for name in test_photos:
        positives = [says_yes(name, photo) for photo in test_photos[name]]
        negatives = [
            not says_yes(name, photo) for other, photos in test_photos.items() if other != name for photo in photos
        ]
        results[name] = Recognition(_mean(positives), _mean(negatives), len(positives), len(negatives))
    return results


def _mean(values: Sequence[bool] | Sequence[float]) -> float:
    return float(np.mean(values)) if len(values) else 0.0


def _unit(vectors: np.ndarray) -> np.ndarray:
    vectors = np.asarray(vectors, dtype=np.float64)
    if vectors.ndim != 2 or not len(vectors):
        raise ValueError(f"expected a non-empty [N, dim] array of embeddings, got shape {vectors.shape}")
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    if (norms == 0).any():
        raise ValueError("an embedding is all zeros; its cosine is undefined")
    return vectors / norms


def clip_i(generated: np.ndarray, real: np.ndarray) -> float:
    """Mean cosine of each generated embedding to the normalised mean of the (normalised) real ones."""
    centre = _unit(_unit(real).mean(0, keepdims=True))[0]
    return float((_unit(generated) @ centre).mean())


def dino_score(generated: np.ndarray, real: np.ndarray) -> float:
    """Mean cosine over every (generated, real) pair."""
    return float((_unit(generated) @ _unit(real).T).mean())


def clip_t(images: np.ndarray, texts: np.ndarray) -> float:
    """Mean cosine of each image to its own prompt (row i with row i)."""
    if len(images) != len(texts):
        raise ValueError(f"{len(images)} images but {len(texts)} prompts")
    return float((_unit(images) * _unit(texts)).sum(1).mean())


def sequence_log_likelihood(logits: torch.Tensor, ids: Sequence[int], start: int) -> float:
    """Sum of log p(ids[t] | ids[:t]) for t >= start, from logits [len(ids), vocab] of one forward pass."""
    if not 0 < start < len(ids):
        raise ValueError(f"the scored part must start inside the sequence (start {start}, length {len(ids)})")
    log_probs = torch.log_softmax(logits[start - 1 : len(ids) - 1].double(), dim=-1)
    targets = torch.tensor(ids[start:], device=logits.device)
    return float(log_probs.gather(1, targets[:, None]).sum())


def choose(option_scores: Sequence[float]) -> int:
    """Index of the best-scoring option (the first one on a tie)."""
    if not option_scores:
        raise ValueError("a question needs at least one option")
    return int(np.argmax(option_scores))


def accuracy(predictions: Sequence[int], answers: Sequence[int]) -> float:
    if len(predictions) != len(answers):
        raise ValueError(f"{len(predictions)} predictions but {len(answers)} answers")
    return _mean([p == a for p, a in zip(predictions, answers, strict=True)])
