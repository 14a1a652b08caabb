"""Getting a model, against a stand-in hub on 127.0.0.1: a full download that passes the folder check with the
VQGAN checkpoint converted (and gone); a dropped connection that the next download resumes with a byte range; a
file whose hash differs from the published one refused and not kept; a disk too small refused before anything is
written; a cancel that keeps what was fetched. Nothing connects anywhere but the loopback server."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from desktop.services.model_check import inspect_folder
from desktop.services.model_download import (
    DECODER_FILE,
    RELEASE_VQGAN,
    WORK_FOLDER,
    DownloadCancelled,
    DownloadError,
    NotEnoughDiskError,
    download,
    plan_download,
)
from engine.model.loading import demo_model_dir
from engine.progress import Progress
from tests.desktop.hub_server import MODEL_REPO, RELEASE, FakeHub, loopback_only, serve, tiny_model_hub


@pytest.fixture
def hub(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeHub]:
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    with serve(tiny_model_hub()) as running:
        running.connected = loopback_only(monkeypatch)  # type: ignore[attr-defined]
        yield running
    assert running.connected and all(address[0] == "127.0.0.1" for address in running.connected)  # type: ignore[attr-defined]


def _plan(hub: FakeHub, folder: Path, free_bytes: int | None = None):
    return plan_download(folder, MODEL_REPO, release_repo=RELEASE, endpoint=hub.url, free_bytes=free_bytes)


def test_a_download_is_verified_converted_and_complete(hub: FakeHub, tmp_path: Path) -> None:
    folder = tmp_path / "tiny"
    plan = _plan(hub, folder)
    fetched = {file.local for file in plan.files}
    assert fetched == {
        "config.json",
        "generation_config.json",
        "tokenizer.json",
        "tokenizer_config.json",
        "model.safetensors",
        "LICENSE",
        RELEASE_VQGAN,
        "original-release/LICENSE.txt",
    }
    assert (
        plan.total == sum(len(hub.repos[f.repo_id].files[f.path]) for f in plan.files) and plan.remaining == plan.total
    )
    lines = "\n".join(plan.describe())
    assert f"Licence: {MODEL_REPO}: apache-2.0" in lines and "saved as LICENSE" in lines
    assert f"Licence: {RELEASE}: not stated in the model card; see {hub.url}/{RELEASE}/blob/" in lines
    assert "Free disk space there:" in lines and not hub.downloads("model.safetensors")

    events: list[Progress] = []
    assert download(plan, progress=events.append) == folder
    assert events[-1].step == events[-1].total and events[-1].phase == "download MiB"
    report = inspect_folder(folder, device="cpu")
    assert report.complete and report.memory is not None and report.memory.fits, report
    converted, original = load_file(folder / DECODER_FILE), load_file(demo_model_dir() / DECODER_FILE)
    assert converted.keys() == original.keys() and all(torch.equal(converted[k], original[k]) for k in original)
    assert not (folder / "tokenizer").exists() and not (folder / "pytorch_model.bin").exists()
    assert (folder / "original-release" / "LICENSE.txt").read_bytes() == b"Test licence for the release.\n"

    again = _plan(hub, folder)
    assert again.remaining == 0 and RELEASE_VQGAN not in {file.local for file in again.files}
    before = len(hub.requests)
    download(again)
    assert all("/api/models/" in path for _, path, _ in hub.requests[before:])  # nothing fetched twice


def test_a_dropped_connection_is_resumed_by_the_next_download(hub: FakeHub, tmp_path: Path) -> None:
    folder = tmp_path / "tiny"
    size = len(hub.repos[MODEL_REPO].files["model.safetensors"])
    hub.drop_after[(MODEL_REPO, "model.safetensors")] = size * 3 // 4  # past huggingface_hub's first 10 MiB chunk
    with pytest.raises(DownloadError, match=r"model\.safetensors .* stopped at .* run the same command again"):
        download(_plan(hub, folder))
    partial = folder / WORK_FOLDER / "model.safetensors.part"
    kept = partial.stat().st_size
    assert 0 < kept < size and not (folder / "model.safetensors").exists()

    hub.down = False
    plan = _plan(hub, folder)
    assert plan.partial == kept
    download(plan)
    assert hub.downloads("/model.safetensors")[-1] == ("GET", f"bytes={kept}-")
    assert (folder / "model.safetensors").read_bytes() == hub.repos[MODEL_REPO].files["model.safetensors"]
    assert inspect_folder(folder, device="cpu").complete and not partial.exists()


@pytest.mark.parametrize(
    ("repo", "path", "kind"),
    [(MODEL_REPO, "model.safetensors", "sha256"), (MODEL_REPO, "tokenizer.json", "git blob id")],
)
def test_a_file_that_does_not_match_its_hash_is_refused(
    hub: FakeHub, tmp_path: Path, repo: str, path: str, kind: str
) -> None:
    folder = tmp_path / "tiny"
    published = hub.repos[repo].files[path]
    hub.tamper[(repo, path)] = published[:100] + bytes([published[100] ^ 1]) + published[101:]
    with pytest.raises(DownloadError, match=f"{path} from {repo} does not match the {kind} .* deleted, not kept"):
        download(_plan(hub, folder))
    assert not (folder / path).exists() and not (folder / WORK_FOLDER / f"{path}.part").exists()

    del hub.tamper[(repo, path)]
    download(_plan(hub, folder))
    assert (folder / path).read_bytes() == published


def test_a_disk_too_small_is_refused_before_anything_is_written(hub: FakeHub, tmp_path: Path) -> None:
    folder = tmp_path / "tiny"
    plan = _plan(hub, folder, free_bytes=1000)
    assert not plan.fits and plan.needed > plan.total  # room for the converted decoder is counted too
    with pytest.raises(NotEnoughDiskError, match=r"not enough disk space at .*: the download needs .* only 1 KiB"):
        download(plan)
    assert not folder.exists() and not hub.downloads("model.safetensors")


def test_a_cancelled_download_keeps_what_it_fetched_and_resumes(hub: FakeHub, tmp_path: Path) -> None:
    folder = tmp_path / "tiny"
    written: list[int] = []

    def cancelled() -> bool:
        partial = folder / WORK_FOLDER / "model.safetensors.part"
        written.append(partial.stat().st_size if partial.is_file() else 0)
        return written[-1] > 0

    with pytest.raises(DownloadCancelled, match="run it again to resume"):
        download(_plan(hub, folder), cancelled=cancelled)
    kept = (folder / WORK_FOLDER / "model.safetensors.part").stat().st_size
    assert 0 < kept < len(hub.repos[MODEL_REPO].files["model.safetensors"])
    download(_plan(hub, folder))
    assert hub.downloads("/model.safetensors")[-1] == ("GET", f"bytes={kept}-")
    assert inspect_folder(folder, device="cpu").complete


def test_an_unknown_repository_is_one_sentence(hub: FakeHub, tmp_path: Path) -> None:
    with pytest.raises(DownloadError, match="familiar-test/nothing was not found"):
        plan_download(tmp_path, "familiar-test/nothing", release_repo=None, endpoint=hub.url)
