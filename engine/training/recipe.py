"""The personalization recipe: every default of training a concept, written once.

The command line's defaults, the app's, `familiar eval`'s and the benchmark's conditions are all `Recipe`
values; `engine.training.personalization.personalize` is the one function that runs one. No torch here, so
the command line reads the defaults without loading anything.

Defaults and why (docs/training.md): batch 4 as in the Yo'Chameleon paper, and at most 2 epochs with up to 333 soft
positives rather than its 15 epochs with 1,000: the cheapest recipe measured to keep 95% of the paper's quality
(`familiar bench personalization` with the `full` conditions, and `familiar bench cost`; docs/training.md, "Cost");
`PAPER` is the paper's. Learning rate 1e-3
because the 66 rows are new parameters, like textual-inversion embeddings, which need a larger rate than
fine-tuning existing weights; no weight decay, since it would pull rows towards zero on steps where they get no
gradient; 40 negatives, not the paper's 200 (below); 4 recognition questions and 2 drawings
per (augmented) photo and the facts' questions twice. A fifth of the negatives (at least one) is held out to
score checkpoints, and the best checkpoint by that score is kept. Every checkpoint (and the start rows, before the
first step) gets one sample picture, so the concept can be watched as it appears: the picture the image-similarity
score draws where that is measured, else one drawn for the sample only (`sample_checkpoints=False` skips it).
Patience 3: training stops once 3 epochs in a row brought no better held-out score (docs/training.md says why); at
the default 2 epochs it never stops a run early, and it is there for runs asked to go longer.
The latent rows start from the words of the base model's description of the photos, and the start rows are a
candidate like every epoch's checkpoint (kept where no epoch beats them).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from engine.concepts.layout import PromptLayout
from engine.errors import EngineError

START_ROWS = ("class_word", "photos", "description")
"""Where a new concept's latent rows can start (`Recipe.start`)."""

HELD_OUT_NEGATIVE_SHARE = 5
"""One negative in this many (at least one) is held out for scoring checkpoints, not trained on."""


@dataclass(frozen=True)
class Recipe:
    """How a concept is trained. `layout` and `soft_positives=0` are the paper's ablations (the benchmark's);
    concepts in the library always use the default layout."""

    epochs: int = 2
    """At most; the paper's 15 (`PAPER`) kept no more quality on the micro-world than 2 with a third of its soft
    positives."""
    learning_rate: float = 1e-3
    batch_size: int = 4
    micro_batch: int = 4
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    seed: int = 0
    soft_positives: int = 333
    """Up to this many look-alikes from the index: a third of the paper's 1,000. At 7B they are the long samples
    (1,024 image tokens each) and 80% of the paper's epoch; a third kept the quality on the micro-world."""
    negatives: int = 40
    """At most this many negatives (a fifth held out for scoring). The paper's 200 are more than three "no" answers
    to every "yes" of the concept's own photos (160 against 48), and on the micro-world they trained the rows to
    refuse the concept in new photos: 200 against 40 lost on every headline metric over 64 units, at twice the
    steps (docs/personalization.md, "Fewer negatives")."""
    recognition_per_photo: int = 4
    generation_per_photo: int = 2
    qa_repeats: int = 2
    augment: bool = True
    patience: int = 3
    """Stop after this many epochs in a row without a better held-out score (or held-out loss where the score
    is not measured); 0 runs every epoch. 3, not 1-2: recognition on one or two held-out photos moves in big
    steps (one photo: right or wrong) and can stay flat for an epoch or two while the rows still improve."""
    answer_weight: float = 1.0
    """How many times the tokens that decide a recognition answer (" Yes" or " No", `data.Decision`) weigh in the
    loss, against 1 for every other target token (the Aligner's `answer_weight` is 10). At 1 the decision is one
    token of a recognition sample's ~20 and of a batch's hundreds."""
    sample_mean: bool = False
    """The loss as the mean over samples of each sample's mean over its target tokens, rather than the mean over
    all target tokens of a batch (the paper's). With the token mean a drawing (~80 target tokens) outweighs a
    recognition answer (~20, one of which decides) four to one; the benchmark's `sample_mean` measures it."""
    start: str = "description"
    """Where a new concept's latent rows start (`START_ROWS`): "description", the words of the description of the
    photos that the base model's descriptions agree on most (engine.concepts.start_rows); "class_word", the class
    word's embedding, as in the paper; "photos", the photos' image tokens. The description is the default: on the
    demo model its rows beat the user's words before any training, and the class word's do not
    (docs/personalization.md; the benchmark's `class_word_start` and `photo_start` measure the others)."""
    soft_selection: bool = False
    """Score checkpoints' recognition by the probability of the right answer rather than by right or wrong
    (`selection.recognition_accuracy`): one held-out photo and a few negatives often score epochs the same, and
    then selection and early stopping go by noise; the benchmark's `soft_selection` measures it."""
    held_out_views: bool = False
    """Score checkpoints' recognition of the concept on each held-out photo's augmentations too (the photo, its
    mirror and its centre crop: `data.augmentations`), so that one held-out photo is three answers, not one."""
    start_margin: float = 0.0
    """An epoch's checkpoint replaces the start rows only where its held-out score beats theirs by at least this
    much (0: by any amount); early stopping counts from the start rows the same way. Only the held-out score has a
    margin; the losses selection falls back to do not. Rows spelled from a good description are hard to beat, and a
    score from one held-out photo moves by a quarter for one answer (docs/training.md, "Selection")."""
    route_rows: bool = False
    """Each sample trains only its own task's latent set: a drawing's gradient reaches the generation rows, a text
    answer's the understanding rows (the other set still sits in the prompt's concept prefix, read but not trained
    by it). With the paper's token mean a drawing's ~80 image tokens outweigh a yes/no answer, and both sets sit in
    every prompt, so without this the drawings also steer the rows recognition reads. No effect with a shared set."""
    describe_photos: bool = True
    sample_checkpoints: bool = True
    layout: PromptLayout = field(default_factory=PromptLayout)

    def __post_init__(self) -> None:
        if min(self.epochs, self.batch_size, self.micro_batch) < 1:
            raise EngineError("epochs, batch size and micro-batch must be at least 1")
        if self.batch_size % self.micro_batch:
            raise EngineError("the batch size must be a multiple of the micro-batch")
        if self.learning_rate <= 0:
            raise EngineError("the learning rate must be positive")
        if self.answer_weight <= 0:
            raise EngineError("the answer weight must be positive")
        if self.start not in START_ROWS:
            raise EngineError(f"unknown start rows {self.start!r}; known: {', '.join(START_ROWS)}")
        if not 0.0 <= self.start_margin < 1.0:
            raise EngineError("the start margin is a held-out score difference, from 0 up to (not including) 1")
        if self.patience < 0:
            raise EngineError("patience cannot be negative (0 runs every epoch)")
        counts = (self.soft_positives, self.negatives, self.recognition_per_photo)
        if min(*counts, self.generation_per_photo, self.qa_repeats) < 0:
            raise EngineError("sample counts cannot be negative")


DEFAULT = Recipe()
PAPER = Recipe(epochs=15, patience=0, soft_positives=1000, negatives=200)
"""The Yo'Chameleon paper's length and mix, every epoch run: the full recipe the cost study compares with."""


def held_out_negatives(count: int) -> int:
    """How many of `count` negatives are held out for scoring: a fifth, at least one where there are any."""
    return max(1, count // HELD_OUT_NEGATIVE_SHARE) if count else 0
