"""Train an Aligner once per base model: recognition (and optional fact) questions about identities seen
through one reference photo, with the base model and the image encoder frozen and AdamW on the Aligner only.

Dataset layout (docs/aligner.md): `DATASET/<identity>/` holds the identity's photos (.jpg, .jpeg, .png,
.webp); the reference photo is the one named `reference.*`, else the first in sorted order, and the others
are query photos. An optional `facts.txt` (`key: value` lines or sentences, as for a library concept)
adds question-answer samples.

Each sample puts the concept rows the Aligner predicts from a reference photo into one concept slot and asks
"Is <identity> in this photo?" about a query photo of the same identity (yes, `positive_share` of the time)
or of another identity (no; `hard_negative_share` of them one of the identities nearest in the encoder's
global features). The target is a library concept's target (understanding tokens, then the
answer); the token that says Yes or No is weighted `answer_weight` times in the loss. With `distill_weight`
above 0, a second term pulls the predicted latent rows towards the rows the recipe would start that identity
from: those spelled from the base model's own description of its photos (self-distillation, no labels). Runs
repeat exactly for a seed, so a run resumed from a checkpoint ends bit-identical to an uninterrupted one; the
resume file keeps those descriptions, so a resumed run does not describe every photo again.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Literal

import torch
from PIL import Image
from safetensors.torch import load as load_tensors
from safetensors.torch import save as save_tensors
from torch import nn

from engine.aligner.model import (
    Aligner,
    AlignerConfig,
    AlignerError,
    ImageEncoder,
    aligner_metadata,
    build_aligner,
    check_bindings,
    check_encoder,
    new_aligner,
    read_aligner_file,
    save_aligner,
)
from engine.atomic_write import write_atomic
from engine.concepts.layout import SLOT_SIZE
from engine.concepts.prompts import IGNORE
from engine.errors import EngineError
from engine.inference.assistant import Assistant
from engine.model.images import open_image
from engine.model.loading import LoadedModel
from engine.progress import ProgressCallback
from engine.training.data import (
    NEGATIVE_ANSWERS,
    POSITIVE_ANSWERS,
    RECOGNITION_QUESTIONS,
    Decision,
    describe_photos,
    fact_pairs,
)
from engine.training.loop import TrainingCheckpoint, TrainingLoop
from engine.training.personalization import start_state
from engine.training.recipe import Recipe

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp")
REFERENCE_STEM = "reference"
FACTS_FILE = "facts.txt"
PLACEHOLDER = "identity"
"""The concept name the identity being asked about has in training prompts (it only picks a slot)."""
RESUME_SUFFIX = ".resume.safetensors"
RESUME_FORMAT = "familiar.aligner-resume/1"
ENCODE_BATCH = 8
NEIGHBOURS = 8
"""How many nearest identities (by the encoder's mean global feature) hard negatives are drawn from."""

Kind = Literal["yes", "no", "qa"]


@dataclass(frozen=True)
class AlignerTrainConfig:
    """Defaults and why: Yes/No weight 10 and 60% positive recognition questions as in PLVM; AdamW at 1e-4
    without weight decay (the biases hold the base model's mean rows, decay would pull them to zero); every
    photo of an identity takes its turn as the reference (`rotate_references`), which multiplies the distinct
    references a small dataset offers; `qa_share` of an identity's samples are fact questions when it has a
    facts.txt. `hard_negative_share` of the negative questions show one of the `NEIGHBOURS` identities that
    look most alike to the encoder (0 by default, as in PLVM: every negative is a random other identity).
    `micro_batch` (0: the whole batch) below `batch_size` accumulates gradients to save memory.
    `distill_weight` (0 by default, as in PLVM) weighs the self-distillation term (`distill_loss`)."""

    epochs: int = 10
    samples_per_identity: int = 8
    batch_size: int = 4
    micro_batch: int = 0
    learning_rate: float = 1e-4
    weight_decay: float = 0.0
    answer_weight: float = 10.0
    positive_share: float = 0.6
    qa_share: float = 0.1
    hard_negative_share: float = 0.0
    rotate_references: bool = True
    seed: int = 0
    max_grad_norm: float = 1.0
    distill_weight: float = 0.0

    def __post_init__(self) -> None:
        if min(self.epochs, self.samples_per_identity, self.batch_size) < 1 or self.micro_batch < 0:
            raise EngineError("epochs, samples per identity and the batch size must be at least 1")
        if self.micro_batch and self.batch_size % self.micro_batch:
            raise EngineError("batch_size must be a multiple of micro_batch")
        if not all(0 <= share <= 1 for share in (self.positive_share, self.qa_share, self.hard_negative_share)):
            raise EngineError("positive_share, qa_share and hard_negative_share must be between 0 and 1")
        if self.answer_weight <= 0 or self.learning_rate < 0 or self.distill_weight < 0:
            raise EngineError("answer_weight must be positive, learning_rate and distill_weight not negative")

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> AlignerTrainConfig:
        values = json.loads(text)
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in known})


