"""Instant concepts from the wizard: "Add instantly" stores the concept and the Aligner's tokens predicted from
its first photo on the model's thread (an "instant" card, usable in the chat); an Aligner made for another base
model leaves the concept untrained with the reason; without an Aligner the button is disabled and says why."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import torch

from desktop.app.wizard import INSTANT_TIP
from engine.aligner.model import demo_aligner_path, instant_state, load_aligner, read_aligner_file, save_aligner
from engine.concepts.state import SLOT_SIZE, ConceptState

WAIT_MS = 90_000


def _fill(wizard, drop_files, qtbot, photos: list[Path], name: str) -> None:
    drop_files(wizard.drop, photos)
    qtbot.waitUntil(lambda: len(wizard.photos) == len(photos) and not wizard.pending, timeout=30_000)
    qtbot.keyClicks(wizard.name, name)


def _on_model_thread(window, qtbot, job):
    """Run `job(library, assistant)` on the window's model thread and return its result."""
    results: list = []
    with qtbot.waitSignal(window.engine.runner.idle, timeout=WAIT_MS):
        window.engine.submit(lambda lib, assistant, _a, _r: job(lib, assistant), results.append, pytest.fail)
    return results[0]


def test_add_instantly_makes_an_instant_concept_from_the_first_photo(
    open_window, drop_files, qtbot, dreambooth: Path
) -> None:
    window = open_window()
    window.library_view.add.emit()
    wizard = window.wizard
    dogs = sorted((dreambooth / "dog").glob("*.jpg"))[:3]
    _fill(wizard, drop_files, qtbot, dogs, "bo")
    assert wizard.add_instant.isEnabled() and wizard.add_instant.toolTip() == INSTANT_TIP

    with qtbot.waitSignal(wizard.created, timeout=WAIT_MS) as created:
        wizard.add_instant.click()
    assert created.args == ["bo", False]
    concept = window.library.concepts.get("bo")
    assert concept.state == "instant" and concept.photo_count == 3
    (version,) = window.library.tokens.versions("bo")
    assert version.kind == "instant" and version.active and version.run_id is None
    card = window.library_view.cards["bo"]
    assert card.badge.text() == "instant" and window.stack.currentWidget() is window.library_view

    def expected(library, assistant) -> tuple[ConceptState, int, str]:
        first = library.concepts.photos("bo")[0].path
        aligner = load_aligner(demo_aligner_path(), assistant.loaded.fingerprint, None, assistant.loaded.device)
        state = instant_state(aligner, first, "bo", assistant.loaded.fingerprint)
        return state, assistant.loaded.config.hidden_size, assistant.loaded.fingerprint

    state, hidden, fingerprint = _on_model_thread(window, qtbot, expected)
    stored = ConceptState.from_bytes(window.library.tokens.read_bytes(version), fingerprint)
    assert stored.embed.shape == stored.head.shape == (SLOT_SIZE, hidden)
    torch.testing.assert_close(stored.embed, state.embed)
    torch.testing.assert_close(stored.head, state.head)

    window.refresh()
    assert window.chat_view.edit.names.stringList() == ["bo"]  # mentionable at once, without training


def test_an_aligner_for_another_model_leaves_the_concept_untrained_and_says_why(
    open_window, drop_files, qtbot, dreambooth: Path, tmp_path: Path
) -> None:
    tensors, metadata = read_aligner_file(demo_aligner_path())
    foreign = tmp_path / "foreign-aligner.safetensors"
    save_aligner(foreign, tensors, {**metadata, "base_fingerprint": "f" * 64})
    window = open_window()
    window.settings_view.settings = replace(window.settings_view.settings, aligner=str(foreign))
    window.library_view.add.emit()
    wizard = window.wizard
    assert wizard.aligner == str(foreign) and wizard.add_instant.toolTip() == INSTANT_TIP
    _fill(wizard, drop_files, qtbot, sorted((dreambooth / "cat").glob("*.jpg"))[:3], "mimi")

    failures = []
    wizard.instant_failed.connect(lambda name, message: failures.append((name, message)))
    with qtbot.waitSignal(wizard.created, timeout=WAIT_MS):
        wizard.add_instant.click()
    ((name, message),) = failures
    assert name == "mimi" and "an Aligner for another base model" in message
    concept = window.library.concepts.get("mimi")
    assert (concept.state, concept.photo_count) == ("untrained", 3)
    assert window.library.tokens.versions("mimi") == []
    problem = window.library_view.problem
    assert problem.isVisible() and "<mimi> was added with its photos" in problem.text()
    assert "another base model" in problem.text()
    assert window.library_view.cards["mimi"].badge.text() == "untrained"


def test_without_an_aligner_the_button_is_disabled_and_says_why(
    open_window, drop_files, qtbot, dreambooth: Path, tmp_path: Path
) -> None:
    window = open_window()
    wizard = window.wizard
    window.library_view.add.emit()
    _fill(wizard, drop_files, qtbot, sorted((dreambooth / "dog").glob("*.jpg"))[:3], "bo")
    assert wizard.add_instant.isEnabled() and wizard.add_only.isEnabled()

    settings = window.settings_view
    settings.settings = replace(settings.settings, aligner=str(tmp_path / "missing.safetensors"))
    window.show_page("Add concept")
    assert not wizard.add_instant.isEnabled() and wizard.add_only.isEnabled()
    assert "missing.safetensors (Settings) does not exist" in wizard.add_instant.toolTip()

    settings.settings = replace(settings.settings, aligner="")
    window.engine.info = replace(window.engine.info, is_demo=False, demo_aligner=None)  # as with a real model
    window.show_page("Add concept")
    assert not wizard.add_instant.isEnabled()
    assert "familiar aligner train" in wizard.add_instant.toolTip()
