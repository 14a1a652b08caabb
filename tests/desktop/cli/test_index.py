"""`familiar index build|info|search` end to end on the real photos with the demo embedder."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from desktop.cli.main import main


def test_build_info_and_search(dreambooth: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    index = tmp_path / "index"
    subjects = dreambooth / "dog"
    assert main(["index", "build", str(subjects), "-o", str(index), "--embedder", "demo", "--chunk-size", "2"]) == 0
    out, err = capsys.readouterr()
    assert "indexed 5 new images (0 already indexed, 0 unreadable)" in out and "holds 5" in out
    assert "UNTRAINED" in err

    assert main(["index", "build", str(subjects), "-o", str(index), "--embedder", "demo"]) == 0
    assert "indexed 0 new images (5 already indexed" in capsys.readouterr().out

    assert main(["index", "info", str(index)]) == 0
    out = capsys.readouterr().out
    assert "images:    5" in out and "vq tokens: none" in out
    assert "embedder:  demo, dim 64, UNTRAINED random weights" in out

    photo = subjects / "03.jpg"
    assert main(["index", "search", str(index), str(photo), "-k", "3", "--json"]) == 0
    results = json.loads(capsys.readouterr().out)["results"]
    assert [r["rank"] for r in results] == [1, 2, 3]
    assert results[0]["source"] == str(photo.resolve()) and results[0]["similarity"] > 0.999

    assert main(["index", "search", str(index), str(photo), str(subjects / "00.jpg"), "-k", "2"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2 and lines[0].split()[0] == "1"


def test_build_with_vq_tokens_for_the_demo_model(
    dreambooth: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    index = tmp_path / "index"
    argv = ["index", "build", str(dreambooth / "cat"), "-o", str(index), "--embedder", "demo", "--vq"]
    assert main([*argv, "--model", "demo"]) == 0
    capsys.readouterr()
    assert main(["index", "info", str(index)]) == 0
    assert "vq tokens: 64 per image, model demo" in capsys.readouterr().out
    tokens = np.load(index / "vq_tokens.npy", allow_pickle=False)
    assert tokens.shape == (5, 64) and tokens.dtype == np.int32


def test_build_with_the_demo_model_uses_the_demo_embedder(
    dreambooth: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    index = tmp_path / "index"
    assert main(["index", "build", str(dreambooth / "cat"), "--model", "demo", "-o", str(index)]) == 0
    out, err = capsys.readouterr()
    assert "indexed 5 new images" in out and "UNTRAINED" in err
    assert main(["index", "info", str(index)]) == 0
    info = capsys.readouterr().out
    assert "embedder:  demo, dim 64" in info and "vq tokens: none" in info


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["index", "build", "{photos}", "-o", "{tmp}/i"], "ViT-L-14 embedder needs its weights file"),
        (["index", "build", "{tmp}/missing", "-o", "{tmp}/i", "--embedder", "demo"], "is not a folder"),
        (["index", "info", "{tmp}"], "is not an embedding index"),
        (["index", "search", "{tmp}", "{photos}/00.jpg"], "is not an embedding index"),
    ],
)
def test_user_errors_are_one_line(
    dreambooth: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    argv = [a.format(photos=dreambooth / "dog", tmp=tmp_path) for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("familiar: error:") and message in err[0]


def test_searching_with_a_missing_photo_is_an_error(
    dreambooth: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["index", "build", str(dreambooth / "dog"), "-o", str(tmp_path / "i"), "--embedder", "demo"]) == 0
    capsys.readouterr()
    assert main(["index", "search", str(tmp_path / "i"), str(tmp_path / "nope.jpg")]) == 2
    assert "cannot read" in capsys.readouterr().err
