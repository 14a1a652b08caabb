"""Personalize a concept from the library: build its data, train, checkpoint into the library, select.

Decisions (see docs/training.md): photos with the `test` role are held out for selection; when there
are none and the concept has three or more photos, its last photo is held out. Negatives are the other
concepts' photos plus, with an index, the retrieval plan's hard and easy negatives; a fifth of them
(at least one) is held out for selection. With no index named, the demo model uses its bundled subset
(`resources/demo-subset`, engine/microworld/subset.py) unless `bundled_index` is off, so even the first concept
of an empty library has look-alikes and negatives. The base model describes each training photo once (greedy,
no concept loaded) and those descriptions become question-answer targets. Every epoch ends with a
checkpoint scored on the held-out photos; the best score becomes the concept's active version. The run keeps
every step's loss (written at each checkpoint) and a check (scores and sample picture) before training and at
each checkpoint.

`train_concept` loads its own model unless it is handed one that is already loaded (the desktop app's): it
then detaches every concept from that model first, so training sees the model exactly as freshly loaded, and
detaches the trained concept again at the end. With `remote_knn_url` set (the user's opt-in), look-alikes are
asked of that clip-retrieval service, sending only the mean photo embedding; a failure falls back to the
offline index with a warning (`engine.progress.Notice`) in the run's log and status. Without it, nothing opens a socket.
"""

from __future__ import annotations

import io
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from engine.atomic_write import write_atomic
from engine.concepts.layout import DEFAULT_LAYOUT, PromptLayout
from engine.errors import EngineError
from engine.progress import Notice, Status
from engine.training.metrics_text import shown
from engine.training.recipe import Recipe
from store.library import Library
from store.models import Concept, Photo, Run, RunCheck

if TYPE_CHECKING:  # torch-heavy modules are imported by the functions that use them
    from PIL import Image

    from engine.concepts.state import ConceptState
    from engine.inference.assistant import Assistant
    from engine.progress import Progress, ProgressCallback
    from engine.training.personalization import Check, ConceptPhotos, Scored
    from engine.training.selection import ImageSimilarity
    from engine.training.trainer import Checkpoint

REPORT_EVERY_S = 1.0
RESTARTED = "run {run} stopped before its first epoch's checkpoint"


@dataclass(frozen=True)
class TrainOptions(Recipe):
    """A run's recipe (its defaults are `Recipe`'s) and where it runs: the model, the device, and where
    look-alikes come from. Stored flat as the run's config, so a resumed run uses its own options."""

    model: str = "demo"
    device: str = "auto"
    index: str | None = None
    bundled_index: bool = True
    """With no `index`, use the demo model's bundled subset (only on the demo model it was built for)."""
    embedder_weights: str | None = None
    remote_knn_url: str | None = None

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> TrainOptions:
        """The options stored with a run (older runs lack some fields: they take the defaults, except that a run
        from before the bundled subset or early stopping existed resumes without them, as it started)."""
        known = {k: v for k, v in config.items() if k in cls.__dataclass_fields__}
        known.setdefault("bundled_index", False)
        known.setdefault("patience", 0)
        if isinstance(known.get("layout"), dict):
            known["layout"] = PromptLayout(**known["layout"])
        return cls(**known)


@dataclass
class Retrieved:
    """Soft-positive tiers (token count, images as VQ ids) and retrieved negatives (VQ ids)."""

    tiers: list[tuple[int, list[list[int]]]]
    negatives: list[list[int]]
    similarity: ImageSimilarity
    source: str
    warnings: list[str]


def _start_state(library: Library, assistant: Assistant, name: str) -> ConceptState | None:
    """An instant concept's rows when the concept has one (training refines them), else None (the class word)."""
    from engine.concepts.state import ConceptState

    active = library.tokens.active(name)
    if active is not None and active.kind == "instant":
        return ConceptState.from_bytes(library.tokens.read_bytes(active), assistant.loaded.fingerprint)
    return None


def retrieve(
    library: Library, assistant: Assistant, name: str, train: list[Photo], options: TrainOptions, index: Path
) -> Retrieved:
    """Plan soft positives and hard/easy negatives, then get their VQ tokens: from the index where it holds
    tokens for this base model, else by encoding the image file. Neighbours come from the remote kNN service
    when `options.remote_knn_url` is set (downloads go to a temporary folder in the library, removed after
    encoding), else or on its failure from the offline index at `index`; `source` says which, `warnings` why."""
    with tempfile.TemporaryDirectory(prefix="remote-knn-", dir=library.layout.tmp) as downloads:
        return _retrieve(library, assistant, name, train, options, index, Path(downloads))


