"""The personalization benchmark: the product's training recipe run on micro-world concepts, and measured.

A concept is one creature (shape, colour, pattern, and an accessory with its colour), drawn from a seed. It has
- 4 training renders on 4 different backgrounds: the user's photos. As in the app (3 or more photos, none marked
  for testing), the last one is held out to pick the best epoch;
- test renders in new poses on the 2 backgrounds the training renders do not use;
- hard negatives (creatures differing in exactly one identity attribute) and random negatives, in random poses;
- a retrieval pool shared by all concepts (random scenes, never the concept itself), ranked by the attribute
  reader's identity embedding, this world's CLIP: the product's retrieval rules (engine/retrieval/plan.py) turn
  the top ranks into soft-positive tiers and the next ranks into hard negatives; random pool scenes are the easy
  negatives.

Training is the product's own: `engine.training.personalization.personalize`, the function `familiar train`
calls, with each condition's `Recipe` (the reader's embedding as the image similarity). Only the library and
index plumbing is skipped. Measured for every concept under every condition:
- recognition, "Is <c> in this photo?": accuracy on the test renders (positive), on the hard negatives
  (negative) and on random negatives; `recognition_weighted` is the mean of positive and negative;
- QA without a picture ("What colour is <c>?", shape, pattern, "What is <c> wearing?"), the answer chosen by
  likelihood among all of the world's answers to that question;
- generation, pictures drawn for "A photo of <c>." and read by the attribute reader: the share of the 5
  identity attributes drawn right (`generation_attribute_accuracy`) and the embedding cosine to the normalised
  mean of the test renders (`generation_similarity`, like CLIP-I).

`instant` and `refined` start from the demo Aligner's rows, predicted from the concept's first training photo
(`instant_rows`, the calls `familiar concept add --instant` makes): `instant` measures them as they are, `refined`
trains them with the product's recipe (as `familiar train` refines an instant concept).

`run_seeds` repeats the benchmark over several seeds (each its own concepts and pool) and reports paired differences
over all concept-and-seed units, with their standard errors: trained minus every other condition, and `instant` and
`refined` each minus trained and minus the class word's untrained rows (`COMPARED`). `untrained` is the class
word's rows, the paper's start; the recipe starts from the description's (`description_untrained` measures those
untrained, so trained minus it is what training adds).
"""

from __future__ import annotations

import hashlib
import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np
from PIL import Image

from engine.aligner.model import LoadedAligner, demo_aligner_path, instant_state, load_aligner
from engine.concepts.layout import PromptLayout
from engine.concepts.prompts import Prompts
from engine.concepts.state import ConceptState
from engine.evaluation.metrics import clip_i
from engine.inference.assistant import Assistant
from engine.microworld.abilities import answers_right
from engine.microworld.reader import AttributeReader
from engine.microworld.world import (
    BACKGROUNDS,
    IDENTITY,
    POSITIONS,
    SIZES,
    Identity,
    Scene,
    all_identities,
    one_change,
    render,
    sample_identity,
    sample_pose,
    sample_scene,
)
from engine.progress import Progress, ProgressCallback
from engine.retrieval.index import Neighbour, Neighbours
from engine.retrieval.plan import ConceptPhoto, PlanSettings, concept_query, plan_from_neighbours
from engine.training import personalization
from engine.training.data import describe_photos
from engine.training.personalization import ConceptPhotos, Personalized
from engine.training.recipe import DEFAULT, PAPER, Recipe
from engine.training.selection import answers_yes, draw_prompt

Report = Callable[[str], None]
KIND = "pet"
"""The kind a user would give a creature; its class word ("animal") starts the concept's rows."""
METRICS = (
    "recognition_positive",
    "recognition_negative",
    "recognition_negative_random",
    "recognition_weighted",
    "qa_accuracy",
    "generation_attribute_accuracy",
    "generation_similarity",
)


