"""Load a Chameleon-family model (the embedded demo, a local folder, or a hub id) with its tokenizers.

On CUDA the decoder layers are quantized to 4-bit NF4 (bf16 compute) by default; the embeddings, the output
head and the VQ model stay unquantized. On CPU the model runs in float32 (or bfloat16 on request). Memory
is estimated before any weights are read, and loading is refused with the numbers when it will not fit.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import AutoTokenizer, BitsAndBytesConfig, ChameleonConfig, PreTrainedTokenizerBase
from transformers.utils import logging as hf_logging

from engine.errors import EngineError, InsufficientMemoryError, ModelNotFoundError
from engine.model.chameleon import FamiliarChameleon
from engine.model.fingerprint import model_fingerprint
from engine.model.folder_checks import (
    WEIGHTS_FILE,
    WEIGHTS_INDEX,
    check_config_values,
    check_model_files,
    one_line,
    read_json,
    weight_files,
)
from engine.model.image_tokens import ImageTokenizer
from engine.model.memory import (
    TrainingShape,
    can_checkpoint,
    estimate_memory,
    free_bytes,
    training_estimate,
    training_shape,
)
from engine.model.vqgan import DECODER_FILE, load_decoder
from engine.progress import Progress, ProgressCallback

DEMO_MARKER = "familiar_demo.json"
DEMO_NAME = "demo"
DEMO_BUILDER = "scripts/train_microworld.py"
UNQUANTIZED_MODULES = ["lm_head", "embed_tokens", "vqmodel"]
RESOURCES_PACKAGE = "familiar_resources"


def resources_dir() -> Path:
    """The shipped resources: `resources/` in a PyInstaller bundle; the `familiar_resources` package beside `engine`
    when installed from a wheel (setup.py maps `resources/` to it); the top-level `resources/` in a source checkout
    or an editable install."""
    bundle = getattr(sys, "_MEIPASS", None)
    if bundle:
        return Path(bundle) / "resources"
    root = Path(__file__).resolve().parents[2]
    installed = root / RESOURCES_PACKAGE
    return installed if installed.is_dir() else root / "resources"


def demo_model_dir() -> Path:
    return resources_dir() / "demo-model"


@dataclass(frozen=True)
class DemoNotice:
    """What everything a demo model makes must say about it: `warning` for messages (the CLI's note, the
    GUI's banner, a picture's PNG text), `label` for the bar drawn on its pictures."""

    warning: str
    label: str


TRAINED_DEMO = DemoNotice(
    warning="demo model, trained only on the micro-world: it knows just 32x32 scenes of made-up creatures "
    "(shape, colour, pattern, accessory) and cannot read or draw photos until a real model is configured",
    label="Familiar demo model: micro-world scenes only",
)
UNTRAINED_DEMO = DemoNotice(
    warning="untrained demo model: its words and pictures are noise until a real model is configured",
    label="Familiar demo model (untrained): this picture is noise",
)


def demo_notice(path: Path) -> DemoNotice | None:
    """The notice for the model folder `path`: None without a demo marker; the trained demo's when the
    marker says `"trained": true` (the micro-world model); otherwise (an unreadable or older marker) the
    untrained one, which claims nothing."""
    marker = path / DEMO_MARKER
    if not marker.is_file():
        return None
    try:
        trained = json.loads(marker.read_text(encoding="utf-8")).get("trained") is True
    except (OSError, ValueError, AttributeError):
        trained = False
    return TRAINED_DEMO if trained else UNTRAINED_DEMO


@dataclass
class LoadedModel:
    """A ready model: the network, its text and image tokenizers, and what it is."""

    model: FamiliarChameleon
    tokenizer: PreTrainedTokenizerBase
    image_tokenizer: ImageTokenizer
    source: str
    demo: DemoNotice | None
    """How a demo model's output must be labelled; None for a real model."""
    device: torch.device
    dtype: torch.dtype
    quantized: bool
    fingerprint: str

    @property
    def config(self) -> ChameleonConfig:
        return self.model.config

    @property
    def is_demo(self) -> bool:
        return self.demo is not None


