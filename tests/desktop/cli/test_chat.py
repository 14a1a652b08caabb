"""`familiar chat` / `familiar generate` on the demo model, and their refusals."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from desktop import __version__
from desktop.cli.answer import NO_ANSWER
from desktop.cli.main import main
from engine.inference.assistant import SHOWN_SIZE, Assistant
from engine.model import loading
from engine.model.loading import TRAINED_DEMO, demo_model_dir, load_model


def test_generate_writes_a_png_that_says_it_is_from_the_demo(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "bo.png"
    prompt = "A photo of a small blue dotted square on sand, in the centre."
    assert main(["generate", prompt, "-o", str(out), "--seed", "5", "--device", "cpu"]) == 0
    captured = capsys.readouterr()
    assert f"note: {TRAINED_DEMO.warning} (pass --model FOLDER" in captured.err
    assert "seed 5" in captured.out
    with Image.open(out) as image:
        assert image.size == (SHOWN_SIZE, SHOWN_SIZE)  # 32x32 scaled up, with the label bar
        assert image.text["familiar:seed"] == "5" and image.text["familiar:prompt"] == prompt
        assert image.text["familiar:warning"] == f"made by the {TRAINED_DEMO.warning}"
        assert np.asarray(image.convert("RGB")).std() > 1


def test_chat_about_a_photo_with_a_concept_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], dreambooth: Path
) -> None:
    loaded = load_model("demo", device="cpu")
    state = Assistant(loaded).slots.initial_state("bo", loaded.tokenizer, "dog")
    state.save(tmp_path / "bo.safetensors")
    args = ["chat", "What is <bo> doing?", "--image", str(dreambooth / "dog" / "00.jpg")]
    args += ["--concept-file", str(tmp_path / "bo.safetensors"), "--seed", "1", "--max-tokens", "8"]
    assert main(args) == 0
    captured = capsys.readouterr()
    assert captured.out.strip()
    assert TRAINED_DEMO.warning in captured.err
    assert NO_ANSWER not in captured.err


def test_an_answer_with_no_words_is_said_to_be_empty(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The model may end its reply at once; the user is told so rather than shown a bare empty line."""
    monkeypatch.setattr(Assistant, "chat", lambda *args, **kwargs: iter(["", " "]))
    assert main(["chat", "What is in the picture?", "--no-server"]) == 0
    captured = capsys.readouterr()
    assert captured.out.strip() == ""
    assert NO_ANSWER in captured.err


def test_unknown_concept_is_a_clear_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["chat", "Where is <nobody>?", "--max-tokens", "4"]) == 2
    assert "no concept named 'nobody'" in capsys.readouterr().err


def test_foreign_concept_file_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    loaded = load_model("demo", device="cpu")
    state = Assistant(loaded).slots.initial_state("bo", loaded.tokenizer)
    state.base_fingerprint = "0" * 64
    state.save(tmp_path / "foreign.safetensors")
    assert main(["chat", "hi", "--concept-file", str(tmp_path / "foreign.safetensors")]) == 2
    assert "another base model" in capsys.readouterr().err


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    familiar = Path(sys.executable).with_name("familiar")
    return subprocess.run([str(familiar), *args], capture_output=True, text=True, timeout=120)


def test_version() -> None:
    result = _run("--version")
    assert result.returncode == 0 and result.stdout.strip() == f"familiar {__version__}"


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        ("unreadable image", "not an image"),
        ("missing model", "does not exist"),
        ("no vqgan", "tokenizer/vqgan.ckpt"),
    ],
)
def test_bad_input_exits_non_zero_without_traceback(tmp_path: Path, make: str, expected: str) -> None:
    args = ["chat", "hello", "--device", "cpu"]
    if make == "unreadable image":
        fake = tmp_path / "photo.jpg"
        fake.write_text("this is text, not a JPEG")
        args += ["--image", str(fake)]
    elif make == "missing model":
        args += ["--model", str(tmp_path / "missing")]
    else:
        folder = tmp_path / "anole"
        shutil.copytree(demo_model_dir(), folder)
        (folder / "vqgan_decoder.safetensors").unlink()
        args += ["--model", str(folder)]
    result = _run(*args)
    assert result.returncode == 2
    assert expected in result.stderr
    assert "Traceback" not in result.stderr


