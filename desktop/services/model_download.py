"""Get a model: a Chameleon-family checkpoint in the Hugging Face layout plus the original release's VQGAN
checkpoint, downloaded through `huggingface_hub` only when the user asks; resumable, verified, then the VQGAN
checkpoint converted once to safetensors.

`plan_download` reads the two repositories' file lists (sizes, hashes, licences) and the free disk space;
`download` fetches what is missing into the folder, resuming interrupted files, and refuses any file whose
sha256 (or, for small files kept in git, git blob id) differs from what the hub publishes. The endpoint is
`HF_ENDPOINT` (huggingface_hub's setting) unless one is given. huggingface_hub, torch and the engine's model
code are imported only inside the functions that use them.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from engine.errors import EngineError
from engine.progress import Progress, ProgressCallback

DEFAULT_REPO = "leloy/Anole-7b-v0.1-hf"
"""Anole-7b (a Chameleon fine-tuned to draw) converted to the Hugging Face layout."""
RELEASE_REPO = "GAIR/Anole-7b-v0.1"
"""The original Anole release: its `tokenizer/vqgan.ckpt` holds the VQGAN decoder the conversion dropped."""
RELEASE_VQGAN = "tokenizer/vqgan.ckpt"
RELEASE_FOLDER = "original-release"
"""Where the release's licence files go in the model folder (the model repository may have its own)."""
WORK_FOLDER = ".familiar-download"
"""Interrupted files (`*.part`) and the record of verified files, inside the model folder."""
VERIFIED_FILE = "verified.json"
DECODER_FILE = "vqgan_decoder.safetensors"  # engine.model.vqgan.DECODER_FILE, without importing torch here
PHASE = "download MiB"
MIB = 2**20
REPORT_EVERY_S = 0.25
HASH_CHUNK = 8 * MIB
ConfirmCancel = Callable[[], bool]


class DownloadError(EngineError):
    """The download could not be done: the hub refused, the connection dropped, or a file failed verification."""


class NotEnoughDiskError(DownloadError):
    """The destination's disk has less free space than the download needs."""


class DownloadCancelled(DownloadError):
    """The user cancelled; what was fetched is kept and the next download resumes from it."""


@dataclass(frozen=True)
class RemoteFile:
    """One file to fetch: where it is on the hub (at a fixed commit), where it goes, and how to check it."""

    repo_id: str
    commit: str
    path: str
    local: str
    size: int
    sha256: str | None
    """The sha256 the hub publishes for files stored with Git LFS (the weights, the VQGAN checkpoint)."""
    blob_id: str | None
    """The git blob id of files kept in git itself (configs, tokenizer), checked when there is no sha256."""

    @property
    def expected(self) -> str:
        return self.sha256 or self.blob_id or ""


@dataclass(frozen=True)
class Licence:
    """What a repository says about its licence, and the licence files fetched with the model."""

    repo_id: str
    licence: str
    link: str | None
    files: tuple[str, ...]

    def describe(self) -> str:
        parts = [f"{self.repo_id}: {self.licence}"]
        if self.link:
            parts.append(f"see {self.link}")
        if self.files:
            parts.append("saved as " + ", ".join(self.files))
        return "; ".join(parts)


@dataclass(frozen=True)
class DownloadPlan:
    """What `download` will fetch into `destination`, and whether the disk has room for it."""

    destination: Path
    endpoint: str
    files: tuple[RemoteFile, ...]
    licences: tuple[Licence, ...]
    done: int
    """Bytes of files already here and verified."""
    partial: int
    """Bytes of interrupted files that the download resumes from."""
    free: int
    """Free bytes on the destination's disk."""

    @property
    def total(self) -> int:
        return sum(file.size for file in self.files)

    @property
    def remaining(self) -> int:
        return self.total - self.done - self.partial

    @property
    def needed(self) -> int:
        """Bytes still to write: the rest of the download, plus room for the converted VQGAN decoder (at most
        the checkpoint's size) while the checkpoint still exists."""
        conversion = sum(file.size for file in self.files if file.local == RELEASE_VQGAN)
        return self.remaining + conversion

    @property
    def fits(self) -> bool:
        return self.needed <= self.free

    def describe(self) -> list[str]:
        """Lines for the user before anything is downloaded: sizes, free space, licences."""
        lines = [
            f"Model folder: {self.destination}",
            f"Files: {len(self.files)}, {size_text(self.total)} in all; {size_text(self.done + self.partial)} "
            f"already here, {size_text(self.remaining)} to download",
            f"Free disk space there: {size_text(self.free)} (needs {size_text(self.needed)})",
        ]
        lines += [f"Licence: {licence.describe()}" for licence in self.licences]
        return lines

    def disk_problem(self) -> str:
        return (
            f"not enough disk space at {self.destination}: the download needs {size_text(self.needed)} but only "
            f"{size_text(self.free)} is free; free some space or choose another folder"
        )


