"""Will a model fit? The memory estimate for the Settings view, read from its config without loading it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from engine.errors import EngineError


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
