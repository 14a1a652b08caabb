"""Evaluate the Yo'Chameleon recipe on a dataset: build a temporary library, add and train every concept,
then measure recognition, QA, generation similarity and that the base model is untouched.

Layouts: `train/<name>/*` + `test/<name>/*` (Yo'LLaVA), or `<subject>/*.jpg` (DreamBooth), where the photos
are sorted by file name and the last one of each subject is its test photo (the rest train). A DreamBooth
folder's `prompts_and_classes.txt` (`subject,class` lines) gives each subject's class word; dogs and cats
are added as pets, the rest as objects. Test photos never enter the library, so no concept trains on any
test photo (the other concepts' library photos are its training negatives).
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from desktop.services.personalize import TrainOptions, train_concept
from engine.errors import EngineError
from engine.progress import Progress, ProgressCallback
from store.library import Library

if TYPE_CHECKING:  # torch-heavy modules are imported by the functions that use them
    from PIL import Image

    from engine.evaluation import measure as evaluation
    from engine.evaluation.encoders import ClipModel, DinoModel
    from engine.inference.assistant import Assistant

PHOTO_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp"}
CLASSES_FILE = "prompts_and_classes.txt"
PETS = {"dog", "cat"}
QUICK = TrainOptions(
    epochs=2,
    negatives=20,
    recognition_per_photo=2,
    generation_per_photo=1,
    qa_repeats=1,
    augment=False,
    describe_photos=False,
    bundled_index=False,
)
"""The `quick` recipe (the default): a small data mix that runs on the demo model in seconds per concept, from the
photos alone (not the demo model's bundled subset: its 333 look-alikes a run would take minutes).
The `full` recipe is `TrainOptions()`, the product's: at most 2 epochs, up to 333 look-alikes, augmentation, photo
descriptions."""
PUBLISHED = [
    ("Yo'Chameleon (CVPR 2025), 32 tokens", "recognition (weighted)", 0.845),
    ("Yo'Chameleon (CVPR 2025), 32 tokens", "CLIP-I", 0.783),
    ("Yo'Chameleon (CVPR 2025), 32 tokens", "face similarity", 0.212),
    ("PLVM", "recognition (mean)", 0.858),
    ("Yo'LLaVA (as reported by PLVM)", "recognition (mean)", 0.749),
]


@dataclass(frozen=True)
class DatasetConcept:
    name: str
    train: tuple[Path, ...]
    test: tuple[Path, ...]
    class_word: str | None = None


@dataclass(frozen=True)
class EvalOptions:
    model: str = "demo"
    device: str = "cpu"
    train: TrainOptions = QUICK
    concepts: tuple[str, ...] = ()
    clip: Path | None = None
    dino: Path | None = None
    qa: Path | None = None
    images: int = 2
    seed: int = 0


@dataclass
class Timer:
    seconds: dict[str, float] = field(default_factory=dict)

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - start


def _photos(folder: Path) -> tuple[Path, ...]:
    return tuple(sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in PHOTO_SUFFIXES))


def _classes(root: Path) -> dict[str, str]:
    path = root / CLASSES_FILE
    if not path.is_file():
        return {}
    pairs = (line.split(",", 1) for line in path.read_text(encoding="utf-8").splitlines() if "," in line)
    return {subject.strip(): cls.strip() for subject, cls in pairs}


def read_dataset(root: Path, names: tuple[str, ...] = ()) -> tuple[str, list[DatasetConcept]]:
    """(layout, concepts) of a dataset folder; `names` keeps only those concepts, in that order."""
    if not root.is_dir():
        raise EngineError(f"dataset folder {root} does not exist")
    if (root / "train").is_dir() and (root / "test").is_dir():
        layout = "yollava"
        folders = sorted(p.name for p in (root / "train").iterdir() if p.is_dir())
        found = {
            n: DatasetConcept(n, _photos(root / "train" / n), _photos(root / "test" / n))
            for n in folders
            if (root / "test" / n).is_dir()
        }
    else:
        layout = "dreambooth"
        classes = _classes(root)
        found = {}
        for folder in sorted(p for p in root.iterdir() if p.is_dir()):
            photos = _photos(folder)
            if len(photos) >= 2:
                found[folder.name] = DatasetConcept(folder.name, photos[:-1], photos[-1:], classes.get(folder.name))
    missing = [n for n in names if n not in found]
    if missing:
        raise EngineError(f"{root} has no concept named {', '.join(missing)} ({layout} layout)")
    chosen = [found[n] for n in names] if names else list(found.values())
    if len(chosen) < 2:
        raise EngineError(f"{root}: recognition needs at least 2 concepts with train and test photos ({layout} layout)")
    return layout, chosen


def _add(library: Library, concept: DatasetConcept) -> None:
    cls = concept.class_word
    kind = "pet" if cls in PETS else "object"
    library.concepts.add(concept.name, concept.train, kind=kind, facts=f"class: {cls}" if cls else "")


def _loss_curve(library: Library, run_id: int) -> list[dict[str, float]]:
    """Each trained epoch's mean loss (the start rows, step 0, have none)."""
    return [{"epoch": c.epoch, "loss": c.metrics["loss"]} for c in library.runs.checkpoints(run_id) if c.step]


def _metric_models(options: EvalOptions) -> tuple[ClipModel | None, DinoModel | None, dict[str, str]]:
    """Load the encoders asked for (an unusable path is an error); name the metrics skipped without them."""
    from engine.evaluation.encoders import load_clip, load_dinov1

    clip = load_clip(options.clip, options.device) if options.clip is not None else None
    dino = load_dinov1(options.dino, options.device) if options.dino is not None else None
    skipped = {}
    if clip is None:
        skipped |= {m: "no --clip model folder given" for m in ("clip_i", "clip_t")}
    if dino is None:
        skipped["dino"] = "no --dino model folder given"
    if options.images == 0:
        skipped |= {m: "--images 0" for m in ("clip_i", "clip_t", "dino")}
    return clip, dino, skipped


def evaluate(
    dataset: Path, report_dir: Path, options: EvalOptions, progress: ProgressCallback | None = None
) -> dict[str, Any]:
    """Run the whole evaluation; writes generated pictures under `report_dir/images` and returns the results
    (see `docs/evaluation.md`). Progress events name the phase: add, train NAME, recognition, qa, generation,
    metrics."""
    from desktop.services.library_concepts import attach_from_library
    from engine.evaluation import measure as evaluation
    from engine.inference.assistant import Assistant
    from engine.model.loading import load_model

    report = progress or (lambda _p: None)
    layout, concepts = read_dataset(dataset, options.concepts)
    questions = evaluation.load_questions(options.qa) if options.qa is not None else []
    unknown = sorted({q.concept for q in questions} - {c.name.lower() for c in concepts})
    if unknown:
        raise EngineError(f"the QA file asks about concepts not evaluated here: {', '.join(unknown)}")
    clip, dino, skipped = _metric_models(options)
    timer = Timer()
    train_options = replace(options.train, model=options.model, device=options.device, seed=options.seed)
    results: dict[str, Any] = {"concepts": {c.name.lower(): {} for c in concepts}}
    with tempfile.TemporaryDirectory(prefix="familiar-eval-") as folder, Library.open(Path(folder)) as library:
        with timer.phase("add"):
            for done, concept in enumerate(concepts):
                report(Progress("add", done, len(concepts)))
                _add(library, concept)
            report(Progress("add", len(concepts), len(concepts)))
        with timer.phase("train"):
            for concept in concepts:
                run = train_concept(
                    library,
                    concept.name,
                    train_options,
                    progress=lambda u, n=concept.name: report(replace(u, phase=f"train {n}")),
                )
                results["concepts"][concept.name.lower()]["training"] = _loss_curve(library, run.id)
        assistant = Assistant(load_model(options.model, device=options.device))
        if len(concepts) > assistant.slots.capacity:
            raise EngineError(
                f"this model has {assistant.slots.capacity} concept slots; evaluate at most that many concepts"
            )
        reference = evaluation.fixed_prompt_logits(assistant)
        attach_from_library(library, assistant, [c.name for c in concepts])
    measure(assistant, concepts, questions, clip, dino, options, report_dir, timer, results, report)
    with timer.phase("base check"):
        difference = evaluation.base_difference(assistant, reference)
    results["base_model_untouched"] = {"passed": difference == 0.0, "max_abs_logit_difference": difference}
    results.update(
        dataset=str(dataset),
        layout=layout,
        model=options.model,
        demo=assistant.loaded.is_demo,
        options={k: str(v) if isinstance(v, Path) else v for k, v in asdict(options).items()}
        | {"train": asdict(train_options)},
        skipped=skipped,
        times_s=timer.seconds,
        published=[{"source": s, "metric": m, "value": v} for s, m, v in PUBLISHED],
    )
    results["mean"] = _means(results["concepts"])
    return results


def measure(
    assistant: Assistant,
    concepts: list[DatasetConcept],
    questions: list[evaluation.Question],
    clip: ClipModel | None,
    dino: DinoModel | None,
    options: EvalOptions,
    report_dir: Path,
    timer: Timer,
    results: dict[str, Any],
    report: ProgressCallback,
) -> None:
    """Recognition, QA, generation and similarity metrics for attached concepts, into `results`."""
    from engine.evaluation import measure as evaluation
    from engine.evaluation import metrics
    from engine.model.images import open_image

    per = results["concepts"]
    with timer.phase("recognition"):
        report(Progress("recognition", 0, 1))
        tokens = assistant.loaded.image_tokenizer
        test_ids = {
            c.name.lower(): [row.tolist() for row in tokens.encode([open_image(p) for p in c.test])] for c in concepts
        }
        for name, score in evaluation.recognition(assistant, test_ids).items():
            per[name]["recognition"] = {**asdict(score), "weighted": score.weighted}
        report(Progress("recognition", 1, 1))
    with timer.phase("qa"):
        chosen: dict[str, tuple[list[int], list[int]]] = {}
        for done, question in enumerate(questions):
            report(Progress("qa", done, len(questions)))
            predictions, answers = chosen.setdefault(question.concept, ([], []))
            predictions += evaluation.qa_predictions(assistant, [question])
            answers.append(question.answer)
        for name, (predictions, answers) in chosen.items():
            per[name]["qa"] = metrics.accuracy(predictions, answers)
        if questions:
            report(Progress("qa", len(questions), len(questions)))
    generated: dict[str, list[Image.Image]] = {}
    with timer.phase("generation"):
        total, done = len(concepts) * options.images, 0
        (report_dir / "images").mkdir(parents=True, exist_ok=True)
        for concept in concepts:
            name = concept.name.lower()
            report(Progress("generation", done, total))
            generated[name] = evaluation.generate(assistant, name, options.images, options.seed)
            done += options.images
            per[name]["images"] = []
            for index, image in enumerate(generated[name]):
                path = report_dir / "images" / f"{concept.name}-{index}.png"
                image.save(path)
                per[name]["images"].append(str(path.relative_to(report_dir)))
        report(Progress("generation", total, total))
    with timer.phase("metrics"):
        for done, concept in enumerate(concepts):
            report(Progress("metrics", done, len(concepts)))
            name = concept.name.lower()
            images = generated[name]
            if not images:
                continue
            real = [open_image(p) for p in (*concept.train, *concept.test)]
            if clip is not None:
                text = f"a photo of a {concept.class_word or concept.name}"
                made = clip.embed_images(images)
                per[name]["clip_i"] = metrics.clip_i(made, clip.embed_images(real))
                per[name]["clip_t"] = metrics.clip_t(made, clip.embed_texts([text] * len(images)))
            if dino is not None:
                per[name]["dino"] = metrics.dino_score(dino.embed_images(images), dino.embed_images(real))
        report(Progress("metrics", len(concepts), len(concepts)))


def _means(per: dict[str, dict[str, Any]]) -> dict[str, float]:
    """Each metric averaged over the concepts that have it."""
    values: dict[str, list[float]] = {}
    for entry in per.values():
        for key in ("positive", "negative", "weighted"):
            values.setdefault(f"recognition_{key}", []).append(entry["recognition"][key])
        for key in ("qa", "clip_i", "clip_t", "dino"):
            if key in entry:
                values.setdefault(key, []).append(entry[key])
    return {key: sum(v) / len(v) for key, v in values.items()}