def _is_hub_id(spec: str) -> bool:
    """Whether ``spec`` reads as a hub id (``owner/name``) rather than a path: one slash, no backslash, not
    starting with ``.``, ``~`` or a root, valid as a repository id, and its first part not a folder here."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    owner, _, name = spec.partition("/")
    if not name or "/" in name or "\\" in spec or spec.startswith((".", "~")) or os.path.isabs(spec):
        return False
    try:
        validate_repo_id(spec)
    except HFValidationError:
        return False
    return not Path(owner).is_dir()


def resolve_model_dir(spec: str, allow_download: bool = False) -> Path:
    """Map `demo`, a folder path or a hub id to a local folder, or raise ModelNotFoundError.

    Nothing touches the network unless `allow_download`: a path that does not exist is an error, and a hub
    id is looked up only in the local Hugging Face cache.
    """
    if spec == DEMO_NAME:
        path = demo_model_dir()
        if not path.is_dir():
            raise ModelNotFoundError(
                f"the demo model is missing from {path}; restore the folder from Familiar's repository or "
                f"retrain it with {DEMO_BUILDER}"
            )
        return path
    path = Path(spec).expanduser()
    if path.is_dir():
        return path
    if path.exists():
        raise ModelNotFoundError(f"{path} is a file; a model is a folder in the Hugging Face layout")
    where = "" if path.is_absolute() else f" (looked for {path.absolute()})"
    if not _is_hub_id(spec):
        raise ModelNotFoundError(f"model folder {path} does not exist{where}")
    from huggingface_hub import constants, try_to_load_from_cache

    cached = try_to_load_from_cache(spec, "config.json")
    if isinstance(cached, str):
        return Path(cached).parent
    if allow_download:
        return _download(spec)
    raise ModelNotFoundError(
        f"model {spec!r} is neither a folder here{where} nor a hub model in the local Hugging Face cache "
        f"({constants.HF_HUB_CACHE}); Familiar downloads nothing on its own: get it with `familiar model get "
        f"{spec}` (it asks first), or fetch it on a machine with network and pass its folder with --model"
    )


def _download(repo_id: str) -> Path:
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(repo_id))
    except Exception as exc:
        raise ModelNotFoundError(
            f"{repo_id!r} could not be downloaded from the Hugging Face hub ({type(exc).__name__}); on a machine "
            f"without network, download it elsewhere and pass its folder"
        ) from None


def missing_model_files(path: Path) -> list[str]:
    """What the folder lacks to be a complete model, one entry per missing part (shards its index names
    included); empty when nothing is missing."""
    missing = [name for name in ("config.json", "tokenizer.json") if not (path / name).is_file()]
    try:
        if not weight_files(path):
            missing.append(f"model weights ({WEIGHTS_FILE}, or {WEIGHTS_INDEX} and its shards)")
    except ModelNotFoundError as exc:
        missing.append(str(exc))
    if not (path / DECODER_FILE).is_file() and not (path / "tokenizer" / "vqgan.ckpt").is_file():
        missing.append(
            f"{DECODER_FILE} or tokenizer/vqgan.ckpt (the VQGAN decoder, dropped by the Hugging Face conversion: "
            "`familiar model get` fetches it from the original release and converts it)"
        )
    return missing


def check_model_dir(path: Path) -> None:
    """Raise ModelNotFoundError listing every file the folder lacks (including shards its index names)."""
    missing = missing_model_files(path)
    if missing:
        raise ModelNotFoundError(f"model folder {path} is incomplete; missing: " + "; ".join(missing))


def read_config(path: Path) -> ChameleonConfig:
    """The model's config, its values checked by arithmetic before the library builds anything from them."""
    raw = read_json(path / "config.json")
    if not isinstance(raw, dict):
        raise ModelNotFoundError(f"{path / 'config.json'} holds a JSON {type(raw).__name__}, not an object")
    if raw.get("model_type") != "chameleon":
        raise EngineError(f"{path} holds a {raw.get('model_type')!r} model; Familiar needs a Chameleon-family model")
    check_config_values(raw, path / "config.json")
    try:
        config = ChameleonConfig.from_pretrained(path)
    except Exception as exc:
        raise ModelNotFoundError(f"cannot read {path / 'config.json'}: {one_line(exc)}") from None
    if not config.vocabulary_map:
        raise EngineError(f"{path / 'config.json'} has no vocabulary_map; it is required to map image tokens")
    for token in ("<racm3:break>", "<eoss>"):
        if token not in config.vocabulary_map:
            raise EngineError(f"vocabulary_map lacks the image marker {token}")
    return config


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    resolved = torch.device(device)
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise EngineError(f"device {device!r} was asked for, but no CUDA GPU is available; use --device cpu")
    return resolved


