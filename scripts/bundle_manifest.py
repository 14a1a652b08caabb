"""What the packaged app holds beyond what PyInstaller finds by itself; read by build.spec and the tests.

No PyInstaller import here, so that the tests can check the lists without it.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import re
import sys
from collections.abc import Iterable
from pathlib import Path

from desktop.app.qt_platform import XCB_PLUGIN_LIBRARIES, install_advice

ROOT = Path(__file__).resolve().parents[1]
CLI_NAME = "familiar"
GUI_NAME = "familiar-gui"
APP_NAME = "Familiar"
ENTRY_SCRIPT = ROOT / "desktop" / "frozen.py"
ICON_PNG = ROOT / "resources" / "icons" / "familiar.png"

# torchvision 0.29 loads its C++ ops from `_C_stable` and `image_stable` through torch.ops.load_library,
# which PyInstaller's hook (still naming `torchvision._C`) does not see.
TORCHVISION_EXTENSIONS = ("_C_stable", "image_stable")

# Model families the app loads: the Chameleon model and its tokenizer (LlamaTokenizer in real checkpoints),
# DINOv2 for instant concepts, ViT for evaluation's DINO, and what AutoTokenizer/AutoConfig touch on the way.
TRANSFORMERS_MODELS_KEPT = ("auto", "chameleon", "dinov2", "encoder_decoder", "llama", "vit")

EXCLUDES = (
    "triton",  # 0.9 GB: torch.compile's GPU compiler; Familiar does not compile, torch runs without it
    "faiss",  # the test extra's; the offline index falls back to numpy where faiss is absent
    "pytest",
    "_pytest",
    "pytestqt",
    "tkinter",
    "matplotlib",
    "IPython",
    "tensorboard",
    "torch.utils.tensorboard",
    "PyInstaller",
    "setuptools",
    "pip",
)


# Libraries Qt's X11 plugin needs that PyInstaller leaves to the system on purpose (its depend/dylib.py excludes
# the graphics stack, libGL/libEGL, and libxcb itself, which come with any X server's client side and must match
# the system's drivers). Every other one in XCB_PLUGIN_LIBRARIES goes into the bundle.
XCB_FROM_THE_SYSTEM = ("libxcb.so.1", "libGL.so.1", "libEGL.so.1")


def xcb_libraries_carried() -> list[str]:
    """The sonames of Qt's X11 plugin's system libraries that the Linux bundle carries."""
    return [name for name in XCB_PLUGIN_LIBRARIES if name not in XCB_FROM_THE_SYSTEM]


def xcb_build_problem(collected: Iterable[str]) -> str | None:
    """Why a Linux build must stop: the libraries the bundle should carry that PyInstaller did not collect (it
    skips, with a warning, those not installed on the build machine), with what to install; None when all are in
    `collected` (the destination names of the Analysis binaries)."""
    names = {Path(dest).name for dest in collected}
    missing = [name for name in xcb_libraries_carried() if name not in names]
    if not missing:
        return None
    return (
        f"Qt's X11 plugin needs {', '.join(missing)}, not installed on this build machine, so the bundle would not "
        f"open a window on systems without them: install them ({install_advice(missing)}) and build again"
    )


def bitsandbytes_library_unused(dest: str, torch_cuda: str | None) -> bool:
    """True for bitsandbytes' native libraries this torch never loads: it loads `libbitsandbytes_cpu` and,
    on CUDA, the one built for torch's own CUDA version (`cuda130` for 13.0); the others (other CUDA
    versions, ROCm, XPU) are about 120 MB."""
    name = Path(dest).name
    if not (Path(dest).parent.name == "bitsandbytes" and name.startswith("libbitsandbytes_")):
        return False
    kept = {"cpu"} | ({"cuda" + torch_cuda.replace(".", "")} if torch_cuda else set())
    return name.removeprefix("libbitsandbytes_").split(".")[0] not in kept


def resource_datas(root: Path = ROOT) -> list[tuple[str, str]]:
    """The whole `resources/` folder (demo model, demo Aligner, micro-world reader, icons), whatever its files."""
    return [(str(root / "resources"), "resources")]


def torchvision_extensions() -> list[tuple[str, str]]:
    """(file, "torchvision") for each of torchvision's stable-ABI extensions, found as torchvision finds them."""
    spec = importlib.util.find_spec("torchvision")
    if spec is None or spec.origin is None:
        raise RuntimeError("torchvision is not installed")
    folder = Path(spec.origin).parent
    loader = (importlib.machinery.ExtensionFileLoader, importlib.machinery.EXTENSION_SUFFIXES)
    found = []
    for name in TORCHVISION_EXTENSIONS:
        ext = importlib.machinery.FileFinder(str(folder), loader).find_spec(name)
        if ext is None or ext.origin is None:
            raise RuntimeError(f"torchvision's {name} extension is missing from {folder}")
        found.append((ext.origin, "torchvision"))
    return found


def transformers_model_excludes() -> list[str]:
    """`transformers.models.X` for every model family except the kept ones (transformers names them all)."""
    spec = importlib.util.find_spec("transformers")
    if spec is None or spec.origin is None:
        raise RuntimeError("transformers is not installed")
    models = Path(spec.origin).parent / "models"
    return sorted(
        f"transformers.models.{child.name}"
        for child in models.iterdir()
        if child.is_dir() and (child / "__init__.py").is_file() and child.name not in TRANSFORMERS_MODELS_KEPT
    )


def version(root: Path = ROOT) -> str:
    """The app's version, read from `desktop/__init__.py` without importing it."""
    found = re.search(r'^__version__ = "([^"]+)"', (root / "desktop" / "__init__.py").read_text(encoding="utf-8"), re.M)
    if found is None:
        raise RuntimeError("desktop/__init__.py names no __version__")
    return found.group(1)


def icon(platform: str = sys.platform) -> str | None:
    """The executables' icon: PyInstaller turns the PNG into .ico/.icns with Pillow; Linux uses none."""
    return str(ICON_PNG) if platform in ("win32", "darwin") and ICON_PNG.is_file() else None
