"""`familiar model check` on the demo model and on an incomplete folder; `familiar model get` against a stand-in hub
on 127.0.0.1 (reached through HF_ENDPOINT): it asks first, then downloads, checks and records the folder, which
becomes the `--model` default of the model commands."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from desktop.app.settings import load_settings, settings_path
from desktop.cli.main import build_parser, main
from engine.model.loading import demo_model_dir
from tests.desktop.hub_server import MODEL_REPO, RELEASE, loopback_only, serve, tiny_model_hub


def test_model_check_reports_the_demo_model_as_complete(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["model", "check", str(demo_model_dir()), "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert f"Model folder {demo_model_dir()}: complete" in out and "Missing: nothing" in out
    assert "VQGAN decoder: vqgan_decoder.safetensors" in out and "Memory: It fits: in float32" in out
    assert load_settings(settings_path()).model == "demo"


def test_model_check_lists_what_an_incomplete_folder_lacks(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "half"
    folder.mkdir()
    for name in ("config.json", "model.safetensors"):
        shutil.copy(demo_model_dir() / name, folder / name)
    assert main(["model", "check", str(folder), "--device", "cpu"]) == 2
    captured = capsys.readouterr()
    assert f"Model folder {folder}: incomplete" in captured.out
    assert "Missing: tokenizer.json; vqgan_decoder.safetensors or tokenizer/vqgan.ckpt" in captured.out
    assert "not usable yet" in captured.err and not settings_path().exists()


def test_model_get_asks_downloads_checks_and_records(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    folder = tmp_path / "models" / "tiny"
    command = ["model", "get", MODEL_REPO, "--vqgan-repo", RELEASE, "--dir", str(folder), "--device", "cpu"]
    with serve(tiny_model_hub()) as hub:
        connected = loopback_only(monkeypatch)
        monkeypatch.setenv("HF_ENDPOINT", hub.url)
        assert main(command) == 1  # no terminal to answer the question, and no --yes
        out = capsys.readouterr().out
        assert "Files: 8, " in out and "Free disk space there:" in out and "Nothing downloaded." in out
        assert f"Licence: {MODEL_REPO}: apache-2.0" in out and not folder.exists()

        assert main([*command, "--yes"]) == 0
    assert connected and all(address[0] == "127.0.0.1" for address in connected)
    out = capsys.readouterr().out
    assert f"Model folder {folder}: complete" in out and "Memory: It fits" in out
    assert load_settings(settings_path()).model == str(folder.resolve())
    assert build_parser().parse_args(["chat", "hello"]).model == str(folder.resolve())
    assert (
        build_parser().parse_args(["bench", "personalization", "-o", "r.json"]).model == "demo"
    )  # the micro-world's own