@dataclass(frozen=True)
class Condition:
    """One way of referring to a concept: learned tokens (trained by a recipe, or the start rows untrained) or
    plain words. `changes` turn the benchmark's base recipe into this condition's; the start rows are the recipe's,
    or with `from_aligner` the demo Aligner's; `true_words` spells them from the creature's true attributes (`a red
    striped circle with a blue hat.`) in place of the base model's description of the photos."""

    name: str
    what: str
    trained: bool = True
    from_aligner: bool = False
    changes: dict[str, Any] = field(default_factory=dict)
    words: str | None = None  # "coarse" or "full": a text prompt instead of a concept
    true_words: bool = False  # the start rows spelled from the creature's true attributes, not the description

    def recipe(self, base: Recipe) -> Recipe:
        return replace(base, **self.changes)


FULL_SOFT_POSITIVES = 45
"""The paper's 1,000 soft positives at the benchmark's scale (a 3,000-scene pool); the recipe's third of them is
`BenchSettings.soft_positives`."""
FULL = {"epochs": PAPER.epochs, "patience": 0, "soft_positives": FULL_SOFT_POSITIVES}
"""The paper's recipe at the benchmark's scale: every soft positive, 15 epochs, every epoch run."""
FOUR_EPOCHS = {"epochs": 4, "soft_positives": FULL_SOFT_POSITIVES}
"""The default from session 32 to 39: at most 4 epochs (patience 3), every soft positive."""
RECOGNITION_ONLY = {"patience": 0, "generation_per_photo": 0, "soft_positives": 0, "qa_repeats": 0}

CONDITIONS = {
    c.name: c
    for c in (
        Condition("trained", "the product's recipe: dual sets of 16 tokens, self-prompting, soft positives"),
        Condition(
            "untrained",
            "the class word's rows (the paper's start), not trained",
            trained=False,
            changes={"start": "class_word"},
        ),
        Condition(
            "instant",
            "the demo Aligner's rows, predicted from one training photo, not trained",
            trained=False,
            from_aligner=True,
        ),
        Condition("refined", "the product's recipe, starting from the demo Aligner's rows", from_aligner=True),
        Condition(
            "text_prompt",
            "the user's own coarse words, e.g. 'red striped creature with a hat'",
            trained=False,
            words="coarse",
        ),
        Condition(
            "text_full", "every identity attribute in words (a reference, not a baseline)", trained=False, words="full"
        ),
        Condition("positives_only", "ablation: no soft positives", changes={"soft_positives": 0}),
        Condition(
            "shared_prompt",
            "ablation: one set of 16 tokens for both tasks",
            changes={"layout": PromptLayout(shared=True)},
        ),
        Condition(
            "no_self_prompting",
            "ablation: dual sets, answers not opened by the task's set",
            changes={"layout": PromptLayout(self_prompting=False)},
        ),
        Condition(
            "sample_mean",
            "change: the loss is the mean over samples of each one's mean, not the mean over tokens",
            changes={"sample_mean": True},
        ),
        Condition(
            "photo_start",
            "change: latent rows start from the photos' image tokens, not the class word",
            changes={"start": "photos"},
        ),
        Condition(
            "class_word_start",
            "ablation: latent rows start from the class word, as in the paper (the recipe's start before session 30)",
            changes={"start": "class_word"},
        ),
        Condition(
            "description_untrained",
            "reference: the recipe's start rows (spelled from the photos' description), not trained",
            trained=False,
        ),
        Condition(
            "truth_untrained",
            "reference: start rows spelled from the creature's true attributes in words, not trained",
            trained=False,
            true_words=True,
        ),
        Condition("every_epoch", "change: no early stopping (every epoch runs)", changes={"patience": 0}),
        Condition(
            "soft_selection",
            "change: checkpoints scored by the probability of the right yes/no, not right or wrong",
            changes={"soft_selection": True},
        ),
        Condition(
            "held_out_views",
            "change: checkpoints' recognition scored on each held-out photo's mirror and crop too",
            changes={"held_out_views": True},
        ),
        Condition(
            "start_margin",
            "change: an epoch replaces the start rows only where it beats their held-out score by 0.05",
            changes={"start_margin": 0.05},
        ),
        Condition(
            "route_rows",
            "change: each sample trains only its task's latent set (drawings the generation set, answers the other)",
            changes={"route_rows": True},
        ),
        Condition(
            "full", "reference: the paper's length and mix (15 epochs, every one run, all soft positives)", changes=FULL
        ),
        Condition(
            "refined_full",
            "reference: `refined` at the paper's length and mix (15 epochs, every one run, all soft positives)",
            from_aligner=True,
            changes=FULL,
        ),
        Condition(
            "four_epochs",
            "reference: the default before session 40 (at most 4 epochs, all soft positives)",
            changes=FOUR_EPOCHS,
        ),
        Condition("lr_3e4", "change: learning rate 3e-4, not 1e-3", changes={"learning_rate": 3e-4}),
        Condition(
            "answer_weight_10",
            "change: the tokens deciding a recognition answer weigh 10 times in the loss",
            changes={"answer_weight": 10.0},
        ),
        Condition(
            "answer_weight_30",
            "change: the tokens deciding a recognition answer weigh 30 times in the loss",
            changes={"answer_weight": 30.0},
        ),
        Condition(
            "soft_views",
            "change: checkpoints scored by the probability of the right yes/no on each held-out photo's views too",
            changes={"soft_selection": True, "held_out_views": True},
        ),
        Condition(
            "lr_1e2",
            "change: learning rate 1e-2, not 1e-3, every epoch",
            changes={"learning_rate": 1e-2, "patience": 0},
        ),
        Condition(
            "recognition_only",
            "ablation: recognition samples only (no drawing, QA or soft positives), every epoch",
            changes=RECOGNITION_ONLY,
        ),
        Condition(
            "recognition_only_lr_1e2",
            "ablation: recognition samples only at learning rate 1e-2, every epoch",
            changes={**RECOGNITION_ONLY, "learning_rate": 1e-2},
        ),
        Condition("tokens_4", "ablation: 4 latent tokens per set", changes={"layout": PromptLayout(tokens=4)}),
        Condition("tokens_8", "ablation: 8 latent tokens per set", changes={"layout": PromptLayout(tokens=8)}),
    )
}


