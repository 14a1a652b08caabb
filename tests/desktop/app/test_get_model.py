"""Settings' "Get a model...": asks the stand-in hub on 127.0.0.1 off the UI thread, shows the size, free space and
licence and downloads nothing on a no; on a yes it downloads with progress, then checks, records and loads the model."""

from __future__ import annotations

from pathlib import Path

import pytest
from PySide6.QtWidgets import QMessageBox

from desktop.app.settings import load_settings
from tests.desktop.hub_server import MODEL_REPO, RELEASE, loopback_only, serve, tiny_model_hub

WAIT_MS = 90_000


def test_get_a_model_asks_then_downloads_and_loads_it(
    open_window, qtbot, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    window = open_window()
    view = window.settings_view
    window.show_page("Settings")
    view.hub_repo.setText(MODEL_REPO)
    view.release_repo = RELEASE
    answers = [QMessageBox.StandardButton.No, QMessageBox.StandardButton.Yes]
    asked: list[str] = []

    def question(_parent: object, _title: str, text: str) -> QMessageBox.StandardButton:
        asked.append(text)
        return answers[len(asked) - 1]

    monkeypatch.setattr(QMessageBox, "question", question)
    folder = tmp_path / "library" / "models" / "tiny-anole-hf"
    with serve(tiny_model_hub()) as hub:
        connected = loopback_only(monkeypatch)
        monkeypatch.setenv("HF_ENDPOINT", hub.url)
        with qtbot.waitSignal(window.work.idle, timeout=WAIT_MS):
            view.get_button.click()
        assert f"Licence: {MODEL_REPO}: apache-2.0" in asked[0] and "Free disk space there:" in asked[0]
        assert view.download_status.text() == "Nothing downloaded." and not folder.exists()

        values: list[int] = []
        view.download_bar.valueChanged.connect(values.append)
        with qtbot.waitSignal(window.engine.ready, timeout=WAIT_MS):
            view.get_button.click()
    assert connected and all(address[0] == "127.0.0.1" for address in connected)
    assert values and values[-1] == view.download_bar.maximum()
    assert view.download_status.text() == f"Downloaded and verified into {folder}."
    assert view.estimate.text().startswith("It fits:") and view.get_button.isEnabled()
    assert load_settings(view.path).model == str(folder)
    assert window.engine.info.source == str(folder) and not window.engine.info.is_demo
