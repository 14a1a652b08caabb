"""`familiar eval`: dataset layouts, the report, clear errors, and an end-to-end run on two DreamBooth subjects."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from desktop.cli import evaluate as commands_eval
from desktop.cli.charts import CHART_SIZE
from desktop.cli.main import main
from desktop.services.evaluate import PUBLISHED, read_dataset
from engine.errors import EngineError
from tests.engine.evaluation.test_metrics import tiny_clip, tiny_dino


def _photo(path: Path, colour: tuple[int, int, int]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (64, 64), colour).save(path)


def test_dreambooth_layout_holds_out_the_last_photo(dreambooth: Path) -> None:
    layout, concepts = read_dataset(dreambooth, ("dog", "bear_plushie"))
    assert layout == "dreambooth" and [c.name for c in concepts] == ["dog", "bear_plushie"]
    dog = sorted((dreambooth / "dog").glob("*.jpg"))
    assert concepts[0].train == tuple(dog[:-1]) and concepts[0].test == (dog[-1],)
    assert concepts[0].class_word == "dog" and concepts[1].class_word == "stuffed animal"
    with pytest.raises(EngineError, match="no concept named unicorn"):
        read_dataset(dreambooth, ("dog", "unicorn"))


def test_yollava_layout_and_too_few_concepts(tmp_path: Path) -> None:
    for split in ("train", "test"):
        _photo(tmp_path / split / "bo" / "1.png", (200, 0, 0))
        _photo(tmp_path / split / "mimi" / "1.png", (0, 200, 0))
    layout, concepts = read_dataset(tmp_path)
    assert layout == "yollava" and [c.name for c in concepts] == ["bo", "mimi"]
    assert concepts[0].test == (tmp_path / "test" / "bo" / "1.png",)
    with pytest.raises(EngineError, match="at least 2 concepts"):
        read_dataset(tmp_path, ("bo",))


def _results(tmp_path: Path) -> dict:
    concept = {
        "training": [{"epoch": 1, "loss": 7.0}, {"epoch": 2, "loss": 6.5}],
        "recognition": {"positive": 1.0, "negative": 0.5, "weighted": 0.75, "positives": 1, "negatives": 1},
        "images": [],
        "clip_i": 0.7,
        "qa": 0.5,
    }
    return {
        "concepts": {"bo": concept, "mimi": {**concept, "training": [{"epoch": 1, "loss": 5.0}]}},
        "dataset": str(tmp_path),
        "layout": "dreambooth",
        "model": "demo",
        "demo": True,
        "options": {"train": {"epochs": 2}},
        "skipped": {"dino": "no --dino model folder given"},
        "times_s": {"train": 1.5},
        "published": [{"source": s, "metric": m, "value": v} for s, m, v in PUBLISHED],
        "mean": {"recognition_weighted": 0.75},
        "base_model_untouched": {"passed": True, "max_abs_logit_difference": 0.0},
    }


def test_report_renders_tables_and_charts(tmp_path: Path) -> None:
    commands_eval.write_report(_results(tmp_path), tmp_path)
    for chart in ("recognition.png", "similarity.png", "training.png"):
        with Image.open(tmp_path / chart) as image:
            image.load()
            assert image.size == CHART_SIZE
            assert len(image.getcolors(maxcolors=1 << 16) or []) > 3  # bars or lines were drawn, not a blank canvas
    report = (tmp_path / "report.md").read_text()
    assert "| bo | 1.000 | 0.500 | 0.750 | 1 | 1 |" in report
    assert "| Yo'Chameleon (CVPR 2025), 32 tokens | CLIP-I | 0.783 |" in report
    assert "theirs" in report and commands_eval.DEMO_NOTE in report and "dino not measured" in report
    assert json.loads((tmp_path / "results.json").read_text())["mean"] == {"recognition_weighted": 0.75}


def test_a_missing_model_path_is_a_clear_error_before_training(
    dreambooth: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["eval", str(dreambooth), "--concepts", "dog", "cat", "-o", str(tmp_path), "--dino", "/no/dino"])
    err = capsys.readouterr().err
    assert code == 2 and "DINO model folder /no/dino does not exist" in err
    assert "training" not in err and not (tmp_path / "report.md").exists()


def test_end_to_end_on_two_dreambooth_subjects(
    dreambooth: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Everything runs for real, drawing included (the demo model's pictures are 64 tokens)."""
    qa = tmp_path / "qa.json"
    qa.write_text(
        json.dumps([{"concept": "dog", "question": "What is <dog>?", "options": ["a dog", "a cat"], "answer": 0}])
    )
    out = tmp_path / "report"
    argv = ["eval", str(dreambooth), "--concepts", "dog", "cat", "-o", str(out), "--epochs", "1", "--images", "1"]
    argv += ["--clip", str(tiny_clip(tmp_path / "clip")), "--dino", str(tiny_dino(tmp_path / "dino")), "--qa", str(qa)]
    assert main(argv) == 0
    assert "recognition" in capsys.readouterr().err  # the progress bar
    results = json.loads((out / "results.json").read_text())
    assert results["base_model_untouched"] == {"passed": True, "max_abs_logit_difference": 0.0}
    dog = results["concepts"]["dog"]
    assert dog["recognition"]["positives"] == 1 and dog["recognition"]["negatives"] == 1
    assert (
        0 <= dog["recognition"]["weighted"] <= 1 and dog["qa"] in (0.0, 1.0) and "qa" not in results["concepts"]["cat"]
    )
    assert all(-1 <= dog[k] <= 1 for k in ("clip_i", "clip_t", "dino"))
    assert [p["epoch"] for p in dog["training"]] == [1] and dog["training"][0]["loss"] > 0
    assert set(results["times_s"]) >= {"add", "train", "recognition", "qa", "generation", "metrics"}
    assert results["skipped"] == {}
    with Image.open(out / dog["images"][0]) as picture:  # measured and kept unlabelled, at the model's size
        assert picture.size == (32, 32)
    report = (out / "report.md").read_text()
    assert "## Recognition" in report and "| dog |" in report and "![training](training.png)" in report


