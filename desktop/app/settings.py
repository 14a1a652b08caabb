"""The app's settings: a small JSON file in the user's config folder (not the library, since one setting
chooses the library's folder). No Qt and no torch here."""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

import platformdirs

from store.paths import ENV_VAR, resolve_data_dir

CONFIG_ENV = "FAMILIAR_CONFIG"
DEVICES = ("auto", "cpu", "cuda")
REMOTE_KNN_STATEMENT = (
    "When this is on, training sends only a numeric embedding of your photos (a list of numbers) to the "
    "service you name, never the photos, and downloads the pictures it lists. It needs the offline index "
    "above: if the service fails, look-alikes come from the index and the training view says so. When it "
    "is off, nothing leaves this computer."
)


@dataclass(frozen=True)
class AppSettings:
    """What the user chose; empty strings mean the default."""

    model: str = "demo"
    device: str = "auto"
    four_bit: bool = True
    index_folder: str = ""
    embedder_weights: str = ""
    remote_knn: bool = False
    remote_knn_url: str = ""
    data_folder: str = ""
    aligner: str = ""
    """The Aligner file for instant concepts; empty means the demo model's own (none for other models)."""

    @property
    def quantize(self) -> bool | None:
        """`load_model`'s quantize argument: None lets it pick 4-bit on CUDA for real checkpoints."""
        return None if self.four_bit else False

    @property
    def remote_knn_service(self) -> str | None:
        """The remote kNN URL training may query: only when the user turned the service on and gave one."""
        return (self.remote_knn_url.strip() or None) if self.remote_knn else None


def settings_path() -> Path:
    """`$FAMILIAR_CONFIG/settings.json`, else the platform's config folder (e.g. ~/.config/Familiar)."""
    folder = os.environ.get(CONFIG_ENV) or platformdirs.user_config_dir("Familiar", appauthor=False)
    return Path(folder).expanduser() / "settings.json"


def load_settings(path: Path) -> AppSettings:
    """The saved settings; a missing or unreadable file, or unknown keys, fall back to defaults."""
    try:
        saved = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return AppSettings()
    if not isinstance(saved, dict):
        return AppSettings()
    defaults = AppSettings()
    known = {}
    for field in fields(AppSettings):
        value = saved.get(field.name)
        if isinstance(value, type(getattr(defaults, field.name))):
            known[field.name] = value
    settings = replace(defaults, **known)
    return settings if settings.device in DEVICES else replace(settings, device="auto")


def save_settings(path: Path, settings: AppSettings) -> None:
    """Write atomically (a temporary file renamed over the old one)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", encoding="utf-8", dir=path.parent, delete=False, suffix=".part") as out:
        json.dump(asdict(settings), out, indent=2, sort_keys=True)
    os.replace(out.name, path)


def library_folder(explicit: str | None, settings: AppSettings) -> Path:
    """--data-dir, else $FAMILIAR_DATA, else the folder chosen in settings, else the platform's."""
    if explicit or os.environ.get(ENV_VAR):
        return resolve_data_dir(explicit)
    return resolve_data_dir(settings.data_folder or None)


def folder_override(explicit: str | None) -> str | None:
    """How this session's library folder was forced, if it was: the settings' choice then waits."""
    if explicit:
        return "--data-dir"
    return f"${ENV_VAR}" if os.environ.get(ENV_VAR) else None
