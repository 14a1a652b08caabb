"""Personalize a concept from the library: build its data, train, checkpoint into the library, select.

Decisions (see docs/training.md): photos with the `test` role are held out for selection; when there
are none and the concept has three or more photos, its last photo is held out. Negatives are the other
concepts' photos plus, with an index, the retrieval plan's hard and easy negatives; a fifth of them
(at least one) is held out for selection. The base model describes each training photo once (greedy,
no concept loaded) and those descriptions become question-answer targets. Every epoch ends with a
checkpoint scored on the held-out photos; the best score becomes the concept's active version.

`train_concept` loads its own model unless it is handed one that is already loaded (the desktop app's): it
then detaches every concept from that model first, so training sees the model exactly as freshly loaded, and
detaches the trained concept again at the end. With `remote_knn_url` set (the user's opt-in), look-alikes are
asked of that clip-retrieval service, sending only the mean photo embedding; a failure falls back to the
offline index with a note in the run's log and status. Without it, nothing opens a socket.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from PIL import Image

from engine.concepts.state import ConceptState
from engine.errors import EngineError
from engine.evaluation.metrics import clip_i
from engine.inference.assistant import Assistant
from engine.model.images import open_image
from engine.model.loading import load_model
from engine.training.data import ConceptData, DataMix, augmentations, build_samples, class_word, describe_photos
from engine.training.selection import ImageSimilarity, score
from engine.training.trainer import Checkpoint, Progress, TrainConfig, Trainer, TrainingCancelled
from store.library import Library
from store.models import Photo, Run

ENCODE_BATCH = 8
REPORT_EVERY_S = 1.0
NOTE = "note: "  # starts a status or log line that warns (e.g. the remote kNN service failed)


@dataclass(frozen=True)
class TrainOptions:
    model: str = "demo"
    device: str = "auto"
    epochs: int = 15
    soft_positives: int = 1000
    seed: int = 0
    learning_rate: float = 1e-3
    micro_batch: int = 4
    negatives: int = 200
    recognition_per_photo: int = 4
    generation_per_photo: int = 2
    qa_repeats: int = 2
    augment: bool = True
    describe_photos: bool = True
    index: str | None = None
    embedder_weights: str | None = None
    remote_knn_url: str | None = None


@dataclass
class Prepared:
    """Everything a run needs, built deterministically from the library so a resumed run matches."""

    assistant: Assistant
    trainer: Trainer
    held_out: list[list[int]]
    held_out_negatives: list[list[int]]
    real_photos: list[Image.Image]
    similarity: ImageSimilarity | None
    notes: list[str]  # for the run's log: where look-alikes came from, and NOTE lines (e.g. a remote fallback)


def _encode(assistant: Assistant, images: list[Image.Image]) -> list[list[int]]:
    tokenizer = assistant.loaded.image_tokenizer
    out: list[list[int]] = []
    for start in range(0, len(images), ENCODE_BATCH):
        out += [row.tolist() for row in tokenizer.encode(images[start : start + ENCODE_BATCH])]
    return out


def _start_state(library: Library, assistant: Assistant, name: str, kind: str, facts: str) -> ConceptState:
    """An instant concept's rows when the concept has one (refine), else the class word's rows."""
    active = library.tokens.active(name)
    if active is not None and active.kind == "instant":
        state = ConceptState.from_bytes(library.tokens.read_bytes(active), assistant.loaded.fingerprint)
        state.name = name
        return state
    return assistant.slots.initial_state(name, assistant.loaded.tokenizer, class_word(kind, facts))


@dataclass
class Retrieved:
    """Soft-positive tiers (token count, images as VQ ids) and retrieved negatives (VQ ids)."""

    tiers: list[tuple[int, list[list[int]]]]
    negatives: list[list[int]]
    similarity: ImageSimilarity
    source: str
    warnings: list[str]


def retrieve(library: Library, assistant: Assistant, name: str, train: list[Photo], options: TrainOptions) -> Retrieved:
    """Plan soft positives and hard/easy negatives, then get their VQ tokens: from the index where it holds
    tokens for this base model, else by encoding the image file. Neighbours come from the remote kNN service
    when `options.remote_knn_url` is set (downloads go to a temporary folder in the library, removed after
    encoding), else or on its failure from the offline index; `source` says which, `warnings` why."""
    assert options.index is not None
    with tempfile.TemporaryDirectory(prefix="remote-knn-", dir=library.layout.tmp) as downloads:
        return _retrieve(library, assistant, name, train, options, Path(downloads))


def _retrieve(
    library: Library, assistant: Assistant, name: str, train: list[Photo], options: TrainOptions, downloads: Path
) -> Retrieved:
    from engine.retrieval.embedder import load_embedder_for
    from engine.retrieval.index import EmbeddingIndex, Neighbour
    from engine.retrieval.plan import ConceptPhoto, PlanSettings, plan_concept, read_concept_photos
    from engine.retrieval.remote_knn import RemoteKnnSettings

    assert options.index is not None
    index = EmbeddingIndex(Path(options.index))
    remote = RemoteKnnSettings(enabled=True, url=options.remote_knn_url) if options.remote_knn_url else None
    embedder = load_embedder_for(index.embedder, options.embedder_weights, device=assistant.loaded.device)
    photos, embeddings = read_concept_photos([p.path for p in train], embedder)
    others = {
        c.name: [ConceptPhoto(str(p.path), p.sha256) for p in library.concepts.photos(c.name)]
        for c in library.concepts.list()
        if c.name.lower() != name
    }
    hard = easy = options.negatives // 2
    settings = PlanSettings(
        top_n=options.soft_positives, num_hard_negatives=hard, num_easy_negatives=easy, seed=options.seed
    )
    plan = plan_concept(name, photos, embeddings, index, others, settings, remote, embedder, downloads)
    where = "the remote kNN service" if plan.source == "remote" else f"the offline index {index.path}"
    source = f"{len(plan.soft_positives)} look-alikes from {where}"
    vq = (plan.index or {}).get("vq") or {}
    stored = index.vq_tokens if vq.get("model_fingerprint") == assistant.loaded.fingerprint else None

    def tokens(images: list[Neighbour]) -> list[list[int]]:
        if stored is not None and all(image.row is not None for image in images):
            return [stored[image.row].tolist() for image in images]
        return _encode(assistant, [open_image(Path(image.source)) for image in images])

    def similarity(generated: Sequence[Image.Image], real: Sequence[Image.Image]) -> float:
        """Cosine of each generated image to the normalised mean of the real photos (CLIP-I)."""
        return clip_i(embedder.embed(list(generated)), embedder.embed(list(real)))

    tiers = [(tier.num_tokens, tokens(tier.images)) for tier in plan.tiers]
    return Retrieved(tiers, tokens(plan.hard_negatives + plan.easy_negatives), similarity, source, plan.warnings)


def prepare(
    library: Library, name: str, options: TrainOptions, report: Callable[[str], None], assistant: Assistant
) -> Prepared:
    concept = library.concepts.get(name)
    key = concept.name.lower()
    photos = library.concepts.photos(name)
    train = [p for p in photos if p.role != "test"]
    test = [p for p in photos if p.role == "test"]
    if not test and len(train) >= 3:
        train, test = train[:-1], train[-1:]
    if not train:
        raise EngineError(f"<{concept.name}> has no training photos: add 3-5 photos first")
    train_images = [open_image(p.path) for p in train]
    descriptions = []
    if options.describe_photos:
        report("describing the photos with the base model")
        descriptions = describe_photos(assistant, train_images)
    assistant.attach(_start_state(library, assistant, key, concept.kind, concept.facts))
    report("encoding photos")
    others = [
        p for other in library.concepts.list() if other.id != concept.id for p in library.concepts.photos(other.name)
    ]
    negatives = _encode(assistant, [open_image(p.path) for p in others[: options.negatives]])
    tiers: list[tuple[int, list[list[int]]]] = []
    similarity = None
    sources: list[str] = []
    warnings: list[str] = []
    if options.index is None and options.remote_knn_url:
        warnings.append("the remote kNN service is on but no offline index is set: training uses your photos only")
    elif options.index is not None:
        source = "the remote kNN service" if options.remote_knn_url else "the index"
        report(f"retrieving look-alikes and negatives from {source}")
        retrieved = retrieve(library, assistant, key, train, options)
        tiers, negatives, similarity = retrieved.tiers, negatives + retrieved.negatives, retrieved.similarity
        report(retrieved.source)
        sources, warnings = [retrieved.source], retrieved.warnings
    for warning in warnings:
        report(f"{NOTE}{warning}")
    held_negatives = max(1, len(negatives) // 5) if negatives else 0
    data = ConceptData(
        name=key,
        kind=concept.kind,
        photos=_encode(assistant, augmentations(train_images) if options.augment else train_images),
        negatives=negatives[held_negatives:],
        facts=concept.facts,
        descriptions=descriptions,
        soft_positive_tiers=tiers,
    )
    mix = DataMix(
        recognition_positive_per_photo=options.recognition_per_photo,
        recognition_negatives=len(data.negatives),
        qa_repeats=options.qa_repeats,
        generation_per_photo=options.generation_per_photo,
        soft_positives=options.soft_positives,
    )
    samples = build_samples(assistant.prompts, data, mix, options.seed)
    config = TrainConfig(
        epochs=options.epochs, learning_rate=options.learning_rate, seed=options.seed, micro_batch=options.micro_batch
    )
    return Prepared(
        assistant=assistant,
        trainer=Trainer(assistant, key, samples, config),
        held_out=_encode(assistant, [open_image(p.path) for p in test]),
        held_out_negatives=negatives[:held_negatives],
        real_photos=train_images,
        similarity=similarity,
        notes=sources + [f"{NOTE}{warning}" for warning in warnings],
    )


def _resumable(library: Library, name: str) -> tuple[Run, Checkpoint]:
    """The concept's latest interrupted or cancelled run and its last checkpoint."""
    for run in library.runs.list(name):
        if run.status in ("failed", "cancelled"):
            saved = library.runs.checkpoints(run.id)
            if not saved or saved[-1].optimizer_state is None:
                break
            last = saved[-1]
            checkpoint = Checkpoint(
                state=ConceptState.load(last.path),
                optimizer=last.optimizer_state.read_bytes(),
                step=last.step,
                epoch=last.epoch,
            )
            return run, checkpoint
        if run.status == "done":
            break
    raise EngineError(f"<{name}> has no interrupted training run with a checkpoint to resume")