def precision(
    device: torch.device, is_demo: bool, quantize: bool | None = None, dtype: torch.dtype | None = None
) -> tuple[bool, torch.dtype]:
    """(4-bit quantization, dtype) for a model loaded on `device`; None asks for the default: 4-bit NF4 for real
    checkpoints on CUDA (never for the demo), and bfloat16 on CUDA, float32 elsewhere."""
    if quantize is None:
        quantize = device.type == "cuda" and not is_demo
    return quantize, dtype or (torch.bfloat16 if device.type == "cuda" else torch.float32)


def _disable_cpu_repacking(model: torch.nn.Module) -> None:
    """bitsandbytes repacks 4-bit weights on AVX512-BF16 CPUs after an eval forward, after which gradients
    through them are wrong; keep every Linear4bit on the unpacked path."""
    import bitsandbytes as bnb

    for module in model.modules():
        if isinstance(module, bnb.nn.Linear4bit):
            module.support_avx512bf16_for_cpu = False


def load_model(
    spec: str = DEMO_NAME,
    device: str = "auto",
    quantize: bool | None = None,
    dtype: torch.dtype | None = None,
    check_memory: bool = True,
    progress: ProgressCallback | None = None,
    train_micro_batch: int | None = None,
) -> LoadedModel:
    """Load `spec` (`demo`, a folder, or a hub id) ready for chat, generation and training.

    `quantize=None` means 4-bit on CUDA for real checkpoints and no quantization otherwise. The memory check
    (`engine.model.memory`) covers chat and guided drawing, and training at `train_micro_batch` where given; it
    refuses before anything loads. Progress: "loading weights" (0 of 2), "loading tokenizers" (1 of 2), "loaded"
    (2 of 2).
    """
    report = progress or (lambda _p: None)
    path = resolve_model_dir(spec)
    check_model_dir(path)
    config = read_config(path)
    check_model_files(path, config)
    demo = demo_notice(path)
    is_demo = demo is not None
    target = resolve_device(device)
    quantize, dtype = precision(target, is_demo, quantize, dtype)
    if check_memory:
        training = None if train_micro_batch is None else TrainingShape(train_micro_batch, can_checkpoint(target))
        estimate = estimate_memory(config, target, dtype, quantize, training)
        if not estimate.fits:
            what = "will not fit" + ("" if training is None else f" for training at micro-batch {train_micro_batch}")
            hint = "" if quantize else "; try 4-bit quantization on a CUDA GPU"
            if training is not None and train_micro_batch > 1:
                hint += "; a smaller --micro-batch needs less"
            raise InsufficientMemoryError(f"the model at {path} {what}: it {estimate.describe()}{hint}")
    report(Progress("loading weights", 0, 2))
    hf_logging.disable_progress_bar()
    kwargs: dict[str, object] = {"dtype": dtype}
    if quantize:
        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_compute_dtype=dtype,
            bnb_4bit_use_double_quant=True,
            llm_int8_skip_modules=UNQUANTIZED_MODULES,
        )
        kwargs["device_map"] = {"": target}
    try:
        model = FamiliarChameleon.from_pretrained(path, **kwargs)
    except (OSError, ValueError, RuntimeError) as exc:
        raise ModelNotFoundError(f"cannot load the weights in {path}: {exc}") from None
    if not quantize:
        model = model.to(target)
    else:
        _disable_cpu_repacking(model)
    model.model.vqmodel.float()  # in bf16 the encoder picks other codes for many patches: VQ runs in fp32 everywhere
    model.requires_grad_(False).eval()
    report(Progress("loading tokenizers", 1, 2))
    tokenizer = AutoTokenizer.from_pretrained(path)
    decoder = load_decoder(path, config.vq_config).to(target, torch.float32).eval()
    image_tokenizer = ImageTokenizer(model.model.vqmodel, decoder, config.vocabulary_map)
    loaded = LoadedModel(
        model=model,
        tokenizer=tokenizer,
        image_tokenizer=image_tokenizer,
        source=DEMO_NAME if is_demo else str(path),
        demo=demo,
        device=target,
        dtype=dtype,
        quantized=quantize,
        fingerprint=model_fingerprint(model),
    )
    report(Progress("loaded", 2, 2))
    return loaded