def size_text(count: int) -> str:
    if count >= 2**30:
        return f"{count / 2**30:.1f} GiB"
    if count >= MIB:
        return f"{count / MIB:.0f} MiB"
    return f"{count / 1024:.0f} KiB"


def default_destination(data_dir: Path, repo_id: str) -> Path:
    """`DATA_DIR/models/NAME` for the repository `OWNER/NAME`."""
    return data_dir / "models" / repo_id.rsplit("/", 1)[-1]


def free_space(path: Path) -> int:
    """Free bytes on the disk that holds `path` (or its nearest existing parent)."""
    existing = path.absolute()
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    return shutil.disk_usage(existing).free


def _endpoint(endpoint: str | None) -> str:
    from huggingface_hub import constants

    return (endpoint or os.environ.get("HF_ENDPOINT") or constants.ENDPOINT).rstrip("/")


def _is_licence(name: str) -> bool:
    return name.upper().startswith(("LICENSE", "LICENCE", "NOTICE"))


def _wanted_model_file(path: str) -> bool:
    """The Hugging Face layout's files: top-level JSON and safetensors, the licence and the model card."""
    if "/" in path:
        return False
    return path.endswith((".json", ".safetensors")) or _is_licence(path) or path == "README.md"


def _repo_files(
    api: Any, repo_id: str, revision: str | None, wanted: Callable[[str], str | None]
) -> tuple[list[RemoteFile], Licence]:
    """The files of `repo_id` that `wanted` maps to a local path, at the commit `revision` resolves to now."""
    info = _hub_call(lambda: api.model_info(repo_id, revision=revision, files_metadata=True), repo_id, api.endpoint)
    if not info.sha:
        raise DownloadError(f"{repo_id}: the hub did not say which commit {revision or 'main'} is")
    files = []
    for sibling in info.siblings or []:
        local = wanted(sibling.rfilename)
        if local is None:
            continue
        lfs = sibling.lfs
        size = lfs.size if lfs is not None else sibling.size
        if size is None:
            raise DownloadError(f"{repo_id}: the hub gave no size for {sibling.rfilename}")
        files.append(
            RemoteFile(
                repo_id=repo_id,
                commit=info.sha,
                path=sibling.rfilename,
                local=local,
                size=int(size),
                sha256=lfs.sha256 if lfs is not None else None,
                blob_id=sibling.blob_id,
            )
        )
    card = info.card_data
    name = getattr(card, "license", None) if card is not None else None
    link = getattr(card, "license_link", None) if card is not None else None
    licence_files = [file for file in files if _is_licence(file.path)]
    if not link and licence_files:
        link = f"{api.endpoint}/{repo_id}/blob/{info.sha}/{licence_files[0].path}"
    described = str(name) if name else "not stated in the model card"
    return files, Licence(repo_id, described, link, tuple(file.local for file in licence_files))


def _hub_call(call: Callable[[], Any], repo_id: str, endpoint: str) -> Any:
    """Run a huggingface_hub request, turning its failures into one DownloadError sentence."""
    import httpx2
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        OfflineModeIsEnabled,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    try:
        return call()
    except GatedRepoError:
        raise DownloadError(
            f"{repo_id} is gated: accept its licence on the hub's page and log in (`hf auth login`), then retry"
        ) from None
    except RepositoryNotFoundError:
        raise DownloadError(f"{repo_id} was not found on {endpoint} (or it is private)") from None
    except RevisionNotFoundError:
        raise DownloadError(f"{repo_id} has no such revision") from None
    except OfflineModeIsEnabled:
        raise DownloadError("HF_HUB_OFFLINE is set, so nothing can be downloaded; unset it to get a model") from None
    except (HfHubHTTPError, httpx2.HTTPError, OSError) as exc:
        raise DownloadError(f"could not reach the hub for {repo_id}: {_one_line(exc)}") from None


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def plan_download(
    destination: Path,
    repo_id: str = DEFAULT_REPO,
    *,
    revision: str | None = None,
    release_repo: str | None = RELEASE_REPO,
    endpoint: str | None = None,
    free_bytes: int | None = None,
) -> DownloadPlan:
    """Ask the hub what `repo_id` (and the release's VQGAN checkpoint from `release_repo`, unless the folder
    already has the converted decoder or None is given) holds, and compare it with what `destination` has.

    `free_bytes` replaces the measured free disk space (for tests). Reads file lists only; downloads nothing.
    """
    from huggingface_hub import HfApi

    destination = Path(destination).expanduser().absolute()
    if destination.exists() and not destination.is_dir():
        raise DownloadError(f"{destination} is a file; choose a folder for the model")
    api = HfApi(endpoint=_endpoint(endpoint))
    files, licence = _repo_files(api, repo_id, revision, lambda p: p if _wanted_model_file(p) else None)
    if not any(file.local == "config.json" for file in files):
        raise DownloadError(f"{repo_id} has no config.json: it is not a model in the Hugging Face layout")
    licences = [licence]
    has_decoder = (destination / DECODER_FILE).is_file() or any(file.local == DECODER_FILE for file in files)
    if release_repo:

        def from_release(path: str) -> str | None:
            if path == RELEASE_VQGAN:
                return None if has_decoder else path
            return f"{RELEASE_FOLDER}/{path}" if "/" not in path and _is_licence(path) else None

        release_files, release_licence = _repo_files(api, release_repo, None, from_release)
        if not has_decoder and not any(file.local == RELEASE_VQGAN for file in release_files):
            raise DownloadError(f"{release_repo} has no {RELEASE_VQGAN}: it is not the original release")
        files += release_files
        licences.append(release_licence)
    verified = _read_verified(destination)
    done = sum(file.size for file in files if _already_verified(destination, file, verified))
    partial = sum(
        min(_partial_path(destination, file).stat().st_size, file.size)
        for file in files
        if not _already_verified(destination, file, verified) and _partial_path(destination, file).is_file()
    )
    return DownloadPlan(
        destination=destination,
        endpoint=api.endpoint,
        files=tuple(files),
        licences=tuple(licences),
        done=done,
        partial=partial,
        free=free_space(destination) if free_bytes is None else free_bytes,
    )