@dataclass(frozen=True)
class Identity:
    """One identity folder: its photos (reference first) and facts."""

    name: str
    photos: tuple[Path, ...]
    facts: str = ""


def read_dataset(folder: Path) -> list[Identity]:
    """The identity folders of `folder`, each with a reference and at least one query photo."""
    if not folder.is_dir():
        raise EngineError(f"dataset folder {folder} does not exist")
    identities: list[Identity] = []
    for sub in sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")):
        photos = sorted(p for p in sub.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        if not photos:
            continue
        if len(photos) < 2:
            raise EngineError(f"{sub} has one photo; an identity needs a reference and at least one query photo")
        named = [p for p in photos if p.stem.lower() == REFERENCE_STEM]
        reference = named[0] if named else photos[0]
        facts_file = sub / FACTS_FILE
        facts = facts_file.read_text(encoding="utf-8") if facts_file.is_file() else ""
        identities.append(Identity(sub.name, (reference, *(p for p in photos if p != reference)), facts))
    if len(identities) < 2:
        raise EngineError(f"{folder} needs at least two identity folders of photos (DATASET/<identity>/*.jpg)")
    return identities


def dataset_digest(identities: Sequence[Identity]) -> str:
    """sha256 over identity names, photo names and sizes, and facts: a resumed run must see the same data."""
    digest = hashlib.sha256()
    for identity in identities:
        digest.update(json.dumps([identity.name, identity.facts]).encode())
        for photo in identity.photos:
            digest.update(json.dumps([photo.name, photo.stat().st_size]).encode())
    return digest.hexdigest()


@dataclass
class PreparedData:
    """Everything training reads, computed once: the encoder's features and the VQ token ids of every photo,
    and each identity's nearest identities (by cosine of the mean global feature), nearest first; with
    distillation, the base model's descriptions of each identity's photos and the target latent rows they spell
    [identities, 32, H] (`description_targets`)."""

    identities: list[Identity]
    photo_ranges: list[range]
    cls: torch.Tensor
    patches: torch.Tensor
    image_ids: torch.Tensor
    encoder: ImageEncoder
    digest: str
    neighbours: list[list[int]]
    descriptions: list[list[str]] | None = None
    targets: torch.Tensor | None = None


def nearest_identities(cls: torch.Tensor, ranges: Sequence[range], count: int) -> list[list[int]]:
    """For each identity, the `count` other identities whose mean global feature is closest by cosine."""
    means = torch.nn.functional.normalize(torch.stack([cls[r.start : r.stop].mean(0) for r in ranges]), dim=-1)
    similarity = means @ means.T
    similarity.fill_diagonal_(-float("inf"))
    k = min(count, len(ranges) - 1)
    return similarity.topk(k, dim=1).indices.tolist()


def prepare_data(
    identities: Sequence[Identity],
    loaded: LoadedModel,
    encoder: ImageEncoder,
    image_size: int,
    status: Callable[[str], None] | None = None,
    distill: bool = False,
    descriptions: list[list[str]] | None = None,
) -> PreparedData:
    """Encode every photo once with the image encoder (features) and the base model's VQ tokenizer (image ids);
    with `distill`, also describe every photo with the base model (`describe_identities`), or take `descriptions`
    (an interrupted run's), and spell the targets from them (`description_targets`)."""
    report = status or (lambda _m: None)
    paths = [photo for identity in identities for photo in identity.photos]
    ranges, start = [], 0
    for identity in identities:
        ranges.append(range(start, start + len(identity.photos)))
        start += len(identity.photos)
    report(f"encoding {len(paths)} photos of {len(identities)} identities")
    cls, patches, image_ids = [], [], []
    for first in range(0, len(paths), ENCODE_BATCH):
        images: list[Image.Image] = [open_image(p) for p in paths[first : first + ENCODE_BATCH]]
        features = encoder.features(images, image_size)
        cls.append(features[0].cpu())
        patches.append(features[1].cpu())
        image_ids.append(loaded.image_tokenizer.encode(images))
    global_features = torch.cat(cls)
    targets = None
    if distill:
        if descriptions is None:
            descriptions = describe_identities(identities, loaded, report)
        elif len(descriptions) != len(identities):
            raise AlignerError(f"{len(descriptions)} identities' descriptions for {len(identities)} identities")
        targets = description_targets(descriptions, loaded)
    return PreparedData(
        identities=list(identities),
        photo_ranges=ranges,
        cls=global_features,
        patches=torch.cat(patches),
        image_ids=torch.cat(image_ids),
        encoder=encoder,
        digest=dataset_digest(identities),
        neighbours=nearest_identities(global_features, ranges, NEIGHBOURS),
        descriptions=descriptions if distill else None,
        targets=targets,
    )


def describe_identities(
    identities: Sequence[Identity], loaded: LoadedModel, status: Callable[[str], None] | None = None
) -> list[list[str]]:
    """The base model's description of every photo (`describe_photos`), per identity: the slow part of
    distillation's preparation (one generation per photo)."""
    report = status or (lambda _m: None)
    report(f"describing the photos of {len(identities)} identities with the base model")
    assistant = Assistant(loaded)
    return [describe_photos(assistant, [open_image(p) for p in identity.photos]) for identity in identities]


def description_targets(descriptions: Sequence[Sequence[str]], loaded: LoadedModel) -> torch.Tensor:
    """Each identity's latent rows [identities, 32, H]: the recipe's description start (`start_state`) from the
    descriptions of the identity's photos."""
    assistant = Assistant(loaded)
    recipe = Recipe(start="description")
    rows = [start_state(assistant, PLACEHOLDER, "object", "", [], list(d), recipe).embed[1:] for d in descriptions]
    return torch.stack(rows)


def distill_loss(predicted: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per sample, the squared distance of the predicted latent rows [B, 32, H] from the target rows, relative to
    the target's squared norm (so the weight means the same whatever the model's embedding scale)."""
    error = (predicted.float() - target.float()).pow(2).sum((1, 2))
    return error / target.float().pow(2).sum((1, 2))


@dataclass(frozen=True)
class Draw:
    """One sample: whose rows (from which reference photo), which query photo, and which phrasing."""

    identity: int
    reference: int
    query: int | None
    kind: Kind
    question: int
    answer: int


def plan_epoch(data: PreparedData, config: AlignerTrainConfig, epoch: int) -> list[Draw]:
    """The epoch's samples, drawn from the seed and the epoch: every identity `samples_per_identity` times,
    shuffled."""
    rng = random.Random(config.seed * 100_003 + epoch)
    qa = [fact_pairs("object", identity.facts, PLACEHOLDER) for identity in data.identities]
    order = [i for i in range(len(data.identities)) for _ in range(config.samples_per_identity)]
    rng.shuffle(order)
    draws: list[Draw] = []
    for i in order:
        own = list(data.photo_ranges[i])
        reference = rng.choice(own) if config.rotate_references else own[0]
        if qa[i] and rng.random() < config.qa_share:
            draws.append(Draw(i, reference, None, "qa", rng.randrange(len(qa[i])), 0))
        elif rng.random() < config.positive_share:
            query = rng.choice([p for p in own if p != reference])
            draws.append(Draw(i, reference, query, "yes", *_phrasing(rng, POSITIVE_ANSWERS)))
        else:
            hard = config.hard_negative_share > 0 and rng.random() < config.hard_negative_share
            other = rng.choice(data.neighbours[i] if hard else [j for j in range(len(data.identities)) if j != i])
            query = rng.choice(list(data.photo_ranges[other]))
            draws.append(Draw(i, reference, query, "no", *_phrasing(rng, NEGATIVE_ANSWERS)))
    return draws


def _phrasing(rng: random.Random, answers: Sequence[str]) -> tuple[int, int]:
    return rng.randrange(len(RECOGNITION_QUESTIONS)), rng.randrange(len(answers))


@dataclass
class WeightedSample:
    """A training sequence whose labelled tokens carry loss weights."""

    ids: list[int]
    labels: list[int]
    weights: list[float]


def weighted_token_loss(
    logits: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor, normalizer: float | None = None
) -> torch.Tensor:
    """sum(weight * cross-entropy) / sum(weight) over labelled tokens (`normalizer` replaces the sum of weights
    when a batch is split into micro-batches)."""
    losses = nn.functional.cross_entropy(logits.float(), labels, reduction="none")
    total = float(weights.sum()) if normalizer is None else normalizer
    return (losses * weights).sum() / total


@dataclass(kw_only=True)
class AlignerCheckpoint(TrainingCheckpoint):
    """An Aligner run's checkpoint: the Aligner's weights, with the optimizer's moments and the run's position."""

    weights: dict[str, torch.Tensor]


def _collate(samples: Sequence[WeightedSample], pad_id: int, device: torch.device) -> tuple[torch.Tensor, ...]:
    """Right-padded ids, attention mask, next-token labels and their weights."""
    length = max(len(s.ids) for s in samples)
    ids = torch.full((len(samples), length), pad_id, dtype=torch.long)
    mask = torch.zeros((len(samples), length), dtype=torch.long)
    labels = torch.full((len(samples), length), IGNORE, dtype=torch.long)
    weights = torch.zeros((len(samples), length))
    for row, sample in enumerate(samples):
        n = len(sample.ids)
        ids[row, :n] = torch.tensor(sample.ids)
        mask[row, :n] = 1
        labels[row, : n - 1] = torch.tensor(sample.labels[1:])
        weights[row, : n - 1] = torch.tensor(sample.weights[1:])
    return ids.to(device), mask.to(device), labels.to(device), weights.to(device)


class AlignerTrainer(TrainingLoop[Draw, AlignerCheckpoint]):
    """Trains `aligner` on `data` against the frozen model of `assistant`, where it attaches a placeholder
    concept named `identity` to own a slot (the step loop, checkpoints, cancel and resume are
    `engine.training.loop`'s).

    The predicted rows enter the model functionally: the slot's ids read their embeddings from each sample's
    own rows (a one-hot batched matmul, deterministic on CPU) and the slot's logits come from its head rows,
    exactly as `ConceptSlots` does for an attached concept. The base model and the encoder are never written.
    """

    config: AlignerTrainConfig

    def __init__(self, assistant: Assistant, aligner: Aligner, data: PreparedData, config: AlignerTrainConfig) -> None:
        loaded = assistant.loaded
        if aligner.config.text_hidden != loaded.config.hidden_size:
            raise AlignerError("the Aligner's text_hidden differs from the model's hidden size")
        if PLACEHOLDER not in assistant.slots.names():
            assistant.attach(assistant.slots.initial_state(PLACEHOLDER, loaded.tokenizer))
        self.assistant = assistant
        self.loaded = loaded
        self.aligner = aligner.to(loaded.device)
        self.data = data
        if config.distill_weight > 0 and data.targets is None:
            raise EngineError("distillation needs the identities' description targets (prepare_data with distill)")
        self.decision = Decision.of(loaded.tokenizer)
        items = len(data.identities) * config.samples_per_identity
        super().__init__(loaded, aligner.parameters(), config, items)
        self._qa = [fact_pairs("object", identity.facts, PLACEHOLDER) for identity in data.identities]
        embedding, head = self.model.get_input_embeddings(), self.model.get_output_embeddings()
        self._base_embedding: nn.Module = getattr(embedding, "base", embedding)
        self._base_head: nn.Module = getattr(head, "base", head)
        self._slot_ids = torch.tensor(assistant.slots.slot(PLACEHOLDER).ids, device=self.device)
        self._lookup = torch.full((loaded.config.vocab_size,), -1, dtype=torch.long, device=self.device)
        self._lookup[self._slot_ids] = torch.arange(SLOT_SIZE, device=self.device)

    def sample(self, draw: Draw) -> WeightedSample:
        """The token sequence of `draw`, with `answer_weight` on the tokens that say Yes or No."""
        prompts = self.assistant.prompts
        if draw.kind == "qa":
            question, answer = self._qa[draw.identity][draw.question]
            prompt = prompts.prompt(question, None, [PLACEHOLDER])
            target = prompts.text_target(answer, [PLACEHOLDER])
            weights = [1.0] * len(target)
        else:
            assert draw.query is not None
            question = RECOGNITION_QUESTIONS[draw.question].format(n=PLACEHOLDER)
            answers = POSITIVE_ANSWERS if draw.kind == "yes" else NEGATIVE_ANSWERS
            prompt = prompts.prompt(question, self.data.image_ids[draw.query].tolist(), [PLACEHOLDER])
            target = prompts.text_target(answers[draw.answer].format(n=PLACEHOLDER), [PLACEHOLDER])
            weights = [1.0] * len(target)
            opening = len(prompts.self_prompt([PLACEHOLDER], "text"))
            for position in self.decision.positions(target, opening, draw.kind == "yes"):
                weights[position] = self.config.answer_weight
        return WeightedSample([*prompt, *target], [IGNORE] * len(prompt) + target, [0.0] * len(prompt) + weights)

    def rows(self, references: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """The Aligner's embedding and head rows [B, 33, H] for the given reference photos."""
        index = torch.tensor(list(references))
        return self.aligner(self.data.cls[index].to(self.device), self.data.patches[index].to(self.device))

    def _hidden(self, ids: torch.Tensor, mask: torch.Tensor, embed_rows: torch.Tensor) -> torch.Tensor:
        """Last hidden states with the slot's ids embedded from each sample's own rows."""
        with torch.no_grad():
            base = self._base_embedding(ids)
        index = self._lookup[ids]
        onehot = nn.functional.one_hot(index.clamp(min=0), SLOT_SIZE).to(base.dtype)
        inputs = torch.where((index >= 0).unsqueeze(-1), torch.bmm(onehot, embed_rows.to(base.dtype)), base)
        return self.model.model(inputs_embeds=inputs, attention_mask=mask).last_hidden_state

    def _logits(self, hidden: torch.Tensor, rows_of: torch.Tensor, head_rows: torch.Tensor) -> torch.Tensor:
        """Logits of `hidden` [M, H]; position m takes its slot logits from the head rows of sample `rows_of[m]`."""
        logits = self._base_head(hidden)
        pick = nn.functional.one_hot(rows_of, head_rows.shape[0]).to(hidden.dtype)
        rows = pick @ head_rows.reshape(head_rows.shape[0], -1).to(hidden.dtype)
        slot_logits = torch.einsum("mh,mkh->mk", hidden, rows.view(len(rows_of), SLOT_SIZE, -1))
        return logits.index_copy(-1, self._slot_ids, slot_logits.to(logits.dtype))

    def _loss(
        self, draws: Sequence[Draw], samples: Sequence[WeightedSample], normalizer: float | None, batch: int
    ) -> torch.Tensor:
        """The answer loss of `draws` plus, with distillation, `distill_weight` times their distillation term
        summed and divided by `batch` (the whole batch's size when `draws` is one micro-batch of it)."""
        ids, mask, labels, weights = _collate(samples, int(self.loaded.tokenizer.pad_token_id), self.device)
        embed_rows, head_rows = self.rows([draw.reference for draw in draws])
        autocast = torch.autocast("cuda", dtype=torch.bfloat16) if self.device.type == "cuda" else nullcontext()
        with autocast:
            hidden = self._hidden(ids, mask, embed_rows)
            selected = labels != IGNORE
            logits = self._logits(hidden[selected], selected.nonzero()[:, 0], head_rows)
        loss = weighted_token_loss(logits, labels[selected], weights[selected], normalizer)
        if self.config.distill_weight > 0:
            assert self.data.targets is not None
            target = self.data.targets[[draw.identity for draw in draws]].to(self.device)
            loss = loss + self.config.distill_weight * distill_loss(embed_rows[:, 1:], target).sum() / batch
        return loss

    def loss(self, draws: Sequence[Draw]) -> torch.Tensor:
        """Weighted next-token cross-entropy of `draws` (see `weighted_token_loss`), plus the weighted
        distillation term where the run distils."""
        return self._loss(draws, [self.sample(draw) for draw in draws], None, len(draws))

    @torch.no_grad()
    def says_yes(self, reference: int, query: int, data: PreparedData | None = None) -> bool:
        """Whether the model, given rows from photo `reference`, answers yes to "Is <identity> in this photo?"
        about photo `query` (the Yes token's logit against the No token's, after the self-prompt)."""
        data = data or self.data
        prompts = self.assistant.prompts
        question = RECOGNITION_QUESTIONS[0].format(n=PLACEHOLDER)
        ids = prompts.prompt(question, data.image_ids[query].tolist(), [PLACEHOLDER])
        ids += [*prompts.self_prompt([PLACEHOLDER], "text"), *self.decision.prefix]
        embed_rows, head_rows = self.aligner(
            data.cls[[reference]].to(self.device), data.patches[[reference]].to(self.device)
        )
        tensor = torch.tensor([ids], device=self.device)
        hidden = self._hidden(tensor, torch.ones_like(tensor), embed_rows)[0, -1:]
        logits = self._logits(hidden, torch.zeros(1, dtype=torch.long, device=self.device), head_rows)[0]
        return bool(logits[self.decision.yes[0]] > logits[self.decision.no[0]])

    def recognition(self, data: PreparedData, negatives_per_identity: int = 4) -> dict[str, float]:
        """Accuracy with rows from each identity's designated reference photo, on its query photos (yes) and
        on the reference photos of the next `negatives_per_identity` identities (no), and their mean."""
        self.aligner.eval()
        n = len(data.identities)
        positives, negatives = [], []
        for i, photos in enumerate(data.photo_ranges):
            positives += [self.says_yes(photos[0], query, data) for query in photos[1:]]
            others = [data.photo_ranges[(i + k) % n][0] for k in range(1, min(negatives_per_identity, n - 1) + 1)]
            negatives += [not self.says_yes(photos[0], query, data) for query in others]
        positive, negative = sum(positives) / len(positives), sum(negatives) / len(negatives)
        return {
            "recognition_positive": positive,
            "recognition_negative": negative,
            "recognition": (positive + negative) / 2,
        }

    def epoch_items(self, epoch: int) -> list[Draw]:
        return plan_epoch(self.data, self.config, epoch)

    def batch_loss(self, batch: Sequence[Draw]) -> Callable[[slice], torch.Tensor]:
        samples = [self.sample(draw) for draw in batch]
        normalizer = sum(sum(sample.weights) for sample in samples)
        return lambda part: self._loss(batch[part], samples[part], normalizer, len(batch))

    def checkpoint(self, common: TrainingCheckpoint) -> AlignerCheckpoint:
        weights = {k: v.detach().cpu().clone() for k, v in self.aligner.state_dict().items()}
        return AlignerCheckpoint(**vars(common), weights=weights)

    def restore(self, checkpoint: AlignerCheckpoint) -> None:
        self.aligner.load_state_dict(checkpoint.weights)

    def train_mode(self, on: bool) -> None:
        self.aligner.train(on)


def resume_path(output: Path) -> Path:
    """Where a run writing `output` keeps what it needs to resume: `NAME.resume.safetensors` beside it."""
    return output.with_name(output.name.removesuffix(".safetensors") + RESUME_SUFFIX)


def _training_metadata(trainer: AlignerTrainer, checkpoint: AlignerCheckpoint) -> dict[str, str]:
    data = trainer.data
    return aligner_metadata(
        trainer.aligner.config,
        trainer.loaded.fingerprint,
        data.encoder,
        {
            "train_config": trainer.config.to_json(),
            "dataset_digest": data.digest,
            "identities": str(len(data.identities)),
            "photos": str(len(data.cls)),
            "step": str(checkpoint.step),
            "epoch": str(checkpoint.epoch),
            "total_steps": str(trainer.total_steps),
        },
    )


def save_checkpoint(output: Path, trainer: AlignerTrainer, checkpoint: AlignerCheckpoint) -> None:
    """Write the usable Aligner to `output` and, unless the run is finished, its resume file beside it
    (weights, AdamW moments, step and loss history); a finished run removes the resume file."""
    metadata = _training_metadata(trainer, checkpoint)
    save_aligner(output, checkpoint.weights, metadata)
    sidecar = resume_path(output)
    if checkpoint.final:
        sidecar.unlink(missing_ok=True)
        return
    tensors = {f"aligner.{k}": v for k, v in checkpoint.weights.items()}
    tensors |= {f"optimizer.{k}": v for k, v in load_tensors(checkpoint.optimizer).items()}
    resume = {**metadata, "format": RESUME_FORMAT, "losses": json.dumps(checkpoint.losses)}
    if trainer.data.descriptions is not None:
        resume["descriptions"] = json.dumps(trainer.data.descriptions)
    write_atomic(sidecar, save_tensors({k: v.contiguous() for k, v in tensors.items()}, metadata=resume))


def load_resume(
    output: Path, loaded: LoadedModel, encoder: ImageEncoder, digest: str
) -> tuple[Aligner, AlignerTrainConfig, AlignerCheckpoint, list[list[str]] | None]:
    """The interrupted run writing `output`: its Aligner, its own options, its last checkpoint and, where it
    distils, its descriptions of the photos. Refused for another base model, encoder or dataset."""
    sidecar = resume_path(output)
    if not sidecar.is_file():
        raise AlignerError(f"no interrupted run to resume: {sidecar} does not exist")
    tensors, metadata = read_aligner_file(sidecar, RESUME_FORMAT)
    check_bindings(metadata, loaded.fingerprint, encoder, str(sidecar))
    if metadata.get("dataset_digest") != digest:
        raise AlignerError(f"the dataset changed since {sidecar} was written; start a new run instead")
    weights = {k.removeprefix("aligner."): v for k, v in tensors.items() if k.startswith("aligner.")}
    moments = {k.removeprefix("optimizer."): v for k, v in tensors.items() if k.startswith("optimizer.")}
    aligner = build_aligner(weights, metadata, str(sidecar))
    config = AlignerTrainConfig.from_json(metadata["train_config"])
    losses = [float(x) for x in json.loads(metadata["losses"])]
    checkpoint = AlignerCheckpoint(
        weights=weights,
        optimizer=save_tensors(moments),
        step=int(metadata["step"]),
        epoch=int(metadata["epoch"]),
        losses=losses,
    )
    descriptions = json.loads(metadata["descriptions"]) if "descriptions" in metadata else None
    return aligner, config, checkpoint, descriptions


def train_aligner(
    loaded: LoadedModel,
    encoder: ImageEncoder,
    dataset: Path,
    output: Path,
    aligner_config: AlignerConfig,
    config: AlignerTrainConfig,
    *,
    resume: bool = False,
    progress: ProgressCallback | None = None,
    cancelled: Callable[[], bool] | None = None,
    status: Callable[[str], None] | None = None,
) -> list[float]:
    """Train an Aligner for `loaded` on the identity folders in `dataset`, checkpointing to `output` at every
    epoch and on cancel (then raising TrainingCancelled). `resume=True` continues the interrupted run
    writing `output`, with that run's own options; `aligner_config` and `config` are then ignored."""
    report = status or (lambda _m: None)
    identities = read_dataset(dataset)
    checkpoint, descriptions = None, None
    if resume:
        aligner, config, checkpoint, descriptions = load_resume(output, loaded, encoder, dataset_digest(identities))
        report(f"resuming at step {checkpoint.step}")
        if descriptions is not None:
            report(f"the photos' descriptions of {len(descriptions)} identities come from the resume file")
    else:
        if output.exists() or resume_path(output).exists():
            raise AlignerError(f"{output} (or its resume file) exists; remove it, choose another -o, or use --resume")
        aligner = new_aligner(aligner_config, loaded, seed=config.seed)
    check_encoder(aligner, encoder, str(output))
    distill = config.distill_weight > 0
    data = prepare_data(identities, loaded, encoder, aligner.config.image_size, report, distill, descriptions)
    trainer = AlignerTrainer(Assistant(loaded), aligner, data, config)
    report(f"{trainer.total_steps} steps over {len(identities)} identities")
    return trainer.run(progress, cancelled, lambda c: save_checkpoint(output, trainer, c), checkpoint)
