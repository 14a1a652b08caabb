"""Build the demo model's instant-concept pieces: a tiny DINOv2 with random weights in resources/demo-dino/
and a tiny Aligner in resources/demo-aligner.safetensors, bound to the demo model's fingerprint, so that
`familiar concept add NAME PHOTO --instant` runs end to end on a fresh machine. Rerun to rebuild:

    python scripts/make_demo_aligner.py [--data ../shared/data/dreambooth] [--epochs 4] [--untrained]

Training data: the DreamBooth subjects (Ruiz et al., CVPR 2023; github.com/google/dreambooth, CC BY 4.0),
24 subject folders of 4-6 photos that live beside the repository in shared/data/dreambooth: exactly the
identity-folder layout. The last four subjects (by name) are held out to measure recognition.

The Aligner is bound to the demo model's fingerprint: rerun this script whenever resources/demo-model changes.

Honesty note: this DINOv2 is untrained (random weights) and the demo language model knows only the
micro-world's 32x32 creature scenes, never a photo, so the Aligner can only learn the answer format
(self-prompt tokens, "Yes, ..." / "No, ...") and whatever separates the random features; the held-out
recognition it reaches is printed and recorded in the file's metadata, and is not a claim about real models.
With `--untrained` (or without the data) the Aligner is only initialized, from seed 0: it then predicts the
neutral rows (the demo model's mean embedding and head rows) for every photo. Training runs on CPU and
repeats for a seed, though floating-point results can differ across CPUs and thread counts.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import torch
from transformers import Dinov2Config, Dinov2Model
from transformers.utils import logging as hf_logging

from engine.aligner.model import (
    DEMO_DINO,
    AlignerConfig,
    aligner_metadata,
    demo_aligner_path,
    demo_dino_dir,
    load_dinov2,
    new_aligner,
    save_aligner,
)
from engine.aligner.training import AlignerTrainConfig, AlignerTrainer, prepare_data, read_dataset
from engine.inference.assistant import Assistant
from engine.model.loading import load_model

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "dreambooth"
HELD_OUT = 4
DINO_CONFIG = {
    "hidden_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "mlp_ratio": 4,
    "image_size": 112,
    "patch_size": 14,
}
ALIGNER_SIZES = {"hidden": 64, "n_queries": 16, "n_blocks": 2, "n_heads": 4, "mlp_ratio": 4, "image_size": 112}
SOURCE = "DreamBooth subjects (github.com/google/dreambooth, CC BY 4.0) from shared/data/dreambooth"


def build_dino(out: Path, seed: int) -> None:
    """A DINOv2 of the real architecture, tiny and with random weights (seeded)."""
    torch.manual_seed(seed)
    model = Dinov2Model(Dinov2Config(**DINO_CONFIG)).eval()
    shutil.rmtree(out, ignore_errors=True)
    hf_logging.disable_progress_bar()
    model.save_pretrained(out)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="identity folders (default: DreamBooth)")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--untrained", action="store_true", help="only initialize the Aligner, do not train it")
    args = parser.parse_args()

    build_dino(demo_dino_dir(), args.seed)
    loaded = load_model("demo", device="cpu")
    encoder = load_dinov2(DEMO_DINO)
    config = AlignerConfig(vision_hidden=encoder.hidden_size, text_hidden=loaded.config.hidden_size, **ALIGNER_SIZES)
    aligner = new_aligner(config, loaded, seed=args.seed)
    record: dict[str, object] = {"built_by": "scripts/make_demo_aligner.py", "seed": args.seed}

    if args.untrained or not args.data.is_dir():
        if not args.untrained:
            print(f"no training data at {args.data}: the Aligner is only initialized", file=sys.stderr)
        record["training"] = "none: deterministic initialization only (predicts the demo model's mean rows)"
    else:
        identities = read_dataset(args.data)
        train_ids, held_ids = identities[:-HELD_OUT], identities[-HELD_OUT:]
        started = time.monotonic()
        train = prepare_data(train_ids, loaded, encoder, config.image_size, print)
        held = prepare_data(held_ids, loaded, encoder, config.image_size, print)
        train_config = AlignerTrainConfig(epochs=args.epochs, learning_rate=1e-3, seed=args.seed)
        trainer = AlignerTrainer(Assistant(loaded), aligner, train, train_config)
        before = trainer.recognition(held)
        print(f"held-out recognition before training: {before}")
        losses = trainer.run(progress=lambda p: print(f"step {p.step}/{p.total} loss {p.loss:.3f}", end="\r"))
        after = trainer.recognition(held)
        print(f"\nheld-out recognition after training: {after}")
        per_epoch = trainer.steps_per_epoch
        record |= {
            "training_data": f"{SOURCE}: {len(train_ids)} identities for training, {HELD_OUT} held out "
            f"({', '.join(i.name for i in held_ids)})",
            "train_config": json.loads(train_config.to_json()),
            "steps": len(losses),
            "loss_first_epoch": sum(losses[:per_epoch]) / per_epoch,
            "loss_last_epoch": sum(losses[-per_epoch:]) / per_epoch,
            "held_out_recognition_before": before,
            "held_out_recognition_after": after,
            "seconds": round(time.monotonic() - started, 1),
        }
    metadata = aligner_metadata(
        config, loaded.fingerprint, encoder.fingerprint, DEMO_DINO, {"provenance": json.dumps(record, sort_keys=True)}
    )
    save_aligner(demo_aligner_path(), aligner.state_dict(), metadata)
    print(json.dumps(record, indent=2))
    print(f"wrote {demo_dino_dir()} and {demo_aligner_path()} ({demo_aligner_path().stat().st_size} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