def test_a_chart_with_nothing_to_show_is_not_written_and_the_report_says_so(tmp_path: Path) -> None:
    results = _results(tmp_path)
    for concept in results["concepts"].values():
        concept.pop("clip_i")
    commands_eval.write_report(results, tmp_path)
    assert not (tmp_path / "similarity.png").exists() and (tmp_path / "recognition.png").is_file()
    report = (tmp_path / "report.md").read_text()
    assert "(No similarity chart: CLIP-I, CLIP-T and DINO were not measured.)" in report
    assert "![similarity]" not in report and "![recognition](recognition.png)" in report


def test_bars_carry_error_bars_and_value_labels(tmp_path: Path) -> None:
    from desktop.cli.charts import bar_chart, line_chart

    series = {"accuracy": [0.5, 0.8]}
    assert bar_chart(tmp_path / "plain.png", "t", ["a", "b"], series)
    assert bar_chart(tmp_path / "errors.png", "t", ["a", "b"], series, {"accuracy": [0.1, None]})
    with Image.open(tmp_path / "plain.png") as plain, Image.open(tmp_path / "errors.png") as errors:
        above = (0, 0, CHART_SIZE[0], CHART_SIZE[1] // 2)  # the first bar's top (0.5) and its error bar to 0.6
        assert plain.crop(above).tobytes() != errors.crop(above).tobytes()
        assert min(plain.convert("L").crop((60, 60, 400, 200)).tobytes()) < 100  # black labels, such as "0.80"
    assert not bar_chart(tmp_path / "empty.png", "t", ["a"], {"x": [None]})
    assert not line_chart(tmp_path / "empty.png", "t", {"a": []}, "epoch")
    assert not (tmp_path / "empty.png").exists()
