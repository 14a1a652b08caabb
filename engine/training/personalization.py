"""Personalize one concept: the recipe's one implementation, called by `familiar train`, the app, `familiar eval`
and the benchmark alike.

The caller gathers what the concept is learned from (`ConceptPhotos`: its photos, the photos held out to score
checkpoints, negatives and soft positives, however it found them); `personalize` does the rest, always the same
way: the base model describes the photos, the concept is attached with its start rows, the samples are built,
the start rows are scored (before the first step) as the step-0 candidate, the `Trainer` runs, every epoch's
checkpoint is scored on the held-out photos and negatives, and the best candidate is chosen and left attached: where
training never beats the start rows (rows spelled from a good description can be hard to beat), the start rows are
kept. Each check (the start rows' and every checkpoint's) goes to `on_check` with its scores and the one picture the
scoring drew.

Where recognition cannot be measured (no negatives at all, or no held-out photo) the checkpoints have no `score`;
the best is then the one with the lowest loss on the held-out photos (their recognition and drawing samples,
`held_out_loss`), or the lowest training loss of its epoch where no photo is held out, and a `Notice` says so.

Early stopping: with `Recipe.patience` P > 0, the run ends after the epoch that made P checkpoints in a row without
a strictly better value of that same criterion; it says so in a status line and ends as a finished run.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

import torch
from PIL import Image

from engine.concepts.layout import N_GENERATION
from engine.concepts.prompts import Sample
from engine.concepts.start_rows import agreed_description, description_rows, photo_rows
from engine.concepts.state import ConceptState
from engine.errors import EngineError
from engine.inference.assistant import Assistant
from engine.progress import Notice, ProgressCallback, Status
from engine.training.data import ConceptData, augmentations, build_samples, class_word, describe_photos
from engine.training.recipe import Recipe, held_out_negatives
from engine.training.selection import ImageSimilarity, Scores, score
from engine.training.trainer import Checkpoint, Trainer

ENCODE_BATCH = 8


@dataclass
class ConceptPhotos:
    """What a concept is learned from. Images of other things are VQ token ids, since they may come
    precomputed from an index; `negatives` are in priority order (the first ones are held out for scoring)."""

    name: str
    kind: str
    photos: list[Image.Image]
    held_out: list[Image.Image] = field(default_factory=list)
    negatives: list[list[int]] = field(default_factory=list)
    facts: str = ""
    soft_positive_tiers: list[tuple[int, list[list[int]]]] = field(default_factory=list)
    similarity: ImageSimilarity | None = None
    start: ConceptState | None = None
    """Rows to start from (an instant concept's, to refine it); else the class word's."""
    descriptions: list[str] | None = None
    """The base model's descriptions of `photos`, when the caller already has them."""


@dataclass
class Scored:
    """A checkpoint and its scores on the held-out data (`score` decides), with the epoch's mean loss."""

    checkpoint: Checkpoint
    metrics: dict[str, float | None]


@dataclass
class Check:
    """What the concept showed at `step` (0: the start rows, before training): the scores and a picture."""

    step: int
    metrics: dict[str, float | None]
    picture: Image.Image | None


@dataclass
class Personalized:
    """The chosen checkpoint (now attached) and what the run did."""

    chosen: Scored
    samples: int
    steps: int
    """Steps run: fewer than the recipe's epochs make when the run stopped early."""
    epochs: int
    losses: list[float]
    stopped_early: bool = False
    epoch_tokens: int = 0
    """Tokens in one epoch's samples (padding not counted): what an epoch's FLOPs are counted from."""


def start_state(
    assistant: Assistant,
    name: str,
    kind: str,
    facts: str,
    photo_ids: Sequence[Sequence[int]],
    descriptions: Sequence[str],
    recipe: Recipe,
) -> ConceptState:
    """The rows a new concept trains from: the class word's, with the latent rows from the photos' image tokens
    or from the words of the description the others agree with most where `recipe.start` says so (the class word's
    without descriptions)."""
    tokenizer = assistant.loaded.tokenizer
    weight = assistant.loaded.model.get_input_embeddings().weight.detach()
    latent = None
    if recipe.start == "photos":
        latent = photo_rows(weight, photo_ids, N_GENERATION)
    elif recipe.start == "description" and descriptions:
        latent = description_rows(
            weight, tokenizer.encode(f" {agreed_description(descriptions)}", add_special_tokens=False), N_GENERATION
        )
    return assistant.slots.initial_state(name, tokenizer, class_word(kind, facts), latent)


def choose_start(
    assistant: Assistant,
    name: str,
    given: Scores,
    own: ConceptState,
    check: Callable[[], Scores],
    report: Callable[[str], None],
) -> Scores:
    """Between the given start rows (attached to `name`, scoring `given`) and the recipe's `own` start rows, leave
    attached the ones with the better held-out score and return their scores: the given rows among equals and where
    recognition is not measured (a refined instant concept starts from its instant rows unless the recipe's own
    start scores better)."""
    if given.score is None:
        return given
    kept = assistant.slots.state(name)
    assistant.slots.load(name, own)
    mine = check()
    if mine.score is not None and mine.score > given.score:
        report(f"starting from the recipe's own rows (held-out score {mine.score:.3f}, the given {given.score:.3f})")
        return mine
    assistant.slots.load(name, kept)
    return given


def training_photo_ids(assistant: Assistant, photos: Sequence[Image.Image], recipe: Recipe) -> list[list[int]]:
    """Image token ids of the photos a concept trains on (with their augmentations where the recipe says so)."""
    return encode(assistant, augmentations(photos) if recipe.augment else photos)


def encode(assistant: Assistant, images: Sequence[Image.Image]) -> list[list[int]]:
    """VQ token ids of `images`, in batches."""
    tokenizer = assistant.loaded.image_tokenizer
    out: list[list[int]] = []
    for start in range(0, len(images), ENCODE_BATCH):
        out += [row.tolist() for row in tokenizer.encode(list(images[start : start + ENCODE_BATCH]))]
    return out


CRITERIA = {"score": "held-out score", "held_out_loss": "held-out loss", "loss": "training loss"}
"""What checkpoints are compared by, in order of preference, and how the run names it."""


def criterion(candidates: Sequence[Scored]) -> tuple[str, float]:
    """The metric checkpoints are compared by, and its sign (1: higher is better): the score where every candidate
    has one; else (recognition not measured) the held-out loss, else the training loss (which the start rows, never
    trained on, lack)."""
    if all(c.metrics.get("score") is not None for c in candidates):
        return "score", 1.0
    key = "held_out_loss" if all(c.metrics.get("held_out_loss") is not None for c in candidates) else "loss"
    return key, -1.0


def ranked(candidates: Sequence[Scored], start_margin: float = 0.0) -> list[tuple[float, int, Scored]]:
    """The candidates that have the `criterion`'s value, as (value with higher better, step, candidate) by step;
    where the criterion is the held-out score, the start rows' (step 0) counts `start_margin` higher, so that an
    epoch must beat them by that much (`Recipe.start_margin`)."""
    key, sign = criterion(candidates)
    bonus = start_margin if key == "score" else 0.0
    found = [
        (sign * c.metrics[key] + bonus * (c.checkpoint.step == 0), c.checkpoint.step, c)
        for c in candidates
        if c.metrics.get(key) is not None
    ]
    return sorted(found, key=lambda item: item[1])


def best(candidates: Sequence[Scored], start_margin: float = 0.0) -> Scored:
    """The best checkpoint by `criterion` (`ranked`); the later one among equals."""
    return max(ranked(candidates, start_margin), key=lambda item: item[:2])[2]


def epochs_without_improvement(candidates: Sequence[Scored], start_margin: float = 0.0) -> int:
    """How many checkpoints came after the first one to reach the best value by `criterion` (`ranked`; a tie is no
    improvement)."""
    values = [value for value, _step, _c in ranked(candidates, start_margin)]
    return len(values) - 1 - values.index(max(values))


def selection_notice(negatives: int, held_out: int) -> Notice | None:
    """What checkpoint selection falls back to when recognition cannot be measured; None when it can."""
    if negatives and held_out:
        return None
    missing = "no negatives (no other concepts and no index)" if not negatives else "no held-out photo"
    if held_out:
        by = f"the loss on the {held_out} held-out photo{'s' * (held_out > 1)}"
    else:
        by = "the training loss (no photo is held out: a concept needs 3 or more photos for that)"
    return Notice(f"{missing}: recognition is not measured; checkpoints are chosen by {by}")


@torch.no_grad()
def held_out_loss(trainer: Trainer, samples: Sequence[Sample]) -> float:
    """The mean over `samples` (the held-out photos' own) of each one's training loss, without updating anything:
    one sample at a time, so the figure does not depend on the run's micro-batch."""
    return sum(float(trainer.loss([sample])) for sample in samples) / len(samples)


def personalize(
    assistant: Assistant,
    concept: ConceptPhotos,
    recipe: Recipe,
    *,
    progress: ProgressCallback | None = None,
    cancelled: Callable[[], bool] | None = None,
    on_checkpoint: Callable[[Scored], None] | None = None,
    on_check: Callable[[Check], None] | None = None,
    status: Status | None = None,
    resume: Checkpoint | None = None,
    earlier: Sequence[Scored] = (),
) -> Personalized:
    """Train `concept` by `recipe` on the assistant's model and attach the best checkpoint's rows.

    `on_checkpoint` gets every scored checkpoint as it is made (to store it), then `on_check` its check; the first is
    the start rows' (step 0, no optimizer moments and no training loss), made before the first step unless `earlier`
    has it. `resume` continues a run from its last checkpoint, and `earlier` are that run's checkpoints scored
    before it stopped: the best is chosen among them too. Cancelling raises `TrainingCancelled` after the cancel
    checkpoint went to the trainer's callback. The concept must not be attached yet; it is left attached.
    """
    if assistant.prompts.layout != recipe.layout:
        raise EngineError("the assistant's prompt layout differs from the recipe's")
    if not concept.photos:
        raise EngineError(f"<{concept.name}> has no training photos: add 3-5 photos first")
    report = status or (lambda _m: None)
    name = concept.name
    descriptions = concept.descriptions
    if descriptions is None:
        descriptions = []
        if recipe.describe_photos:
            report("describing the photos with the base model")
            descriptions = describe_photos(assistant, concept.photos)
    report("encoding photos")
    photo_ids = training_photo_ids(assistant, concept.photos, recipe)
    start = concept.start or start_state(assistant, name, concept.kind, concept.facts, photo_ids, descriptions, recipe)
    assistant.attach(replace(start, name=name))
    held = held_out_negatives(len(concept.negatives))
    data = ConceptData(
        name=name,
        kind=concept.kind,
        photos=photo_ids,
        negatives=concept.negatives[held:],
        facts=concept.facts,
        descriptions=descriptions,
        soft_positive_tiers=concept.soft_positive_tiers,
    )
    samples = build_samples(assistant.prompts, data, recipe)
    trainer = Trainer(assistant, name, samples, recipe)
    report(f"{len(samples)} samples, {trainer.total_steps} steps")
    held_positive, held_negative = encode(assistant, concept.held_out), concept.negatives[:held]
    held_views = encode(assistant, augmentations(concept.held_out)) if recipe.held_out_views else held_positive
    notice = selection_notice(len(held_negative), len(held_positive))
    held_samples: list[Sample] = []
    if notice is not None:
        report(notice)
        if held_positive:
            plain = replace(recipe, qa_repeats=0, soft_positives=0)
            held_samples = build_samples(assistant.prompts, ConceptData(name, concept.kind, held_positive), plain)
    scored = list(earlier)
    stopping = False

    def check() -> Scores:
        return score(
            assistant,
            name,
            held_views,
            held_negative,
            concept.photos,
            concept.similarity,
            seed=recipe.seed,
            sample=recipe.sample_checkpoints,
            soft=recipe.soft_selection,
        )

    def keep(checkpoint: Checkpoint, scores: Scores, loss: float | None) -> None:
        metrics = scores.as_dict() if loss is None else {**scores.as_dict(), "loss": loss}
        if held_samples:
            metrics["held_out_loss"] = held_out_loss(trainer, held_samples)
        result = Scored(checkpoint, metrics)
        scored.append(result)
        if on_checkpoint is not None:
            on_checkpoint(result)
        if on_check is not None:
            on_check(Check(checkpoint.step, result.metrics, scores.picture))

    if resume is None and not any(c.checkpoint.step == 0 for c in scored):
        report("checking the start rows before training")
        scores = check()
        if concept.start is not None:
            own = start_state(assistant, name, concept.kind, concept.facts, photo_ids, descriptions, recipe)
            scores = choose_start(assistant, name, scores, own, check, report)
        keep(Checkpoint(optimizer=b"", step=0, epoch=0, state=assistant.slots.state(name)), scores, None)

    def on_epoch(checkpoint: Checkpoint) -> None:
        nonlocal stopping
        report(f"scoring the checkpoint at step {checkpoint.step}")
        window = checkpoint.losses[-trainer.steps_per_epoch :]
        keep(checkpoint, check(), sum(window) / max(len(window), 1))
        stale = epochs_without_improvement(scored, recipe.start_margin)
        if recipe.patience and stale >= recipe.patience and not checkpoint.final:
            stopping = True
            what = CRITERIA[criterion(scored)[0]]
            report(f"stopped early at epoch {checkpoint.epoch}: no better {what} for {stale} epochs")

    losses = trainer.run(progress, cancelled, on_epoch, resume, stop=lambda: stopping)
    chosen = best(scored, recipe.start_margin)
    if chosen.checkpoint.step == 0:
        key = criterion(scored)[0]
        by = f" by {recipe.start_margin:g}" if recipe.start_margin and key == "score" else ""
        report(f"kept the start rows: no checkpoint beat them{by} on the {CRITERIA[key]}")
    assistant.slots.load(name, chosen.checkpoint.state)
    epochs = len(losses) // trainer.steps_per_epoch
    tokens = sum(len(s.ids) for s in samples)
    return Personalized(chosen, len(samples), len(losses), epochs, losses, stopping, tokens)
