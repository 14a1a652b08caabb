"""A missing or crafted model folder fails in one line with status 2, at once, and never reaches the network."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from safetensors.torch import load_file, save_file

from desktop.cli import chat
from desktop.cli.main import main
from engine.errors import ModelNotFoundError
from engine.model.folder_checks import WEIGHTS_INDEX, check_model_files
from engine.model.loading import DEMO_MARKER, check_model_dir, demo_model_dir, read_config

ROOT = Path(__file__).resolve().parents[3]
Edit = Callable[[Path], None]


def _replace(path: Path) -> Path:
    """``path`` with its link to the demo model's file removed, ready to be written (never through the link)."""
    path.unlink(missing_ok=True)
    return path


def _config(**changes: Any) -> Edit:
    def edit(folder: Path) -> None:
        config = json.loads((demo_model_dir() / "config.json").read_text())
        for key, value in changes.items():
            if key == "vq_config":
                config["vq_config"].update(value)
            else:
                config[key] = value
        _replace(folder / "config.json").write_text(json.dumps(config))

    return edit


def _write(name: str, data: bytes | Callable[[bytes], bytes]) -> Edit:
    def edit(folder: Path) -> None:
        original = (demo_model_dir() / name).read_bytes()
        _replace(folder / name).write_bytes(data(original) if callable(data) else data)

    return edit


def _weights(change: Callable[[dict[str, Any]], dict[str, Any]]) -> Edit:
    def edit(folder: Path) -> None:
        weights = change(load_file(demo_model_dir() / "model.safetensors"))
        save_file(weights, _replace(folder / "model.safetensors"), metadata={"format": "pt"})

    return edit


def _sharded(folder: Path) -> None:
    index = {
        "weight_map": {
            "model.embed_tokens.weight": "model-00001-of-00002.safetensors",
            "lm_head.weight": "model-00002-of-00002.safetensors",
        }
    }
    (folder / WEIGHTS_INDEX).write_text(json.dumps(index))


