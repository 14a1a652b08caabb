"""Shared fixtures: the real photos beside the repo, a private library for every test, a socket guard, and an empty
working folder."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

import pytest

DREAMBOOTH = Path(__file__).resolve().parents[2] / "shared" / "data" / "dreambooth"


@pytest.fixture(scope="session")
def dreambooth() -> Path:
    """`../shared/data/dreambooth` (DreamBooth subjects, CC BY 4.0); tests skip where it is absent."""
    if not (DREAMBOOTH / "dog" / "00.jpg").is_file():
        pytest.skip(f"real photos not found at {DREAMBOOTH} (they live beside the repo, not in it)")
    return DREAMBOOTH


@pytest.fixture(autouse=True)
def private_library(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test's default library is a fresh temporary folder, never the user's real one."""
    folder = tmp_path_factory.mktemp("library")
    monkeypatch.setenv("FAMILIAR_DATA", str(folder))
    return folder


@pytest.fixture
def no_sockets(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """From now on in the test, opening a socket fails the test; returns the attempts, which should stay empty."""
    attempts: list[Any] = []

    def refuse(*args: Any, **kwargs: Any) -> None:
        attempts.append(args)
        raise AssertionError(f"a socket was opened: {args}")

    monkeypatch.setattr(socket, "socket", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    return attempts


@pytest.fixture
def no_hub(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, no_sockets: list[Any]) -> list[Any]:
    """`no_sockets`, and no name lookup or hub download either, with HF_HUB_OFFLINE unset, an empty Hugging Face
    cache and `tmp_path` as the working folder; returns the attempts, which should stay empty."""
    import huggingface_hub
    from huggingface_hub import constants

    def refuse(*args: Any, **kwargs: Any) -> None:
        no_sockets.append(args)
        raise AssertionError(f"network attempted: {args} {kwargs}")

    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(huggingface_hub, "snapshot_download", refuse)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub-cache"))
    monkeypatch.chdir(tmp_path)
    return no_sockets


@pytest.fixture
def empty_cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty folder under `tmp_path`, made the working folder: a command that writes only where it is told leaves
    it empty."""
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    return work