@dataclass(frozen=True)
class BenchSettings:
    """Sizes of the benchmark. Training is the product's `Recipe` and epochs (at most 2 since session 40; 4 from
    session 32, 8 before), with fewer soft positives (15, not 333: a third of `FULL_SOFT_POSITIVES`, as the recipe's
    are of the paper's) and negatives (30, not 200), scaled to a 3,000-scene pool and to what a
    2-core CPU trains in a minute or two per concept (`recipe`). The default conditions leave out
    `no_self_prompting` and `tokens_8` (run them with `conditions`) to keep a run under an hour."""

    concepts: int = 5
    train_renders: int = 4
    test_renders: int = 8
    negatives: int = 8
    pool: int = 3000
    soft_positives: int = FULL_SOFT_POSITIVES // 3
    train_negatives: int = 30
    epochs: int = DEFAULT.epochs
    drawings: int = 4
    seed: int = 0
    conditions: tuple[str, ...] = (
        "trained",
        "untrained",
        "description_untrained",
        "instant",
        "refined",
        "text_prompt",
        "text_full",
        "class_word_start",
        "positives_only",
        "shared_prompt",
        "tokens_4",
    )

    def validate(self) -> None:
        unknown = [c for c in self.conditions if c not in CONDITIONS]
        if unknown:
            raise ValueError(f"unknown conditions {unknown}; known: {', '.join(CONDITIONS)}")
        if not 2 <= self.train_renders < len(BACKGROUNDS):
            raise ValueError(f"train_renders must be 2 to {len(BACKGROUNDS) - 1}")
        if min(self.concepts, self.test_renders, self.negatives, self.epochs, self.drawings) < 1:
            raise ValueError("concepts, test_renders, negatives, epochs and drawings must be at least 1")

    def recipe(self) -> Recipe:
        """The recipe every trained condition starts from: the product's defaults at the benchmark's scale."""
        return Recipe(
            epochs=self.epochs, soft_positives=self.soft_positives, negatives=self.train_negatives, seed=self.seed
        )


