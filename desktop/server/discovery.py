"""The discovery file: where a running server listens and its token, in the library folder, readable only by the
user (0600). Written when the server starts, removed when it stops; a file whose process is gone is stale."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import psutil

FILE_NAME = "server.json"
HOST = "127.0.0.1"


@dataclass(frozen=True)
class ServerInfo:
    """What a client needs to reach a server: its port and token, the model it serves, and its process."""

    port: int
    token: str
    model: str
    pid: int
    host: str = HOST

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"


def model_key(spec: str) -> str:
    """The name a server and a client compare to know they mean the same model: `demo`, a folder's resolved path,
    or a hub id as given."""
    if spec == "demo":
        return spec
    path = Path(spec).expanduser()
    return str(path.resolve()) if path.exists() else spec


def discovery_path(library_dir: Path) -> Path:
    return library_dir / FILE_NAME


def write(library_dir: Path, info: ServerInfo) -> Path:
    """Write the file atomically with permissions 0600 (created so; never world-readable, even for a moment)."""
    library_dir.mkdir(parents=True, exist_ok=True)
    target = discovery_path(library_dir)
    part = target.with_name(f".{FILE_NAME}.{os.getpid()}.part")
    fd = os.open(part, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            json.dump(asdict(info), out)
            out.flush()
            os.fsync(out.fileno())
        os.replace(part, target)
    except BaseException:
        part.unlink(missing_ok=True)
        raise
    return target


def read(library_dir: Path) -> ServerInfo | None:
    """The file's contents, or None when there is no file or it is not one this version wrote."""
    try:
        data = json.loads(discovery_path(library_dir).read_text(encoding="utf-8"))
        info = ServerInfo(
            port=int(data["port"]), token=str(data["token"]), model=str(data["model"]), pid=int(data["pid"])
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return info if data.get("host") == HOST else None


def read_running(library_dir: Path) -> ServerInfo | None:
    """The file's contents when its process still exists; None for no file or a stale one (a dead server's)."""
    info = read(library_dir)
    if info is None or not psutil.pid_exists(info.pid):
        return None
    return info


def remove(library_dir: Path, token: str) -> None:
    """Delete the file if it is still this server's (another server may have replaced it)."""
    info = read(library_dir)
    if info is not None and info.token == token:
        discovery_path(library_dir).unlink(missing_ok=True)
