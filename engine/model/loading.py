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

import psutil
import torch
from transformers import AutoTokenizer, BitsAndBytesConfig, ChameleonConfig, PreTrainedTokenizerBase
from transformers.utils import logging as hf_logging

from engine.errors import EngineError, InsufficientMemoryError, ModelNotFoundError
from engine.model.chameleon import FamiliarChameleon
from engine.model.fingerprint import model_fingerprint
from engine.model.image_tokens import ImageTokenizer
from engine.model.vqgan import DECODER_FILE, load_decoder
from engine.progress import Progress, ProgressCallback

DEMO_MARKER = "familiar_demo.json"
DEMO_NAME = "demo"
DEMO_BUILDER = "scripts/train_microworld.py"
UNQUANTIZED_MODULES = ["lm_head", "embed_tokens", "vqmodel"]

def resources_dir() -> Path:
    """The shipped `resources/` folder, in a source checkout or a PyInstaller bundle."""
    bundle = getattr(sys, "_MEIPASS", None)
    return Path(bundle) / "resources" if bundle else Path(__file__).resolve().parents[2] / "resources"


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


@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes the model needs on `device` versus bytes free there."""

    needed: int
    available: int
    device: str

    @property
    def fits(self) -> bool:
        return self.needed <= self.available

    def describe(self) -> str:
        return f"needs about {self.needed / 2**30:.1f} GiB, {self.available / 2**30:.1f} GiB free on {self.device}"


def _looks_like_hub_id(spec: str) -> bool:
    parts = spec.split("/")
    return len(parts) == 2 and all(parts) and not spec.startswith((".", "~")) and not os.path.isabs(spec)


def resolve_model_dir(spec: str) -> Path:
    """Map `demo`, a folder path or a hub id to a local folder, or raise ModelNotFoundError."""
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
    if not _looks_like_hub_id(spec):
        raise ModelNotFoundError(f"model folder {path} does not exist")
    return _download(spec)


def _download(repo_id: str) -> Path:
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(repo_id, local_files_only=True))
    except Exception:
        pass
    try:
        return Path(snapshot_download(repo_id))
    except Exception as exc:
        raise ModelNotFoundError(
            f"{repo_id!r} is not a local folder and could not be downloaded from the Hugging Face hub "
            f"({type(exc).__name__}); on a machine without network, download it elsewhere and pass its folder"
        ) from None


def check_model_dir(path: Path) -> None:
    """Raise ModelNotFoundError listing every file the folder lacks."""
    missing = [name for name in ("config.json", "tokenizer.json") if not (path / name).is_file()]
    if not any(path.glob("*.safetensors")) or all(p.name == DECODER_FILE for p in path.glob("*.safetensors")):
        missing.append("model weights (*.safetensors)")
    if not (path / DECODER_FILE).is_file() and not (path / "tokenizer" / "vqgan.ckpt").is_file():
        missing.append(
            "tokenizer/vqgan.ckpt (the VQGAN decoder, dropped by the Hugging Face conversion: copy the "
            "original release's tokenizer/ folder here)"
        )
    if missing:
        raise ModelNotFoundError(f"model folder {path} is incomplete; missing: " + "; ".join(missing))


def read_config(path: Path) -> ChameleonConfig:
    """The model's config, validated for the fields Familiar relies on."""
    try:
        config = ChameleonConfig.from_pretrained(path)
    except Exception as exc:
        raise ModelNotFoundError(f"cannot read {path / 'config.json'}: {exc}") from None
    if config.model_type != "chameleon":
        raise EngineError(f"{path} holds a {config.model_type!r} model; Familiar needs a Chameleon-family model")
    if not config.vocabulary_map:
        raise EngineError(f"{path / 'config.json'} has no vocabulary_map; it is required to map image tokens")
    if config.vq_config.base_channels % 32:
        raise EngineError("vq_config.base_channels must be a multiple of 32 (GroupNorm uses 32 groups)")
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


def parameter_counts(config: ChameleonConfig) -> tuple[int, int]:
    """(parameters in quantizable decoder-layer Linear weights, all other parameters), counted on meta."""
    with torch.device("meta"):
        model = FamiliarChameleon(config)
    quantizable = sum(m.weight.numel() for m in model.model.layers.modules() if isinstance(m, torch.nn.Linear))
    total = sum(p.numel() for p in model.parameters())
    return quantizable, total - quantizable


def estimate_memory(
    config: ChameleonConfig, device: torch.device, dtype: torch.dtype, quantize: bool
) -> MemoryEstimate:
    """Weights (4-bit NF4 with double quantization is ~0.52 bytes a weight), a 4096-token KV cache, 15% slack."""
    quantizable, other = parameter_counts(config)
    element = torch.finfo(dtype).bits // 8
    weights = quantizable * (0.52 if quantize else element) + other * element
    kv_cache = 2 * config.num_hidden_layers * config.max_position_embeddings * config.hidden_size * element
    needed = int((weights + kv_cache) * 1.15)
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
    else:
        free = psutil.virtual_memory().available
    return MemoryEstimate(needed=needed, available=int(free), device=str(device))


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
) -> LoadedModel:
    """Load `spec` (`demo`, a folder, or a hub id) ready for chat, generation and training.

    `quantize=None` means 4-bit on CUDA for real checkpoints and no quantization otherwise. Progress: "loading
    weights" (0 of 2), "loading tokenizers" (1 of 2), "loaded" (2 of 2).
    """
    report = progress or (lambda _p: None)
    path = resolve_model_dir(spec)
    check_model_dir(path)
    config = read_config(path)
    demo = demo_notice(path)
    is_demo = demo is not None
    target = resolve_device(device)
    if quantize is None:
        quantize = target.type == "cuda" and not is_demo
    if dtype is None:
        dtype = torch.bfloat16 if target.type == "cuda" else torch.float32
    if check_memory:
        estimate = estimate_memory(config, target, dtype, quantize)
        if not estimate.fits:
            hint = "" if quantize else "; try 4-bit quantization on a CUDA GPU"
            raise InsufficientMemoryError(f"the model at {path} will not fit: it {estimate.describe()}{hint}")
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
    model.requires_grad_(False).eval()
    report(Progress("loading tokenizers", 1, 2))
    tokenizer = AutoTokenizer.from_pretrained(path)
    decoder = load_decoder(path, config.vq_config).to(target).eval()
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

    dtype = dtype or (torch.bfloat16 if device.type == "cuda" else torch.float32)
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
