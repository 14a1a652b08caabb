"""Build the demo model's Aligner (resources/demo-aligner.safetensors): it reads photos with the micro-world
attribute reader (resources/microworld-reader.safetensors, this world's stand-in for DINOv2) and is trained on
rendered micro-world identities, bound to the demo model's fingerprint. Then measure instant concepts on
held-out identities against the untrained rows. Rerun whenever the demo model or the reader changes:

    python scripts/make_demo_aligner.py [--identities 400] [--epochs 8] [--distill-weight 10] [--out results.json]

The identity folders and the run's checkpoint live in --work (default ~/.cache/familiar/demo-aligner); an
interrupted run (Ctrl-C, a crash) continues from its last epoch when rerun with the same options, and a
finished run with the same options there is reused (the checkpoint's name holds a digest of the options and of
the base model's fingerprint, so a retrained demo model starts a new run).
`--measure-only` measures the Aligner at --output without training. The results are printed, kept in the
Aligner's `provenance` metadata, and written as JSON only to --out. Torch uses --threads threads (default 2).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from pathlib import Path
from statistics import mean

import torch

from desktop.cli.interrupt import stop_on_ctrl_c
from engine.aligner.model import (
    AlignerConfig,
    LoadedAligner,
    demo_aligner_path,
    instant_state,
    load_aligner,
    load_reader_encoder,
    read_aligner_file,
    save_aligner,
)
from engine.aligner.training import AlignerTrainConfig, resume_path, train_aligner
from engine.inference.assistant import Assistant
from engine.microworld.identities import (
    HeldOutConcept,
    held_out_concepts,
    recognition,
    split_identities,
    write_identity_folders,
)
from engine.microworld.world import render
from engine.model.loading import LoadedModel, load_model
from engine.training.data import class_word, describe_photos
from engine.training.loop import TrainingCancelled
from engine.training.personalization import start_state
from engine.training.recipe import Recipe

ALIGNER_SIZES = {"hidden": 128, "n_queries": 16, "n_blocks": 2, "n_heads": 4, "mlp_ratio": 4, "image_size": 32}
CLASS_KIND = "pet"
"""The benchmark's concept kind: untrained rows start from its class word ("animal")."""


def untrained_rows(assistant: Assistant, name: str, _concept: HeldOutConcept) -> None:
    word = class_word(CLASS_KIND, "")
    assistant.attach(assistant.slots.initial_state(name, assistant.loaded.tokenizer, word))


def described_rows(assistant: Assistant, name: str, concept: HeldOutConcept) -> None:
    """The recipe's start rows from the reference photo alone: spelled from the base model's description of it."""
    descriptions = describe_photos(assistant, [render(concept.reference)])
    assistant.attach(start_state(assistant, name, CLASS_KIND, "", [], descriptions, Recipe(start="description")))