def _detach_all(assistant: Assistant) -> None:
    for loaded in assistant.slots.names():
        assistant.slots.detach(loaded)


def train_concept(
    library: Library,
    name: str,
    options: TrainOptions,
    progress: Callable[[Progress], None] | None = None,
    cancelled: Callable[[], bool] | None = None,
    status: Callable[[str], None] | None = None,
    resume: bool = False,
    similarity: ImageSimilarity | None = None,
    assistant: Assistant | None = None,
) -> Run:
    """Train `name` and make the best checkpoint its active version; returns the finished run.

    Cancelling saves a checkpoint and returns the run marked cancelled; `resume=True` continues the
    latest interrupted or cancelled run from its last checkpoint, with that run's options. With `assistant`
    (a model already loaded) no model is loaded (`options.model` and `device` are only recorded); every concept
    is detached from it before training and none is left attached afterwards. The caller must not use the
    model for anything else until this returns.
    """
    report = status or (lambda _m: None)
    run, resume_from = None, None
    if resume:
        run, resume_from = _resumable(library, name)
        options = TrainOptions(**{**asdict(options), **run.config})
    if assistant is None:
        report("loading the model")
        assistant = Assistant(load_model(options.model, device=options.device))
    if (
        run is not None
        and resume_from is not None
        and resume_from.state.base_fingerprint != assistant.loaded.fingerprint
    ):
        raise EngineError(
            f"run {run.id} of <{name}> was trained on another base model; load that model to resume it, "
            "or train the concept again"
        )
    _detach_all(assistant)
    try:
        return _train(library, name, options, progress, cancelled, report, run, resume_from, similarity, assistant)
    finally:
        _detach_all(assistant)