def test_pictures_drawn_from_the_cli_go_to_the_gallery_unless_told_not_to(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from store.library import Library

    data = ["--data-dir", str(tmp_path / "lib")]
    prompt = "A photo of a small blue dotted square on sand, in the centre."
    out = tmp_path / "a.png"
    assert main([*data, "generate", prompt, "-o", str(out), "--seed", "5", "--device", "cpu"]) == 0
    assert main([*data, "generate", prompt, "-o", str(tmp_path / "b.png"), "--no-gallery", "--device", "cpu"]) == 0
    monkeypatch.setattr(Assistant, "wants_image", lambda *_args: True)  # --auto: the model chose to draw
    auto = tmp_path / "c.png"
    assert main([*data, "chat", "A red circle", "--auto", "-o", str(auto), "--seed", "2", "--device", "cpu"]) == 0
    capsys.readouterr()
    with Library.open(tmp_path / "lib") as library:
        kept = library.gallery.list()
    with Image.open(auto) as drawn:
        auto_prompt = drawn.text["familiar:prompt"]
    assert [(image.prompt, image.seed, image.params["via"]) for image in kept] == [
        (auto_prompt, 2, "familiar chat"),
        (prompt, 5, "familiar generate"),
    ]
    assert kept[1].path.read_bytes() == out.read_bytes() and kept[0].path.read_bytes() == auto.read_bytes()


@pytest.mark.parametrize(("name", "fmt"), [("bo.jpg", "JPEG"), ("bo.JPEG", "JPEG"), ("bo.webp", "WEBP")])
def test_generate_writes_the_format_its_name_asks_for(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str, fmt: str
) -> None:
    out = tmp_path / name
    prompt = "A photo of a small blue dotted square on sand."
    assert main(["generate", prompt, "-o", str(out), "--seed", "3", "--device", "cpu"]) == 0
    assert "seed 3" in capsys.readouterr().out
    with Image.open(out) as image:
        assert image.format == fmt and image.size == (SHOWN_SIZE, SHOWN_SIZE)
        about = json.loads(image.getexif()[0x010E])
    assert about["familiar:prompt"] == prompt and about["familiar:seed"] == "3"
    assert about["familiar:warning"] == f"made by the {TRAINED_DEMO.warning}"


@pytest.fixture
def no_model_loading(monkeypatch: pytest.MonkeyPatch) -> None:
    """Loading a model fails the test: what is checked here must be checked before the model loads."""

    def refuse(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("the model was loaded before the check")

    monkeypatch.setattr(loading, "load_model", refuse)


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["generate", "a cat", "-o", "{tmp}/cat.gif"], "the name must end in .png, .jpg, .jpeg, .webp"),
        (["generate", "a cat", "-o", "{tmp}/missing/cat.png"], "the folder {tmp}/missing does not exist"),
        (["generate", "<nobody> at sea", "-o", "{tmp}/cat.png"], "no concept named 'nobody'"),
        (["chat", "Draw a cat", "--auto", "-o", "{tmp}/cat.bmp"], "the name must end in .png"),
        (["chat", "What is this?", "--image", "{tmp}/missing.jpg"], "missing.jpg does not exist"),
        (["chat", "Where is <nobody>?"], "no concept named 'nobody'"),
        (["chat", "Hi", "--concept", "nobody"], "no concept named 'nobody'"),
        (["chat", "Hi", "--concept-file", "{tmp}/missing.safetensors"], "cannot read concept state"),
    ],
)
def test_checks_that_need_no_model_come_before_it_loads(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], no_model_loading: None, argv: list[str], expected: str
) -> None:
    assert main([arg.format(tmp=tmp_path) for arg in argv]) == 2
    assert expected.format(tmp=tmp_path) in capsys.readouterr().err


def test_auto_draws_a_request_to_draw(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    loaded = load_model("demo", device="cpu")
    Assistant(loaded).slots.initial_state("bo", loaded.tokenizer, "dog").save(tmp_path / "bo.safetensors")
    out = tmp_path / "beach.jpg"
    args = ["chat", "Draw <bo> at the beach", "--auto", "-o", str(out), "--seed", "2", "--device", "cpu"]
    assert main([*args, "--concept-file", str(tmp_path / "bo.safetensors")]) == 0
    assert f"saved {out} (seed 2)" in capsys.readouterr().out
    with Image.open(out) as image:
        assert image.format == "JPEG"
        assert json.loads(image.getexif()[0x010E])["familiar:prompt"] == "A photo of <bo> at the beach."