def _retrieve(
    library: Library,
    assistant: Assistant,
    name: str,
    train: list[Photo],
    options: TrainOptions,
    index_path: Path,
    downloads: Path,
) -> Retrieved:
    from engine.evaluation.metrics import clip_i
    from engine.model.images import open_image
    from engine.retrieval.embedder import load_embedder_for
    from engine.retrieval.index import EmbeddingIndex, Neighbour
    from engine.retrieval.plan import ConceptPhoto, PlanSettings, plan_concept, read_concept_photos
    from engine.retrieval.remote_knn import RemoteKnnSettings
    from engine.training.personalization import encode

    index = EmbeddingIndex(index_path)
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
        num_generation_tokens=options.layout.tokens,
        top_n=options.soft_positives,
        num_hard_negatives=hard,
        num_easy_negatives=easy,
        seed=options.seed,
    )
    plan = plan_concept(name, photos, embeddings, index, others, settings, remote, embedder, downloads)
    where = "the remote kNN service" if plan.source == "remote" else f"the offline index {index.path}"
    source = f"{len(plan.soft_positives)} look-alikes from {where}"
    vq = (plan.index or {}).get("vq") or {}
    stored = index.vq_tokens if vq.get("model_fingerprint") == assistant.loaded.fingerprint else None

    def tokens(images: list[Neighbour]) -> list[list[int]]:
        if stored is not None and all(image.row is not None for image in images):
            return [stored[image.row].tolist() for image in images]
        return encode(assistant, [open_image(Path(image.source)) for image in images])

    def similarity(generated: Sequence[Image.Image], real: Sequence[Image.Image]) -> float:
        """Cosine of each generated image to the normalised mean of the real photos (CLIP-I)."""
        return clip_i(embedder.embed(list(generated)), embedder.embed(list(real)))

    tiers = [(tier.num_tokens, tokens(tier.images)) for tier in plan.tiers]
    return Retrieved(tiers, tokens(plan.hard_negatives + plan.easy_negatives), similarity, source, plan.warnings)


def index_to_use(options: TrainOptions, assistant: Assistant) -> tuple[Path | None, list[str]]:
    """The offline index a run reads (the named one, else the demo model's bundled subset where it applies) and
    warnings about a bundled subset that cannot be used."""
    if options.index is not None:
        return Path(options.index), []
    if not options.bundled_index or not assistant.loaded.is_demo:
        return None, []
    from engine.microworld.subset import bundled_subset_path
    from engine.retrieval.index import Manifest

    path = bundled_subset_path()
    try:
        vq = Manifest.read(path).vq
    except EngineError as exc:
        return None, [f"the bundled subset cannot be read ({exc}): training uses your photos only"]
    if vq is None or vq.model_fingerprint != assistant.loaded.fingerprint:
        return None, [
            "the bundled subset was built for another build of the demo model: training uses your photos only "
            "(rebuild it with scripts/build_demo_subset.py)"
        ]
    return path, []


def split_photos(photos: Sequence[Photo]) -> tuple[list[Photo], list[Photo]]:
    """(training photos, held-out photos): those with the `test` role are held out; when there are none and
    the concept has three or more photos, its last photo is."""
    train = [p for p in photos if p.role != "test"]
    test = [p for p in photos if p.role == "test"]
    if not test and len(train) >= 3:
        train, test = train[:-1], train[-1:]
    return train, test


def _photos(library: Library, name: str) -> tuple[Concept, list[Photo], list[Photo]]:
    """The concept, its training and held-out photos; an unknown concept or one without training photos is a
    clear error (checked before any model loads)."""
    concept = library.concepts.get(name)
    train, test = split_photos(library.concepts.photos(name))
    if not train:
        raise EngineError(f"<{concept.name}> has no training photos: add 3-5 photos first")
    return concept, train, test


