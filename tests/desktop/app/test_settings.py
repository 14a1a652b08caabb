"""Settings: the memory estimate refuses a model that will not fit (and keeps the current one), a model that
fits is saved and loaded; the remote kNN service is off by default and says what it would send; the index
folder is checked and reaches training's options; the demo model's banner says how to set a real one;
the settings file round-trips and survives damage."""

from __future__ import annotations

import json
from pathlib import Path

from desktop.app.settings import AppSettings, load_settings, save_settings
from engine.model.loading import TRAINED_DEMO, demo_model_dir

WAIT_MS = 90_000


def _huge_model(folder: Path) -> Path:
    """A model folder whose config describes far more parameters than any machine here holds."""
    folder.mkdir()
    config = json.loads((demo_model_dir() / "config.json").read_text())
    config.update(hidden_size=16384, intermediate_size=65536, num_hidden_layers=160, num_attention_heads=128)
    config["num_key_value_heads"] = 128
    (folder / "config.json").write_text(json.dumps(config))
    for name in ("tokenizer.json", "model.safetensors", "vqgan_decoder.safetensors"):
        (folder / name).write_bytes(b"{}")
    return folder


def test_a_model_that_will_not_fit_is_refused_and_the_demo_reloads(open_window, qtbot, tmp_path: Path) -> None:
    window = open_window()
    view = window.settings_view
    window.show_page("Settings")
    view.model.setText(str(_huge_model(tmp_path / "huge")))
    with qtbot.waitSignal(window.work.idle, timeout=WAIT_MS):
        view.load_button.click()
    assert view.estimate.text().startswith("This model will not fit: in float32 it needs about")
    assert "Turn on 4-bit and use a CUDA GPU" in view.estimate.text()
    assert window.engine.state == "ready" and not view.path.exists()

    view.model.setText(str(tmp_path / "missing"))
    with qtbot.waitSignal(window.work.idle, timeout=WAIT_MS):
        view.load_button.click()
    assert "is not a folder" in view.estimate.text()

    view.model.setText("demo")
    view.device.setCurrentText("cpu")
    view.four_bit.setChecked(False)
    with qtbot.waitSignal(window.engine.ready, timeout=WAIT_MS):
        view.load_button.click()
    assert view.estimate.text().startswith("It fits: in float32 it needs about")
    saved = load_settings(view.path)
    assert (saved.model, saved.device, saved.four_bit) == ("demo", "cpu", False)
    assert window.demo_banner.isVisible()


def test_remote_knn_is_opt_in_and_the_index_reaches_training(open_window, tmp_path: Path) -> None:
    window = open_window()
    view = window.settings_view
    assert not view.remote.isChecked() and not view.remote_url.isEnabled()
    statements = [label.text() for label in view.findChildren(type(view.saved))]
    assert any("only a numeric embedding of your photos" in s and "never the photos" in s for s in statements)

    view.remote.setChecked(True)
    assert view.remote_url.isEnabled()
    view.remote_url.setText("ftp://example.org")
    view.save()
    assert "http(s) URL" in view.saved.text() and not view.path.exists()
    view.remote_url.setText("https://knn.example.org/knn-service")
    view.index.setText(str(tmp_path / "no-index"))
    view.save()
    assert "does not exist" in view.saved.text() and not view.path.exists()
    (tmp_path / "index").mkdir()
    view.index.setText(str(tmp_path / "index"))
    view.save()
    saved = load_settings(view.path)
    assert saved.remote_knn and saved.remote_knn_url == "https://knn.example.org/knn-service"
    assert saved.index_folder == str(tmp_path / "index") and saved.model == "demo"
    options = window.training.options(saved)
    assert options.index == str(tmp_path / "index") and options.embedder_weights is None
    assert (options.epochs, options.device) == (1, "cpu")  # the test's quick overrides still apply


def test_demo_banner_says_how_to_set_a_real_model(open_window) -> None:
    window = open_window()
    banner = window.demo_banner
    assert banner.isVisible()
    assert banner.label.text().startswith(f"Familiar is running its {TRAINED_DEMO.warning}. ")
    assert "open Settings" in banner.label.text()
    banner.action.emit()
    assert window.stack.currentWidget() is window.settings_view


def test_settings_file_round_trips_and_tolerates_damage(tmp_path: Path) -> None:
    path = tmp_path / "settings.json"
    chosen = AppSettings(model="/models/anole", device="cuda", four_bit=False, remote_knn=True, data_folder="/lib")
    save_settings(path, chosen)
    assert load_settings(path) == chosen
    path.write_text('{"device": "tpu", "four_bit": "yes", "model": "/m"}')
    assert load_settings(path) == AppSettings(model="/m")
    path.write_text("not json")
    assert load_settings(path) == AppSettings()