def loaded_training_shape(loaded: LoadedModel, batch_size: int, micro_batch: int) -> TrainingShape:
    """`engine.model.memory.training_shape` for `loaded`, against what is free on its device now."""
    available = free_bytes(loaded.device) if can_checkpoint(loaded.device) else None
    return training_shape(
        loaded.config,
        loaded.dtype,
        loaded.quantized,
        batch_size=batch_size,
        micro_batch=micro_batch,
        available=available,
    )


def check_training_memory(loaded: LoadedModel, micro_batch: int) -> None:
    """Refuse, with the numbers, to train on `loaded` when a micro-batch will not fit beside it now, even with
    gradient checkpointing where the device has it (training leaves it off where memory allows: `TrainingLoop`)."""
    shape = TrainingShape(micro_batch, can_checkpoint(loaded.device))
    estimate = training_estimate(loaded.config, loaded.device, loaded.dtype, loaded.quantized, shape)
    if not estimate.fits:
        hint = "; a smaller micro-batch needs less" if micro_batch > 1 else ""
        raise InsufficientMemoryError(
            f"training will not fit beside the loaded model at micro-batch {micro_batch}: it {estimate.describe()}"
            f"{hint}"
        )


def _quantize_decoder_layers(model: FamiliarChameleon, device: torch.device, dtype: torch.dtype) -> None:
    """Swap every Linear of the decoder layers for a 4-bit NF4 Linear4bit (quantized on `device`)."""
    import bitsandbytes as bnb

    for parent in list(model.model.layers.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is not torch.nn.Linear:
                continue
            quantized = bnb.nn.Linear4bit(
                child.in_features,
                child.out_features,
                bias=child.bias is not None,
                compute_dtype=dtype,
                quant_type="nf4",
                device="meta",
            )
            quantized.weight = bnb.nn.Params4bit(
                child.weight.data, requires_grad=False, quant_type="nf4", compress_statistics=True, module=quantized
            )
            if child.bias is not None:
                quantized.bias = torch.nn.Parameter(child.bias.data, requires_grad=False)
            setattr(parent, name, quantized.to(device))
    _disable_cpu_repacking(model)


def random_model(
    config: ChameleonConfig, device: torch.device, quantize: bool, dtype: torch.dtype | None = None, seed: int = 0
) -> LoadedModel:
    """A model of `config`'s shape with random weights, for benchmarks without a download.

    It uses the demo model's tokenizer for text (the benchmark only needs ids, not meaning) and an
    untrained VQGAN decoder of the config's shape.
    """
    from engine.model.vqgan import VQGANDecoder

    _, dtype = precision(device, is_demo=False, quantize=quantize, dtype=dtype)
    torch.manual_seed(seed)
    with torch.device(device):
        model = FamiliarChameleon(config).to(dtype)
        decoder = VQGANDecoder(config.vq_config).eval()
    model.model.vqmodel.float()
    if quantize:
        _quantize_decoder_layers(model, device, dtype)
    model.requires_grad_(False).eval()
    tokenizer = AutoTokenizer.from_pretrained(demo_model_dir())
    return LoadedModel(
        model=model,
        tokenizer=tokenizer,
        image_tokenizer=ImageTokenizer(model.model.vqmodel, decoder, config.vocabulary_map),
        source="random",
        demo=None,
        device=device,
        dtype=dtype,
        quantized=quantize,
        fingerprint=model_fingerprint(model),
    )