def gather(
    library: Library, name: str, options: TrainOptions, report: Status, assistant: Assistant
) -> tuple[ConceptPhotos, list[str | Notice]]:
    """What the library holds for `name`, as the recipe's input, and lines for the run's log (where look-alikes
    came from, and warnings such as a remote fallback). Negatives: the other concepts' photos, then the
    retrieval plan's hard and easy ones."""
    from engine.model.images import open_image
    from engine.training.personalization import ConceptPhotos, encode

    concept, train, test = _photos(library, name)
    key = concept.name.lower()
    others = [
        p for other in library.concepts.list() if other.id != concept.id for p in library.concepts.photos(other.name)
    ]
    photos = ConceptPhotos(
        name=key,
        kind=concept.kind,
        photos=[open_image(p.path) for p in train],
        held_out=[open_image(p.path) for p in test],
        negatives=encode(assistant, [open_image(p.path) for p in others[: options.negatives]]),
        facts=concept.facts,
        start=_start_state(library, assistant, key),
    )
    sources: list[str] = []
    index, warnings = index_to_use(options, assistant)
    if index is None and options.remote_knn_url:
        warnings.append("the remote kNN service is on but no offline index is set: training uses your photos only")
    elif index is not None:
        source = "the remote kNN service" if options.remote_knn_url else "the index"
        report(f"retrieving look-alikes and negatives from {source}")
        retrieved = retrieve(library, assistant, key, train, options, index)
        photos.soft_positive_tiers = retrieved.tiers
        photos.negatives += retrieved.negatives
        photos.similarity = retrieved.similarity
        report(retrieved.source)
        sources, warnings = [retrieved.source], [*warnings, *retrieved.warnings]
    notices = [Notice(warning) for warning in warnings]
    for notice in notices:
        report(notice)
    return photos, [*sources, *notices]


def _resumable(library: Library, name: str) -> tuple[Run, Checkpoint | None, list[Scored]]:
    """The concept's latest interrupted or cancelled run, its last checkpoint and its scored checkpoints; a run
    stopped before its first epoch's checkpoint comes with no checkpoint (it starts again from the beginning, from
    its start rows where they were kept as step 0)."""
    from engine.concepts.state import ConceptState
    from engine.training.personalization import Scored
    from engine.training.trainer import Checkpoint

    run = library.runs.interrupted(name)
    if run is None:
        raise EngineError(f"<{name}> has no interrupted training run to resume")
    saved = library.runs.checkpoints(run.id)
    if not saved:
        return run, None, []
    earlier = [
        Scored(
            Checkpoint(state=ConceptState.load(c.path), optimizer=b"", step=c.step, epoch=c.epoch),
            dict(c.metrics),
        )
        for c in saved
    ]
    last = saved[-1]
    if last.step == 0:
        return run, None, earlier
    if last.optimizer_state is None:
        raise EngineError(f"run {run.id} of <{name}> kept no optimizer state to resume from; train <{name}> again")
    losses = [loss for step, loss in library.runs.losses(run.id) if step <= last.step]
    checkpoint = Checkpoint(
        state=earlier[-1].checkpoint.state,
        optimizer=last.optimizer_state.read_bytes(),
        step=last.step,
        epoch=last.epoch,
        losses=losses if len(losses) == last.step else [],
    )
    return run, checkpoint, earlier


def _detach_all(assistant: Assistant) -> None:
    for loaded in assistant.slots.names():
        assistant.slots.detach(loaded)


def train_concept(
    library: Library,
    name: str,
    options: TrainOptions,
    progress: ProgressCallback | None = None,
    cancelled: Callable[[], bool] | None = None,
    status: Status | None = None,
    resume: bool = False,
    similarity: ImageSimilarity | None = None,
    assistant: Assistant | None = None,
    checked: Callable[[RunCheck], None] | None = None,
) -> Run:
    """Train `name` and make the best checkpoint its active version; returns the finished run. `checked` gets each
    check the run keeps (before training and at every checkpoint) once it is in the library.

    Cancelling saves a checkpoint and returns the run marked cancelled; `resume=True` continues the
    latest interrupted or cancelled run from its last checkpoint, with that run's options (a run stopped before
    its first epoch's checkpoint starts again from the beginning, and `status` says so). With `assistant`
    (a model already loaded) no model is loaded (`options.model` and `device` are only recorded); every concept
    is detached from it before training and none is left attached afterwards. The caller must not use the
    model for anything else until this returns.
    """
    report = status or (lambda _m: None)
    run, resume_from, earlier = None, None, []
    if resume:
        run, resume_from, earlier = _resumable(library, name)
        options = TrainOptions.from_config({**asdict(options), **run.config})
        if resume_from is None:
            report(f"{RESTARTED.format(run=run.id)}; starting it again from the beginning")
    if options.layout != DEFAULT_LAYOUT:
        raise EngineError("library concepts use the default prompt layout; other layouts are for the benchmark")
    _photos(library, name)
    if assistant is None:
        from engine.inference.assistant import Assistant
        from engine.model.loading import load_model

        report("loading the model")
        assistant = Assistant(load_model(options.model, device=options.device, train_micro_batch=options.micro_batch))
    else:
        from engine.model.loading import check_training_memory

        check_training_memory(assistant.loaded, options.micro_batch)
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
        return _train(
            library,
            name,
            options,
            progress,
            cancelled,
            report,
            run,
            resume_from,
            earlier,
            similarity,
            assistant,
            checked,
        )
    finally:
        _detach_all(assistant)