CRAFTED: dict[str, tuple[Edit, str]] = {
    "100000 layers": (_config(num_hidden_layers=100_000), "num_hidden_layers must be an integer from 1 to 512"),
    "negative hidden size": (_config(hidden_size=-256), "hidden_size must be an integer from 1 to 65536, not -256"),
    "negative vocabulary": (_config(vocab_size=-5), "vocab_size must be an integer"),
    "negative MLP size": (_config(intermediate_size=-1), "intermediate_size must be an integer"),
    "zero heads": (_config(num_attention_heads=0), "num_attention_heads must be an integer from 1"),
    "zero key-value heads": (_config(num_key_value_heads=0), "num_key_value_heads must be an integer from 1"),
    "heads that do not divide": (_config(num_attention_heads=3), "must split into 3 heads"),
    "size as a string": (_config(hidden_size="256"), "hidden_size must be an integer from 1 to 65536, not '256'"),
    "vocabulary smaller than its ids": (_config(vocab_size=100), "id(s) outside the vocabulary of 100"),
    "negative codebook": (_config(vq_config={"num_embeddings": -1}), "vq_config.num_embeddings must be an integer"),
    "not a Chameleon": (_config(model_type="llama"), "holds a 'llama' model"),
    "config not JSON": (_write("config.json", b'{"vocab_size": 13'), "config.json is not readable JSON"),
    "corrupt tokenizer.json": (_write("tokenizer.json", b"{not json"), "tokenizer.json is not a usable tokenizer"),
    "truncated tokenizer.json": (_write("tokenizer.json", lambda b: b[: len(b) // 2]), "is not a usable tokenizer"),
    "corrupt tokenizer_config.json": (
        _write("tokenizer_config.json", b"\xff\xfe"),
        "tokenizer_config.json is not readable JSON",
    ),
    "truncated weights": (
        _write("model.safetensors", lambda b: b[: len(b) // 2]),
        "model.safetensors is not a readable safetensors file, probably truncated",
    ),
    "weights of zeros": (_write("model.safetensors", bytes(64)), "model.safetensors is not a readable safetensors"),
    "truncated VQGAN decoder": (
        _write("vqgan_decoder.safetensors", lambda b: b[:5000]),
        "vqgan_decoder.safetensors is not a readable safetensors file",
    ),
    "weights lacking a layer": (
        _weights(lambda w: {k: v for k, v in w.items() if ".layers.3." not in k}),
        "do not match its config.json: 13 of 122 tensors are missing",
    ),
    "weights of another shape": (_config(intermediate_size=512), "have another shape (e.g. model.layers.0.mlp"),
    "index naming absent shards": (_sharded, "lacks 2 of the 2 weight shards its index names"),
}


def _crafted(tmp_path: Path, edit: Edit) -> Path:
    """The demo model's files linked into a folder (without the demo marker), then one of them replaced."""
    folder = tmp_path / "crafted"
    folder.mkdir()
    for file in demo_model_dir().iterdir():
        if file.name != DEMO_MARKER:
            (folder / file.name).symlink_to(file)
    edit(folder)
    return folder


def _fails_in_one_line(argv: list[str], capfd: pytest.CaptureFixture[str]) -> str:
    started = time.monotonic()
    assert main(argv) == 2
    assert time.monotonic() - started < 10
    out, err = capfd.readouterr()
    assert out == "" and len(err.splitlines()) == 1, err
    assert err.startswith("familiar: error: ")
    return err


@pytest.mark.parametrize("case", CRAFTED)
def test_a_crafted_model_folder_fails_in_one_line(case: str, tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    edit, reason = CRAFTED[case]
    folder = _crafted(tmp_path, edit)
    err = _fails_in_one_line(
        ["generate", "x", "--model", str(folder), "-o", str(tmp_path / "x.png"), "--device", "cpu"], capfd
    )
    assert reason in err


def test_the_untouched_copy_passes_the_checks(tmp_path: Path) -> None:
    folder = _crafted(tmp_path, lambda _folder: None)
    check_model_dir(folder)
    check_model_files(folder, read_config(folder))


def test_a_message_over_several_lines_is_printed_on_one(
    monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    def fail(_args: Any) -> None:
        raise ModelNotFoundError("cannot load the weights in /m: Error(s) in loading:\n\tsize mismatch\n")

    monkeypatch.setattr(chat, "run_generate", fail)
    err = _fails_in_one_line(["generate", "x", "-o", "x.png"], capfd)
    assert err == "familiar: error: cannot load the weights in /m: Error(s) in loading: size mismatch\n"


@pytest.mark.parametrize(
    ("folders", "reason"),
    [
        ((), "model 'models/no-such-model' is neither a folder here (looked for "),
        (("models",), "model folder models/no-such-model does not exist (looked for "),
    ],
)
def test_a_mistyped_model_path_fails_without_the_network(
    folders: tuple[str, ...], reason: str, no_hub: list[Any], tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    for name in folders:
        (tmp_path / name).mkdir()
    err = _fails_in_one_line(["generate", "x", "--model", "models/no-such-model", "-o", "x.png"], capfd)
    assert reason + str(tmp_path / "models" / "no-such-model") in err
    assert no_hub == []


def test_the_real_exit_status_and_output(tmp_path: Path) -> None:
    folder = _crafted(tmp_path, CRAFTED["100000 layers"][0])
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("HF_HUB_OFFLINE", None)
    started = time.monotonic()
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "desktop.cli.main",
            "generate",
            "x",
            "--model",
            str(folder),
            "-o",
            str(tmp_path / "x.png"),
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.splitlines() == [
        f"familiar: error: {folder / 'config.json'} is not a usable Chameleon config: num_hidden_layers must be "
        "an integer from 1 to 512, not 100000"
    ]
    assert time.monotonic() - started < 60