QUICK = BenchSettings(
    concepts=5,
    conditions=("trained", "untrained", "description_untrained", "instant", "refined", "text_prompt", "text_full"),
)
"""Five concepts, the baselines and the Aligner's conditions, no ablation; run over `QUICK_SEEDS` seeds."""
QUICK_SEEDS = 2
"""Seeds of a quick run: 10 units (3 before session 41, whose standard errors of 0.09-0.13 were twice the
must-show's 0.05), about 3 minutes on 2 cores."""


@dataclass(frozen=True)
class BenchConcept:
    name: str
    identity: Identity
    train: list[Scene]
    test: list[Scene]
    hard_negatives: list[Scene]
    random_negatives: list[Scene]


def coarse_words(identity: Identity) -> str:
    """How a user might put the creature in words, leaving out shape and accessory colour:
    `red striped creature with a hat`."""
    accessory = {"none": "", "glasses": " with glasses"}.get(identity.accessory, f" with a {identity.accessory}")
    return f"{identity.colour} {identity.pattern} creature{accessory}"


def make_concepts(settings: BenchSettings) -> list[BenchConcept]:
    """The benchmark's concepts, all wearing an accessory (so 5 identity attributes), from `settings.seed`."""
    rng = random.Random(f"familiar-bench-concepts-{settings.seed}")
    identities = rng.sample([i for i in all_identities() if i.accessory != "none"], settings.concepts)
    concepts = []
    for number, identity in enumerate(identities):
        backgrounds = rng.sample(list(BACKGROUNDS), len(BACKGROUNDS))
        seen, unseen = backgrounds[: settings.train_renders], backgrounds[settings.train_renders :]

        def pose(background: str, identity: Identity = identity) -> Scene:
            jitter = rng.randint(-1, 1), rng.randint(-1, 1)
            return Scene(identity, rng.choice(SIZES), rng.choice(POSITIONS), background, *jitter)

        others = []
        while len(others) < settings.negatives:
            other = sample_identity(rng)
            if other != identity:
                others.append(sample_pose(other, rng))
        concepts.append(
            BenchConcept(
                name=f"c{number}",
                identity=identity,
                train=[pose(background) for background in seen],
                test=[pose(rng.choice(unseen)) for _ in range(settings.test_renders)],
                hard_negatives=[sample_pose(one_change(identity, rng), rng) for _ in range(settings.negatives)],
                random_negatives=others,
            )
        )
    return concepts


def make_pool(settings: BenchSettings) -> list[Scene]:
    """The retrieval pool: random scenes, the same for every concept."""
    rng = random.Random(f"familiar-bench-pool-{settings.seed}")
    return [sample_scene(rng) for _ in range(settings.pool)]


def scene_key(scene: Scene) -> str:
    """A stable stand-in for an image file's sha256."""
    return hashlib.sha256(repr(scene).encode()).hexdigest()