def _train(
    library: Library,
    name: str,
    options: TrainOptions,
    progress: ProgressCallback | None,
    cancelled: Callable[[], bool] | None,
    report: Status,
    run: Run | None,
    resume_from: Checkpoint | None,
    earlier: list[Scored],
    similarity: ImageSimilarity | None,
    assistant: Assistant,
    checked: Callable[[RunCheck], None] | None,
) -> Run:
    from engine.training import personalization
    from engine.training.loop import TrainingCancelled

    concept, notes = gather(library, name, options, report, assistant)
    if similarity is not None:
        concept.similarity = similarity
    if resume_from is None and earlier:
        concept.start = earlier[0].checkpoint.state
    if run is None:
        run = library.runs.create(name, asdict(options))
        library.runs.start(run.id)
    else:
        library.runs.resume(run.id)
        if resume_from is None:
            library.runs.log(run.id, f"{RESTARTED.format(run=run.id)}: started again from the beginning")
        library.runs.forget_losses_after(run.id, resume_from.step if resume_from is not None else 0)
    recorded = resume_from.step if resume_from is not None else 0

    def log(line: str | Notice) -> None:
        if isinstance(line, Notice):
            library.runs.log(run.id, line.text, warning=True)
        else:
            library.runs.log(run.id, line)

    for line in notes:
        log(line)
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

    stored: dict[int, int] = {c.step: c.id for c in library.runs.checkpoints(run.id)}

    def keep_losses(losses: Sequence[float]) -> None:
        nonlocal recorded
        if len(losses) > recorded:
            library.runs.record_losses(run.id, losses[recorded:], first_step=recorded + 1)
            recorded = len(losses)

    def on_checkpoint(scored: Scored) -> None:
        checkpoint, metrics = scored.checkpoint, scored.metrics
        keep_losses(checkpoint.losses)
        optimizer = None
        if checkpoint.optimizer:
            optimizer = library.runs.folder(run.id) / f"optimizer-{checkpoint.step:07d}.safetensors"
            write_atomic(optimizer, checkpoint.optimizer)
        row = library.runs.add_checkpoint(
            run.id,
            checkpoint.state.to_bytes(),
            step=checkpoint.step,
            epoch=checkpoint.epoch,
            metrics=metrics,
            optimizer_state=optimizer,
        )
        stored[checkpoint.step] = row.id
        library.runs.log(run.id, f"checkpoint at step {checkpoint.step}: {_metrics_line(metrics)}")

    def on_check(check: Check) -> None:
        picture = None
        if check.picture is not None:
            buffer = io.BytesIO()
            check.picture.save(buffer, format="PNG")
            picture = buffer.getvalue()
        stored_check = library.runs.add_check(run.id, step=check.step, metrics=check.metrics, picture=picture)
        if check.step == 0:
            library.runs.log(run.id, f"before training: {_metrics_line(check.metrics)}")
        if checked is not None:
            checked(stored_check)

    def on_status(message: str | Notice) -> None:
        report(message)
        log(message)

    try:
        result = personalization.personalize(
            assistant,
            concept,
            options,
            progress=on_progress,
            cancelled=cancelled,
            on_checkpoint=on_checkpoint,
            on_check=on_check,
            status=on_status,
            resume=resume_from,
            earlier=earlier,
        )
    except TrainingCancelled as stop:
        library.runs.log(run.id, f"cancelled at step {stop.checkpoint.step}")
        return library.runs.finish(run.id, "cancelled")
    except BaseException as exc:
        library.runs.finish(run.id, "failed", error=f"{type(exc).__name__}: {exc}")
        raise
    keep_losses(result.losses)
    best = result.chosen
    library.tokens.add_from_checkpoint(stored[best.checkpoint.step])
    return library.runs.finish(run.id, "done", metrics={**best.metrics, "best_step": best.checkpoint.step})


def _metrics_line(metrics: dict[str, float | None]) -> str:
    return ", ".join(f"{k} {shown(v)}" for k, v in metrics.items())