def _train(
    library: Library,
    name: str,
    options: TrainOptions,
    progress: Callable[[Progress], None] | None,
    cancelled: Callable[[], bool] | None,
    report: Callable[[str], None],
    run: Run | None,
    resume_from: Checkpoint | None,
    similarity: ImageSimilarity | None,
    assistant: Assistant,
) -> Run:
    prepared = prepare(library, name, options, report, assistant)
    trainer = prepared.trainer
    if run is None or resume_from is None:
        run = library.runs.create(name, asdict(options))
        library.runs.start(run.id)
    else:
        library.runs.resume(run.id)
    library.runs.log(run.id, f"{len(trainer.samples)} samples, {trainer.total_steps} steps")
    for note in prepared.notes:
        library.runs.log(run.id, note)
    last_report = 0.0

    def on_progress(update: Progress) -> None:
        nonlocal last_report
        if progress is not None:
            progress(update)
        if time.monotonic() - last_report >= REPORT_EVERY_S or update.step == update.total:
            last_report = time.monotonic()
            message = f"epoch {update.epoch + 1}, loss {update.loss:.3f}" if update.loss is not None else update.phase
            library.runs.report(
                run.id, update.step / update.total, step=update.step, total_steps=update.total, message=message
            )

    def on_checkpoint(checkpoint: Checkpoint) -> None:
        report(f"scoring the checkpoint at step {checkpoint.step}")
        scores = score(
            prepared.assistant,
            trainer.name,
            prepared.held_out,
            prepared.held_out_negatives,
            prepared.real_photos,
            similarity or prepared.similarity,
            seed=options.seed,
        )
        window = checkpoint.losses[-trainer.steps_per_epoch :]
        metrics = {**scores.as_dict(), "loss": sum(window) / max(len(window), 1)}
        optimizer = library.runs.folder(run.id) / f"optimizer-{checkpoint.step:07d}.safetensors"
        optimizer.write_bytes(checkpoint.optimizer)
        library.runs.add_checkpoint(
            run.id,
            checkpoint.state.to_bytes(),
            step=checkpoint.step,
            epoch=checkpoint.epoch,
            metrics=metrics,
            optimizer_state=optimizer,
        )
        library.runs.log(
            run.id, f"checkpoint at step {checkpoint.step}: " + ", ".join(f"{k} {v:.3f}" for k, v in metrics.items())
        )

    try:
        trainer.run(on_progress, cancelled, on_checkpoint, resume_from)
    except TrainingCancelled as stop:
        library.runs.log(run.id, f"cancelled at step {stop.checkpoint.step}")
        return library.runs.finish(run.id, "cancelled")
    except BaseException as exc:
        library.runs.finish(run.id, "failed", error=f"{type(exc).__name__}: {exc}")
        raise
    best = max(library.runs.checkpoints(run.id), key=lambda c: (c.metrics.get("score", 0.0), c.step))
    library.tokens.add_from_checkpoint(best.id)
    return library.runs.finish(run.id, "done", metrics={**best.metrics, "best_step": best.step})