class Benchmark:
    """Runs the conditions on one loaded micro-world model; `run` returns the results as a JSON-ready dict."""

    def __init__(
        self,
        assistant: Assistant,
        reader: AttributeReader,
        settings: BenchSettings,
        report: Report | None = None,
        progress: ProgressCallback | None = None,
    ) -> None:
        """`report` gets a line per concept and condition; `progress` a "benchmark" event after each condition
        of each concept, with the time left at the pace so far."""
        settings.validate()
        self.assistant = assistant
        self.reader = reader
        self.settings = settings
        self.report = report or (lambda _m: None)
        self.progress = progress or (lambda _p: None)
        self.base_prompts = assistant.prompts
        self.pool = make_pool(settings)
        self.pool_embeddings = reader.embed([render(s) for s in self.pool])
        self._tokens: dict[Scene, list[int]] = {}
        self._aligner: LoadedAligner | None = None
        self.pictures: dict[tuple[str, str], Image.Image] = {}
        """The first picture drawn for each (concept, condition)."""

    def tokens(self, scenes: Sequence[Scene]) -> list[list[int]]:
        """VQ ids of rendered scenes, cached."""
        missing = list(dict.fromkeys(s for s in scenes if s not in self._tokens))
        if missing:
            encoded = self.encode([render(s) for s in missing])
            self._tokens.update(zip(missing, encoded, strict=True))
        return [self._tokens[s] for s in scenes]

    def encode(self, images: Sequence[Image.Image]) -> list[list[int]]:
        return [row.tolist() for row in self.assistant.loaded.image_tokenizer.encode(list(images))]

    def retrieval(
        self, concept: BenchConcept, photos: Sequence[Scene], tokens: int, soft_positives: int
    ) -> tuple[list, list[Scene]]:
        """(soft-positive tiers as (token count, scenes), negatives as scenes: hard first, then easy), by the
        product's plan rules over the pool ranked by the reader's embedding of the training photos. The plan takes
        the top `soft_positives` ranks (at least the benchmark's `soft_positives`, so a condition that asks for
        fewer, `positives_only`, trains on the same negatives) as look-alikes, as `familiar train` plans the
        run's `--soft-positives`, and the next ranks as hard negatives."""
        settings = self.settings
        top = max(settings.soft_positives, soft_positives)
        own = self.reader.embed([render(s) for s in photos])
        keep = np.array([i for i, s in enumerate(self.pool) if s.identity != concept.identity])
        similarity = self.pool_embeddings[keep] @ concept_query(own)
        ranked = np.argsort(-similarity, kind="stable")
        hard = settings.train_negatives // 2
        band = keep[ranked[: top + hard]]
        items = [
            Neighbour(f"pool/{i}", self.pool[i].caption(), scene_key(self.pool[i]), float(c), row=int(i))
            for i, c in zip(band, similarity[ranked[: len(band)]], strict=True)
        ]
        plan = plan_from_neighbours(
            concept.name,
            [ConceptPhoto(f"photo/{j}", scene_key(s)) for j, s in enumerate(photos)],
            own,
            Neighbours(items, self.pool_embeddings[band]),
            PlanSettings(
                num_generation_tokens=tokens,
                top_n=top,
                num_hard_negatives=hard,
                num_easy_negatives=0,
                seed=settings.seed,
            ),
        )
        rest = keep[ranked[len(band) :]]
        easy = np.random.default_rng(settings.seed).choice(rest, settings.train_negatives - hard, replace=False)
        tiers = [(tier.num_tokens, [self._pooled(n) for n in tier.images]) for tier in plan.tiers]
        negatives = [self._pooled(n) for n in plan.hard_negatives] + [self.pool[int(i)] for i in easy]
        return tiers, negatives

    def _pooled(self, neighbour: Neighbour) -> Scene:
        assert neighbour.row is not None  # every neighbour here is a pool row
        return self.pool[neighbour.row]

    def similarity(self, generated: Sequence[Image.Image], real: Sequence[Image.Image]) -> float:
        """CLIP-I with the reader's embedding: cosine of each generated picture to the real ones' mean."""
        return clip_i(self.reader.embed(list(generated)), self.reader.embed(list(real)))

    def attribute_accuracy(self, concept: BenchConcept, images: Sequence[Image.Image]) -> float:
        """The share of the concept's identity attributes the reader reads right, over `images`."""
        truth = {a: getattr(concept.identity, a) for a in IDENTITY}
        return float(np.mean([[r[a] == v for a, v in truth.items()] for r in self.reader.read(list(images))]))

    def instant_rows(self, concept: BenchConcept) -> ConceptState:
        """The demo Aligner's rows for `concept`, predicted from its first training photo, as `familiar concept
        add --instant` makes them; the Aligner is loaded on first use."""
        fingerprint = self.assistant.loaded.fingerprint
        if self._aligner is None:
            self._aligner = load_aligner(demo_aligner_path(), fingerprint)
        return instant_state(self._aligner, render(concept.train[0]), concept.name, fingerprint)

    def train(
        self,
        concept: BenchConcept,
        recipe: Recipe,
        descriptions: list[str],
        start: ConceptState | None = None,
        on_checkpoint: Callable[[personalization.Scored], None] | None = None,
    ) -> Personalized:
        """Train the concept by `recipe` with the product's function, as `familiar train` does with a library's
        photos, from `start` (default: the recipe's start rows), handing every scored candidate to `on_checkpoint`;
        leaves the best one's rows attached. As in the app
        (3 or more photos, none marked for testing), the last training render is held out; negatives are the
        retrieval's hard ones, then random pool scenes."""
        photos, held_out = concept.train[:-1], concept.train[-1:]
        tiers, negatives = self.retrieval(concept, photos, recipe.layout.tokens, recipe.soft_positives)
        inputs = ConceptPhotos(
            name=concept.name,
            kind=KIND,
            photos=[render(s) for s in photos],
            held_out=[render(s) for s in held_out],
            negatives=self.tokens(negatives),
            soft_positive_tiers=[(n, self.tokens(scenes)) for n, scenes in tiers],
            similarity=self.similarity,
            start=start,
            descriptions=descriptions,
        )
        return personalization.personalize(self.assistant, inputs, recipe, on_checkpoint=on_checkpoint)

    def yes_rate(self, subject: str, scenes: Sequence[Scene], names: list[str]) -> float:
        """The share of `scenes` of which the model answers yes to "Is `subject` in this photo?"."""
        question = f"Is {subject} in this photo?"
        return float(np.mean([answers_yes(self.assistant, question, ids, names) for ids in self.tokens(scenes)]))

    def measure(
        self, concept: BenchConcept, condition: str, subject: str, drawing: str, names: list[str]
    ) -> dict[str, float]:
        """Every metric for one way of naming the concept: `subject` in questions, `drawing` as the picture
        prompt, `names` the attached concepts the prompts carry."""
        assistant, settings = self.assistant, self.settings
        positive = self.yes_rate(subject, concept.test, names)
        negative = 1 - self.yes_rate(subject, concept.hard_negatives, names)
        negative_random = 1 - self.yes_rate(subject, concept.random_negatives, names)
        right = list(answers_right(assistant, concept.identity, subject).values())
        drawn = [draw_prompt(assistant, drawing, names, settings.seed + k) for k in range(settings.drawings)]
        self.pictures[concept.name, condition] = drawn[0]
        return {
            "recognition_positive": positive,
            "recognition_negative": negative,
            "recognition_negative_random": negative_random,
            "recognition_weighted": (positive + negative) / 2,
            "qa_accuracy": float(np.mean(right)),
            "generation_attribute_accuracy": self.attribute_accuracy(concept, drawn),
            "generation_similarity": self.similarity(drawn, [render(s) for s in concept.test]),
        }

    def run_condition(self, concept: BenchConcept, condition: Condition, descriptions: list[str]) -> dict[str, Any]:
        assistant = self.assistant
        if condition.words is not None:
            words = coarse_words(concept.identity) if condition.words == "coarse" else concept.identity.describe()
            return self.measure(concept, condition.name, f"the {words}", f"A photo of a {words}.", [])
        if condition.true_words:
            descriptions = [f"a {concept.identity.describe()}."]
        loaded = assistant.loaded
        tokens = loaded.image_tokenizer
        recipe = condition.recipe(self.settings.recipe())
        assistant.prompts = Prompts(loaded.tokenizer, assistant.slots, tokens.boi_id, tokens.eoi_id, recipe.layout)
        try:
            extra: dict[str, Any] = {}
            start = self.instant_rows(concept) if condition.from_aligner else None
            if condition.trained:
                started = time.monotonic()
                trained = self.train(concept, recipe, descriptions, start)
                per_epoch = trained.steps // trained.epochs
                extra = {
                    "samples": trained.samples,
                    "steps": trained.steps,
                    "epochs": trained.epochs,
                    "best_epoch": trained.chosen.checkpoint.epoch,
                    "train_seconds": round(time.monotonic() - started, 1),
                    "first_epoch_loss": float(np.mean(trained.losses[:per_epoch])),
                    "last_epoch_loss": float(np.mean(trained.losses[-per_epoch:])),
                }
            else:
                if start is None:  # the photos' tokens are needed only where the rows start from them
                    photos = []
                    if recipe.start == "photos":
                        renders = [render(s) for s in concept.train[:-1]]
                        photos = personalization.training_photo_ids(assistant, renders, recipe)
                    start = personalization.start_state(assistant, concept.name, KIND, "", photos, descriptions, recipe)
                assistant.attach(start)
            subject = f"<{concept.name}>"
            drawing = f"A photo of {subject}."
            return {**self.measure(concept, condition.name, subject, drawing, [concept.name]), **extra}
        finally:
            assistant.slots.detach(concept.name)
            assistant.prompts = self.base_prompts

    def reference(self, concept: BenchConcept) -> dict[str, float]:
        """What the reader makes of the real test renders and of their VQ round trip (encoded to image tokens
        and decoded, the best a drawing can be): ceilings for the generation metrics."""
        real = [render(s) for s in concept.test]
        tokens = self.assistant.loaded.image_tokenizer
        round_trip = tokens.decode(tokens.encode(real))
        return {
            "generation_attribute_accuracy": self.attribute_accuracy(concept, real),
            "generation_similarity": self.similarity(real, real),
            "round_trip_attribute_accuracy": self.attribute_accuracy(concept, round_trip),
            "round_trip_similarity": self.similarity(round_trip, real),
            "hard_negative_similarity": self.similarity([render(s) for s in concept.hard_negatives], real),
        }

    def run(self) -> dict[str, Any]:
        started = time.monotonic()
        return summarize(self.settings, self.concept_results(), time.monotonic() - started)

    def concept_results(self) -> list[dict[str, Any]]:
        """Every condition's metrics for each of this seed's concepts."""
        started = time.monotonic()
        settings = self.settings
        concepts = make_concepts(settings)
        per_concept = []
        total, done = len(concepts) * len(settings.conditions), 0
        self.progress(Progress("benchmark", 0, total))
        for index, concept in enumerate(concepts, 1):
            words = concept.identity.describe()
            article = "an" if words[0] in "aeiou" else "a"
            self.report(f"seed {settings.seed}, concept {index}/{len(concepts)} <{concept.name}>: {article} {words}")
            descriptions = describe_photos(self.assistant, [render(s) for s in concept.train[:-1]])
            results = {}
            for name in settings.conditions:
                condition_started = time.monotonic()
                results[name] = self.run_condition(concept, CONDITIONS[name], descriptions)
                line = ", ".join(f"{k} {results[name][k]:.2f}" for k in METRICS if k != "recognition_negative_random")
                self.report(f"  {name}: {line} ({time.monotonic() - condition_started:.0f} s)")
                done += 1
                left = (time.monotonic() - started) / done * (total - done)
                self.progress(Progress("benchmark", done, total, eta_seconds=left))
            per_concept.append(
                {
                    "name": concept.name,
                    "seed": settings.seed,
                    "identity": asdict(concept.identity),
                    "words": concept.identity.describe(),
                    "coarse_words": coarse_words(concept.identity),
                    "descriptions": descriptions,
                    "reference": self.reference(concept),
                    "conditions": results,
                }
            )
        return per_concept