def _partial_path(destination: Path, file: RemoteFile) -> Path:
    return destination / WORK_FOLDER / f"{file.local}.part"


def _read_verified(destination: Path) -> dict[str, str]:
    """Local path -> the hash it was verified against."""
    try:
        record = json.loads((destination / WORK_FOLDER / VERIFIED_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return {k: v for k, v in record.items() if isinstance(v, str)} if isinstance(record, dict) else {}


def _write_verified(destination: Path, verified: dict[str, str]) -> None:
    path = destination / WORK_FOLDER / VERIFIED_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    part = path.with_suffix(".part")
    part.write_text(json.dumps(verified, indent=1, sort_keys=True), encoding="utf-8")
    os.replace(part, path)


def _already_verified(destination: Path, file: RemoteFile, verified: dict[str, str]) -> bool:
    target = destination / file.local
    return verified.get(file.local) == file.expected and target.is_file() and target.stat().st_size == file.size


class _Meter:
    """Bytes of the whole download, reported as `Progress` in MiB with the time left at this session's rate."""

    def __init__(self, total: int, start: int, report: ProgressCallback | None, cancelled: ConfirmCancel | None):
        self.total, self.count, self.start = total, start, start
        self.report, self.cancelled = report, cancelled
        self.began = time.monotonic()
        self.last = 0.0

    def check(self) -> None:
        if self.cancelled is not None and self.cancelled():
            raise DownloadCancelled("download cancelled; run it again to resume where it stopped")

    def add(self, count: int) -> None:
        self.count += count
        now = time.monotonic()
        if now - self.last >= REPORT_EVERY_S:
            self.last = now
            self._send(now)

    def finish(self) -> None:
        self.count = self.total
        self._send(time.monotonic())

    def _send(self, now: float) -> None:
        if self.report is None:
            return
        fetched, elapsed = self.count - self.start, now - self.began
        eta = (self.total - self.count) * elapsed / fetched if fetched > 0 and elapsed > 0 else None
        total = -(-self.total // MIB)
        step = total if self.count >= self.total else min(self.count // MIB, total - 1)
        self.report(Progress(PHASE, step, total, eta_seconds=eta))


class _Sink:
    """The file object huggingface_hub's `http_get` writes to: counts bytes and stops when cancelled."""

    def __init__(self, raw: BinaryIO, meter: _Meter) -> None:
        self.raw, self.meter = raw, meter

    def write(self, chunk: bytes) -> int:
        self.meter.check()
        written = self.raw.write(chunk)
        self.meter.add(written)
        return written

    def tell(self) -> int:
        return self.raw.tell()

    def seek(self, offset: int, whence: int = 0) -> int:
        return self.raw.seek(offset, whence)

    def truncate(self, size: int | None = None) -> int:
        before = self.raw.seek(0, os.SEEK_END)
        after = self.raw.truncate(size)  # the server ignored the Range header: start this file again
        self.meter.add(after - before)
        return after


def _digest(path: Path, file: RemoteFile, meter: _Meter) -> str:
    """sha256 of the file when the hub published one, else its git blob id."""
    digest = hashlib.sha256() if file.sha256 else hashlib.sha1()
    if not file.sha256:
        digest.update(f"blob {path.stat().st_size}\0".encode())
    with path.open("rb") as handle:
        while chunk := handle.read(HASH_CHUNK):
            meter.check()
            digest.update(chunk)
    return digest.hexdigest()


def _fetch(plan: DownloadPlan, file: RemoteFile, meter: _Meter) -> None:
    """Fetch one file into its `.part` (resuming it), verify it, and move it into place; refuse a mismatch."""
    import httpx2
    from huggingface_hub import hf_hub_url
    from huggingface_hub.errors import HfHubHTTPError
    from huggingface_hub.file_download import http_get
    from huggingface_hub.utils import build_hf_headers
    from huggingface_hub.utils.tqdm import silent_tqdm

    if not file.expected:
        raise DownloadError(f"{file.repo_id}: the hub gave no hash for {file.path}; Familiar keeps no unverified file")
    partial = _partial_path(plan.destination, file)
    partial.parent.mkdir(parents=True, exist_ok=True)
    resume = partial.stat().st_size if partial.is_file() else 0
    if resume > file.size:
        partial.unlink()
        meter.add(-resume)
        resume = 0
    url = hf_hub_url(file.repo_id, file.path, revision=file.commit, endpoint=plan.endpoint)
    headers = build_hf_headers()
    headers["Accept-Encoding"] = "identity"  # byte offsets must be the file's own for a resume
    with partial.open("ab") as raw:
        try:
            http_get(
                url,
                _Sink(raw, meter),  # type: ignore[arg-type]  # a file-like object, as http_get needs
                resume_size=resume,
                headers=headers,
                expected_size=file.size,
                displayed_filename=file.path,
                tqdm_class=silent_tqdm,  # type: ignore[arg-type]  # progress goes through _Sink
            )
        except (HfHubHTTPError, httpx2.HTTPError, OSError) as exc:
            raw.flush()
            got = partial.stat().st_size
            raise DownloadError(
                f"downloading {file.path} from {file.repo_id} stopped at {size_text(got)} of "
                f"{size_text(file.size)} ({_one_line(exc)}); run the same command again to resume"
            ) from None
    found = _digest(partial, file, meter)
    if found != file.expected:
        partial.unlink()
        meter.add(-file.size)
        kind = "sha256" if file.sha256 else "git blob id"
        raise DownloadError(
            f"{file.path} from {file.repo_id} does not match the {kind} the hub publishes (expected "
            f"{file.expected}, got {found}); it was deleted, not kept. Retry; if it fails again, the server or a "
            f"proxy is sending a different file"
        )
    target = plan.destination / file.local
    target.parent.mkdir(parents=True, exist_ok=True)
    os.replace(partial, target)


def download(
    plan: DownloadPlan, progress: ProgressCallback | None = None, cancelled: ConfirmCancel | None = None
) -> Path:
    """Fetch what `plan` lists into its folder, then convert the VQGAN checkpoint; returns the folder.

    Raises NotEnoughDiskError before writing anything when the disk is too small, DownloadCancelled when
    `cancelled()` turns true (the files fetched so far, whole or in part, are kept for the next try), and
    DownloadError for a failure or a file whose hash does not match (that file is deleted).
    """
    if not plan.fits:
        raise NotEnoughDiskError(plan.disk_problem())
    destination = plan.destination
    destination.mkdir(parents=True, exist_ok=True)
    verified = _read_verified(destination)
    meter = _Meter(plan.total, plan.done + plan.partial, progress, cancelled)
    for file in plan.files:
        meter.check()
        if _already_verified(destination, file, verified):
            continue
        target = destination / file.local
        if target.is_file() and target.stat().st_size == file.size and _digest(target, file, meter) == file.expected:
            meter.add(file.size)  # a file put here by hand, verified now
        else:
            _fetch(plan, file, meter)
        verified[file.local] = file.expected
        _write_verified(destination, verified)
    meter.finish()
    convert_release_vqgan(destination)
    return destination


def convert_release_vqgan(folder: Path) -> bool:
    """Convert `tokenizer/vqgan.ckpt` once to `vqgan_decoder.safetensors` (read with `torch.load(weights_only=True)`,
    never unpickling other objects), then delete the checkpoint; False when there is none to convert."""
    ckpt = folder / RELEASE_VQGAN
    if not ckpt.is_file():
        return False
    from engine.model.loading import read_config
    from engine.model.vqgan import convert_vqgan_ckpt

    config = read_config(folder)
    part = folder / WORK_FOLDER / f"{DECODER_FILE}.part"
    part.parent.mkdir(parents=True, exist_ok=True)
    convert_vqgan_ckpt(ckpt, part, config.vq_config)
    os.replace(part, folder / DECODER_FILE)
    ckpt.unlink()
    if not any(ckpt.parent.iterdir()):
        ckpt.parent.rmdir()
    return True