def measure(loaded: LoadedModel, aligner: LoadedAligner, concepts: list[HeldOutConcept]) -> dict[str, object]:
    """Recognition on held-out identities: the class word's untrained rows, the rows spelled from the base model's
    description of the reference photo, and the instant rows from it, per concept and on average, with the paired
    difference (instant - untrained)."""

    def instant_rows(assistant: Assistant, name: str, concept: HeldOutConcept) -> None:
        assistant.attach(instant_state(aligner, render(concept.reference), name, loaded.fingerprint))

    conditions = {"untrained": untrained_rows, "described": described_rows, "instant": instant_rows}
    rows: dict[str, list[dict[str, float]]] = {condition: [] for condition in conditions}
    for concept in concepts:
        for condition, attach in conditions.items():
            assistant = Assistant(loaded)
            attach(assistant, "c0", concept)
            rows[condition].append(recognition(assistant, "c0", concept))
    keys = ("positive", "hard_negative", "random_negative", "weighted")
    summary: dict[str, object] = {
        condition: {key: round(mean(r[key] for r in per), 4) for key in keys} for condition, per in rows.items()
    }
    differences = [i["weighted"] - u["weighted"] for i, u in zip(rows["instant"], rows["untrained"], strict=True)]
    spread = torch.tensor(differences).std().item() / len(differences) ** 0.5 if len(differences) > 1 else 0.0
    summary["instant_minus_untrained_weighted"] = {"mean": round(mean(differences), 4), "stderr": round(spread, 4)}
    summary["concepts"] = len(concepts)
    return summary


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--identities", type=int, default=400, help="identities to train on (of 1,664 - held out)")
    parser.add_argument("--held-out", type=int, default=32, help="held-out identities to measure on")
    parser.add_argument("--renders", type=int, default=3, help="rendered photos per training identity")
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--samples-per-identity", type=int, default=2)
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--positive-share", type=float, default=0.5)
    parser.add_argument("--hard-negative-share", type=float, default=0.5)
    parser.add_argument("--distill-weight", type=float, default=10.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--work", type=Path, default=Path.home() / ".cache" / "familiar" / "demo-aligner")
    parser.add_argument("--output", type=Path, default=demo_aligner_path(), help="where the Aligner goes")
    parser.add_argument("--measure-only", action="store_true", help="measure the Aligner at --output, no training")
    parser.add_argument("--out", type=Path, help="write the results as JSON here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)

    loaded = load_model("demo", device="cpu")
    train_ids, held_ids = split_identities(args.seed, args.held_out)
    concepts = held_out_concepts(held_ids, args.seed)
    if args.measure_only:
        results = measure(loaded, load_aligner(args.output, loaded.fingerprint), concepts)
        print(json.dumps(results, indent=2))
        if args.out is not None:
            args.out.write_text(json.dumps(results, indent=2) + "\n")
        return 0

    train_ids = train_ids[: args.identities]
    options = AlignerTrainConfig(
        epochs=args.epochs,
        samples_per_identity=args.samples_per_identity,
        learning_rate=args.learning_rate,
        positive_share=args.positive_share,
        hard_negative_share=args.hard_negative_share,
        distill_weight=args.distill_weight,
        seed=args.seed,
    )
    data_name = f"seed{args.seed}-ids{len(train_ids)}-r{args.renders}"
    # The run is keyed by its options and the base model, so a retrained demo model starts a new run.
    config_json = options.to_json()
    run_name = hashlib.sha256(f"{config_json}{loaded.fingerprint}".encode()).hexdigest()[:12]
    dataset = args.work / data_name / "identities"
    checkpoint = args.work / data_name / f"aligner-{run_name}.safetensors"
    write_identity_folders(dataset, train_ids, args.renders, args.seed)
    encoder = load_reader_encoder()
    config = AlignerConfig(vision_hidden=encoder.hidden_size, text_hidden=loaded.config.hidden_size, **ALIGNER_SIZES)
    print(f"run {checkpoint.name}: {config_json}")
    started = time.monotonic()
    if resume_path(checkpoint).exists() or not checkpoint.exists():
        resume = resume_path(checkpoint).exists()
        with stop_on_ctrl_c() as cancelled:
            try:
                train_aligner(
                    loaded,
                    encoder,
                    dataset,
                    checkpoint,
                    config,
                    options,
                    resume=resume,
                    progress=lambda p: print(f"step {p.step}/{p.total} loss {p.loss:.3f}", end="\r", flush=True),
                    cancelled=cancelled,
                    status=print,
                )
            except TrainingCancelled as stop:
                print(f"\ncancelled at step {stop.checkpoint.step}; rerun the same command to continue")
                return 130
        print()
    else:
        print(f"reusing the finished run in {checkpoint}")
    seconds = round(time.monotonic() - started, 1)

    tensors, metadata = read_aligner_file(checkpoint)
    aligner = load_aligner(checkpoint, loaded.fingerprint)
    results = measure(loaded, aligner, concepts)
    print(json.dumps(results, indent=2))
    record = {
        "built_by": "scripts/make_demo_aligner.py",
        "training_data": f"{len(train_ids)} micro-world identities, {args.renders} renders each (seed {args.seed}); "
        f"{len(held_ids)} held-out identities with an accessory never trained on",
        "train_config": json.loads(options.to_json()),
        "train_seconds_this_session": seconds,
        "held_out_recognition": results,
    }
    metadata["provenance"] = json.dumps(record, sort_keys=True)
    save_aligner(args.output, tensors, metadata)
    print(f"wrote {args.output} ({args.output.stat().st_size} bytes)")
    if args.out is not None:
        args.out.write_text(json.dumps(record, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