def run_seeds(
    assistant: Assistant,
    reader: AttributeReader,
    settings: BenchSettings,
    seeds: int,
    report: Report | None = None,
    progress: ProgressCallback | None = None,
) -> tuple[dict[str, Any], Benchmark]:
    """The benchmark for seeds `settings.seed .. settings.seed + seeds - 1`, summarized over every concept of every
    seed; also the first seed's `Benchmark` (its pictures illustrate the report). `progress` counts each seed's
    conditions anew."""
    if seeds < 1:
        raise ValueError("seeds must be at least 1")
    started = time.monotonic()
    per_concept: list[dict[str, Any]] = []
    first: Benchmark | None = None
    for seed in range(settings.seed, settings.seed + seeds):
        bench = Benchmark(assistant, reader, replace(settings, seed=seed), report, progress)
        first = first or bench
        per_concept += bench.concept_results()
    assert first is not None
    return summarize(settings, per_concept, time.monotonic() - started, seeds), first


def mean_and_error(values: Sequence[float]) -> tuple[float, float]:
    """Mean and standard error over units (0 for a single unit)."""
    mean = float(np.mean(values))
    error = float(np.std(values, ddof=1) / math.sqrt(len(values))) if len(values) > 1 else 0.0
    return mean, error


PAIRED_METRICS = ("recognition_weighted", "generation_attribute_accuracy", "qa_accuracy", "generation_similarity")
COMPARED = {"instant": ("trained", "untrained"), "refined": ("trained", "untrained")}
"""Conditions reported as themselves minus these others (not as trained minus them)."""


