"""Train the micro-world base model and write it as the embedded demo model (resources/demo-model).

Stages, each saved in the work folder and skipped when already done, so an interrupted run resumes:
tokenizer, VQ image tokenizer, language model (checkpointed every 250 steps), export. Rerun with the same
arguments to continue; `--minutes` stops the language model after that much time (it resumes next run).

    python scripts/train_microworld.py [--vq-steps 3000] [--lm-steps 6000] [--minutes M] [--export-only]
        [--mix check=0.4,rec=0.2,...] [--peak-lr 1e-3] [--float32]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from transformers import ChameleonVQVAEConfig, PreTrainedTokenizerFast
from transformers.models.chameleon.modeling_chameleon import ChameleonImageVocabularyMapping, ChameleonVQVAE

from engine.microworld import model_files, pretrain
from engine.model.loading import DEMO_MARKER
from engine.model.vqgan import DECODER_FILE, VQGANDecoder, save_decoder

ROOT = Path(__file__).resolve().parents[1]


def log(message: str) -> None:
    print(message, flush=True)


def tokenizer_stage(work: Path, seed: int, start: Path | None) -> PreTrainedTokenizerFast:
    if not (work / "tokenizer.json").is_file() and start is not None:
        for name in ("tokenizer.json", "tokenizer_config.json"):
            shutil.copy(start / name, work / name)
        log(f"tokenizer copied from {start}")
    elif not (work / "tokenizer.json").is_file():
        model_files.write_tokenizer(model_files.build_tokenizer(model_files.corpus(seed)), work)
        log(f"tokenizer written ({work / 'tokenizer.json'})")
    return PreTrainedTokenizerFast.from_pretrained(work)


def vq_stage(work: Path, steps: int, seed: int, start: Path | None) -> tuple[ChameleonVQVAE, VQGANDecoder]:
    encoder_file, decoder_file = work / pretrain.ENCODER_FILE, work / DECODER_FILE
    if encoder_file.is_file() and decoder_file.is_file():
        return pretrain.load_vq(work)
    started = time.monotonic()
    if start is None:
        result = pretrain.train_vq(ChameleonVQVAEConfig(**model_files.VQ_CONFIG), steps, seed, log)
    else:
        vqmodel, decoder = pretrain.load_vq(start)
        log(f"vq fine-tuned from {start}")
        result = pretrain.train_vq(vqmodel.config, steps, seed, log, start=(vqmodel, decoder), peak_lr=5e-4)
    minutes = (time.monotonic() - started) / 60
    save_file(result.vqmodel.state_dict(), encoder_file)
    save_decoder(result.decoder, decoder_file)
    summary = {"steps": steps, "held_out_mse": result.mse, "codes_used": result.codes_used, "minutes": minutes}
    (work / "vq.json").write_text(json.dumps(summary, indent=2) + "\n")
    log(f"vq done: {summary}")
    return result.vqmodel, result.decoder


def lm_stage(
    work: Path, tokenizer: PreTrainedTokenizerFast, vqmodel: ChameleonVQVAE, args: argparse.Namespace
) -> tuple[pretrain.LMState, list[dict], int]:
    """The language model trained to `args.lm_steps`, the run's stages, and the steps of the model it continued
    from (0 for a new one). A new stage (its first step, the schedule's total, the mix and a peak learning rate other
    than the default) starts whenever a resume changes `--lm-steps`, `--mix` or `--peak-lr`. Stages and the earlier
    steps are saved in `lm.json` and the export marker, so a model says how it was trained, also when a resume is run
    without `--start-from`."""
    vocab = tokenizer.get_vocab()
    config = model_files.build_config(vocab)
    model = pretrain.new_language_model(config, vqmodel, args.seed)
    optimizer = torch.optim.AdamW(pretrain.lm_parameters(model), lr=1e-3, weight_decay=0.01)
    state = pretrain.LMState(model, optimizer, 0, [])
    weights, moments, meta = work / "lm.safetensors", work / "lm_optimizer.safetensors", work / "lm.json"
    earlier = 0
    if args.start_from is not None and not meta.is_file():
        earlier = json.loads((args.start_from / DEMO_MARKER).read_text()).get("language_model_steps", 0)
        start = load_file(args.start_from / "model.safetensors")
        start.update({f"{pretrain.EXPORTED_PREFIX}{k}": v for k, v in vqmodel.state_dict().items()})
        model.load_state_dict(start)
        log(f"language model starts from {args.start_from}")
    if weights.is_file() and meta.is_file():
        model.load_state_dict(load_file(weights))
        names = [n for n, p in model.named_parameters() if p.requires_grad]
        packed = load_file(moments)
        optimizer.load_state_dict(
            {
                "state": {
                    i: {k: packed[f"{n}.{k}"] for k in ("step", "exp_avg", "exp_avg_sq")} for i, n in enumerate(names)
                },
                "param_groups": optimizer.state_dict()["param_groups"],
            }
        )
        saved = json.loads(meta.read_text())
        state.step, state.losses, stages = saved["step"], saved["losses"], saved.get("stages", [])
        earlier = saved.get("continued_from_steps", 0)
        log(f"language model resumed at step {state.step}")
    else:
        stages = []
    if not args.export_only:  # an export trains nothing, so it starts no stage
        stages = pretrain.with_stage(stages, state.step, args.lm_steps, args.mix, args.peak_lr)

    def checkpoint(current: pretrain.LMState) -> None:
        names = [n for n, p in current.model.named_parameters() if p.requires_grad]
        optimizer_state = current.optimizer.state_dict()["state"]
        packed = {f"{n}.{k}": v.contiguous() for i, n in enumerate(names) for k, v in optimizer_state[i].items()}
        save_file({k: v.contiguous() for k, v in current.model.state_dict().items()}, weights.with_suffix(".tmp"))
        save_file(packed, moments.with_suffix(".tmp"))
        weights.with_suffix(".tmp").replace(weights)
        moments.with_suffix(".tmp").replace(moments)
        saved = {"step": current.step, "losses": current.losses, "stages": stages, "continued_from_steps": earlier}
        meta.write_text(json.dumps(saved) + "\n")

    mapping = ChameleonImageVocabularyMapping(vocab)
    code_to_vocab = torch.tensor([mapping.img2bpe[c] for c in range(model_files.CODEBOOK_SIZE)])
    maker = pretrain.SampleMaker(tokenizer, vqmodel, code_to_vocab, vocab["<racm3:break>"], vocab["<eoss>"])
    stop_at = time.monotonic() + args.minutes * 60 if args.minutes else None
    if state.step < args.lm_steps and not args.export_only:
        pretrain.train_language_model(
            state, maker, args.lm_steps, args.seed, log, checkpoint, stop_at=stop_at, mix=args.mix, peak_lr=args.peak_lr
        )
    return state, stages, earlier


def export(
    out: Path,
    work: Path,
    state: pretrain.LMState,
    stages: list[dict],
    earlier: int,
    decoder: VQGANDecoder,
    args: argparse.Namespace,
) -> None:
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    state.model.save_pretrained(out)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(work / name, out / name)
    save_decoder(decoder, out / DECODER_FILE)
    if not args.float32:
        model_files.halve_weights(out)
    marker = {
        "what": "Familiar's embedded demo model: the real Chameleon architecture, small, trained on the micro-world "
        "(32x32 scenes of creatures with shapes, colours, patterns and accessories).",
        "warning": "Demo model: it knows only the micro-world's 32x32 scenes; configure a real model for photos.",
        "trained": True,
        "language_model_steps": earlier + state.step,
        "continued_from_steps": earlier,
        "stages": stages,
        "seed": args.seed,
        "built_by": "scripts/train_microworld.py",
    }
    (out / DEMO_MARKER).write_text(json.dumps(marker, indent=2) + "\n")
    total = sum(f.stat().st_size for f in out.iterdir())
    log(f"model written to {out} ({total / 1e6:.1f} MB) after {state.step} language-model steps")


def sample_mix(text: str) -> dict[str, float]:
    try:
        return pretrain.parse_mix(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, default=Path.home() / ".cache" / "familiar" / "microworld")
    parser.add_argument(
        "--start-from",
        type=Path,
        default=None,
        help="an exported model folder to continue from: its tokenizer, VQ (fine-tuned) and language model",
    )
    parser.add_argument("--out", type=Path, default=ROOT / "resources" / "demo-model")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--vq-steps", type=int, default=3000)
    parser.add_argument("--lm-steps", type=int, default=6000)
    parser.add_argument(
        "--peak-lr",
        type=float,
        default=pretrain.LM_PEAK_LR,
        help="the language model's peak learning rate (default 1e-3; lower to continue a trained model gently)",
    )
    parser.add_argument("--minutes", type=float, default=None, help="stop the language model after this long")
    parser.add_argument(
        "--mix",
        type=sample_mix,
        default=None,
        help="the language model's sample mix as kind=weight,... (default pretrain.MIX), e.g. check=0.5,qa=0.2",
    )
    parser.add_argument(
        "--float32", action="store_true", help="export float32 weights (default float16: half the size, same quality)"
    )
    parser.add_argument("--export-only", action="store_true", help="write the model as trained so far")
    args = parser.parse_args()
    torch.set_num_threads(min(2, torch.get_num_threads()))
    args.work.mkdir(parents=True, exist_ok=True)
    tokenizer = tokenizer_stage(args.work, args.seed, args.start_from)
    vqmodel, decoder = vq_stage(args.work, args.vq_steps, args.seed, args.start_from)
    state, stages, earlier = lm_stage(args.work, tokenizer, vqmodel, args)
    if state.step < args.lm_steps and not args.export_only:
        log(f"stopped at step {state.step} of {args.lm_steps}; rerun to continue")
        sys.exit(0)
    export(args.out, args.work, state, stages, earlier, decoder, args)


if __name__ == "__main__":
    main()
