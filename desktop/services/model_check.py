"""Is a model folder usable? What it holds and lacks, and whether it fits in memory (the estimate is read from its
config without loading it), for `familiar model check` and the Settings view."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from engine.errors import EngineError

LICENCE_PREFIXES = ("LICENSE", "LICENCE", "NOTICE")


@dataclass(frozen=True)
class ModelCheck:
    """Whether the model fits on the device, and the sentence that says so."""

    fits: bool
    message: str


def check_model(spec: str, device: str, four_bit: bool) -> ModelCheck:
    """Estimate the memory `spec` (`demo` or a model folder) needs on `device`, as `load_model` would load it.

    Hub ids are not looked up here (that could start a download): the Settings view takes folders."""
    from engine.model.loading import (  # lazy: it imports torch and transformers
        DEMO_NAME,
        check_model_dir,
        demo_notice,
        precision,
        read_config,
        resolve_device,
        resolve_model_dir,
    )
    from engine.model.memory import estimate_memory

    if spec != DEMO_NAME and not Path(spec).expanduser().is_dir():
        raise EngineError(f"{spec} is not a folder; choose the folder that holds the model's config.json")
    path = resolve_model_dir(spec)
    check_model_dir(path)
    config = read_config(path)
    target = resolve_device(device)
    quantize, dtype = precision(target, demo_notice(path) is not None, None if four_bit else False)
    estimate = estimate_memory(config, target, dtype, quantize)
    how = "4-bit NF4" if quantize else str(dtype).removeprefix("torch.")
    amounts = f"needs about {_size(estimate.needed)}, {_size(estimate.available)} free on {estimate.device}"
    if estimate.fits:
        return ModelCheck(True, f"It fits: in {how} it {amounts}.")
    hint = (
        "Turn on 4-bit and use a CUDA GPU, or choose a smaller model."
        if not quantize
        else "Close other programs using the GPU, or choose a smaller model."
    )
    return ModelCheck(False, f"This model will not fit: in {how} it {amounts}. {hint}")


def _size(count: int) -> str:
    return f"{count / 2**30:.1f} GiB" if count >= 2**30 else f"{count / 2**20:.0f} MiB"


@dataclass(frozen=True)
class FolderReport:
    """What a model folder holds, what it lacks, a damaged file or unusable config if any, and (when nothing is
    missing or damaged) whether it fits in memory on this machine."""

    path: Path
    present: tuple[str, ...]
    missing: tuple[str, ...]
    problem: str | None
    memory: ModelCheck | None

    @property
    def complete(self) -> bool:
        return not self.missing and self.problem is None


def inspect_folder(path: Path, device: str = "auto", four_bit: bool = True) -> FolderReport:
    """Check the folder as `load_model` would (every file present, configs and headers readable, weights the
    config's shapes) without loading weights, and estimate the memory it needs on `device`."""
    from engine.model.loading import check_model_files, missing_model_files, read_config

    path = Path(path).expanduser()
    if not path.is_dir():
        raise EngineError(f"{path} is not a folder; a model is a folder in the Hugging Face layout")
    missing = tuple(missing_model_files(path))
    present = tuple(_present(path))
    if missing:
        return FolderReport(path, present, missing, None, None)
    try:
        check_model_files(path, read_config(path))
        memory = check_model(str(path), device, four_bit)
    except EngineError as exc:
        return FolderReport(path, present, missing, " ".join(str(exc).split()), None)
    return FolderReport(path, present, missing, None, memory)


def _present(path: Path) -> list[str]:
    from engine.model.folder_checks import WEIGHTS_FILE, WEIGHTS_INDEX
    from engine.model.vqgan import CKPT_FILE, DECODER_FILE

    found = [name for name in ("config.json", "tokenizer.json") if (path / name).is_file()]
    shards = sorted(path.glob("*.safetensors"))
    weights = [file for file in shards if file.name != DECODER_FILE]
    if weights:
        size = sum(file.stat().st_size for file in weights)
        index = f" with {WEIGHTS_INDEX}" if (path / WEIGHTS_INDEX).is_file() else ""
        names = WEIGHTS_FILE if [f.name for f in weights] == [WEIGHTS_FILE] else f"{len(weights)} safetensors files"
        found.append(f"weights: {names}{index} ({_size(size)})")
    if (path / DECODER_FILE).is_file():
        found.append(f"VQGAN decoder: {DECODER_FILE}")
    if (path / CKPT_FILE).is_file():
        found.append(f"VQGAN checkpoint: {CKPT_FILE} (read with weights_only; `familiar model get` converts it)")
    licences = sorted(
        str(file.relative_to(path)) for file in path.rglob("*") if file.name.upper().startswith(LICENCE_PREFIXES)
    )
    if licences:
        found.append("licence: " + ", ".join(licences))
    return found