def paired_difference(
    per_concept: Sequence[dict[str, Any]], other: str, metric: str, condition: str = "trained"
) -> tuple[float, float]:
    """Mean over units (concepts, of every seed) of `condition` minus `other` on `metric`, and its standard
    error."""
    return mean_and_error([c["conditions"][condition][metric] - c["conditions"][other][metric] for c in per_concept])


def compared_pairs(conditions: Sequence[str]) -> list[tuple[str, str]]:
    """(condition, other) for every paired difference: trained minus every other condition but `COMPARED`'s,
    then each of `COMPARED`'s minus its others, where both were run."""
    pairs = []
    if "trained" in conditions:
        pairs = [("trained", other) for other in conditions if other != "trained" and other not in COMPARED]
    pairs += [(name, other) for name, others in COMPARED.items() if name in conditions for other in others]
    return [(name, other) for name, other in pairs if other in conditions]


def paired(settings: BenchSettings, per_concept: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every `compared_pairs` difference, paired per unit, on `PAIRED_METRICS`: the mean, its standard error, the
    number of units and the mean per seed."""
    rows = []
    seeds = sorted({c.get("seed", settings.seed) for c in per_concept})
    for condition, other in compared_pairs(settings.conditions):
        for metric in PAIRED_METRICS:
            mean, error = paired_difference(per_concept, other, metric, condition)
            per_seed = {
                str(seed): paired_difference(
                    [c for c in per_concept if c.get("seed", settings.seed) == seed], other, metric, condition
                )[0]
                for seed in seeds
            }
            rows.append(
                {
                    "condition": condition,
                    "other": other,
                    "metric": metric,
                    "mean": mean,
                    "stderr": error,
                    "units": len(per_concept),
                    "per_seed": per_seed,
                }
            )
    return rows


def summarize(
    settings: BenchSettings, per_concept: list[dict[str, Any]], seconds: float, seeds: int = 1
) -> dict[str, Any]:
    """Per-condition means (and standard errors) over concepts of every seed, and the paired differences; the
    headline keys are the trained condition's."""
    conditions: dict[str, dict[str, Any]] = {}
    for name in settings.conditions:
        rows = [c["conditions"][name] for c in per_concept]
        summary: dict[str, Any] = {"what": CONDITIONS[name].what}
        for metric in METRICS:
            summary[metric], summary[f"{metric}_stderr"] = mean_and_error([r[metric] for r in rows])
        if "train_seconds" in rows[0]:
            summary["train_seconds"] = float(np.mean([r["train_seconds"] for r in rows]))
            summary["steps"] = float(np.mean([r["steps"] for r in rows]))
        conditions[name] = summary
    headline = ("recognition_weighted", "generation_attribute_accuracy", "qa_accuracy", "generation_similarity")
    results: dict[str, Any] = {
        "settings": {**asdict(settings), "conditions": list(settings.conditions), "seeds": seeds},
        "seconds": round(seconds, 1),
        "concepts": per_concept,
        "paired": paired(settings, per_concept),
        "conditions": conditions,
        "reference": {
            key: float(np.mean([c["reference"][key] for c in per_concept])) for key in per_concept[0]["reference"]
        },
    }
    if "trained" in conditions:
        results.update({key: conditions["trained"][key] for key in headline})
    results["baselines"] = {
        name: {key: conditions[name][key] for key in headline}
        for name in ("untrained", "instant", "text_prompt")
        if name in conditions
    }
    return results
