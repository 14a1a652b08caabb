"""Training in the app uses the model the app loaded (no second copy) on the model's own thread: chat and
instant concepts are refused while it runs, concept slots are cleaned up afterwards, and chat then loads the
newly trained version."""

from __future__ import annotations

from pathlib import Path

import pytest
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QLabel

import desktop.services.personalize
import engine.model.loading
from desktop.app.tasks import Report
from engine.concepts.state import ConceptState
from store.errors import NotFoundError

WAIT_MS = 90_000


def _ask(window, qtbot, text: str) -> None:
    chat = window.chat_view
    chat.mode.setCurrentIndex(chat.mode.findData("answer"))
    chat.edit.setText(text)
    with qtbot.waitSignal(window.engine.runner.idle, timeout=WAIT_MS):
        qtbot.keyClick(chat.edit, Qt.Key.Key_Return)


def test_training_shares_the_loaded_model_and_refuses_chat_meanwhile(
    open_window, drop_files, qtbot, dreambooth: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    loads: list[str] = []
    real_load = engine.model.loading.load_model

    def counting_load(spec: str = "demo", *args: object, **kwargs: object) -> object:
        loads.append(spec)
        return real_load(spec, *args, **kwargs)

    monkeypatch.setattr(engine.model.loading, "load_model", counting_load)
    slots_after_training: list[list[str]] = []
    real_train = desktop.services.personalize.train_concept

    def observed_train(*args: object, **kwargs: object) -> object:
        try:
            return real_train(*args, **kwargs)
        finally:
            assistant = kwargs["assistant"]
            slots_after_training.append(assistant.slots.names())
            assert not assistant.loaded.model.training

    monkeypatch.setattr(desktop.services.personalize, "train_concept", observed_train)

    window = open_window()
    assert loads == ["demo"]
    window.library_view.add.emit()
    wizard = window.wizard
    drop_files(wizard.drop, sorted((dreambooth / "dog").glob("*.jpg"))[:3])
    qtbot.waitUntil(lambda: len(wizard.photos) == 3 and not wizard.pending, timeout=30_000)
    qtbot.keyClicks(wizard.name, "bo")
    with qtbot.waitSignal(wizard.created, timeout=WAIT_MS):
        wizard.add_instant.click()
    instant = window.library.concepts.get("bo").active
    assert instant is not None and instant.kind == "instant"
    _ask(window, qtbot, "What is <bo> doing?")
    assert window.engine._attached == {"bo": instant.id}  # the chat attached the instant version

    window.library_view.add.emit()  # a second concept, ready to add instantly while <bo> trains
    wizard.add_files(sorted((dreambooth / "cat").glob("*.jpg"))[:3])
    qtbot.waitUntil(lambda: len(wizard.photos) == 3 and not wizard.pending, timeout=30_000)
    qtbot.keyClicks(wizard.name, "mimi")

    ended: list = []  # the finished run, or the failure's message
    window.training.finished.connect(ended.append)
    window.training.failed.connect(ended.append)
    window.train("bo")
    # While the run is queued or running (the GUI thread has not seen it end: no events are processed here)
    assert window.training.running and window.engine.training == "bo"
    chat = window.chat_view
    chat.edit.setText("Is <bo> here?")
    chat.send()  # refused at once: it would wait behind the whole run
    assert chat.edit.text() == "Is <bo> here?" and not chat.busy
    notes = [label.text() for label in chat.transcript_host.findChildren(QLabel)]
    assert any("busy training <bo>" in note and "cancel" in note for note in notes)
    wizard.add_instant.click()
    assert "busy training <bo>" in wizard.error.text()
    qtbot.waitUntil(lambda: bool(ended), timeout=WAIT_MS)
    (run,) = ended
    assert not isinstance(run, str), run
    assert run.status == "done" and loads == ["demo"]  # trained on the app's own model
    assert slots_after_training == [[]]  # the chat's <bo> and the trained slot were both detached
    assert window.engine.training is None and not window.training.running
    with pytest.raises(NotFoundError):
        window.library.concepts.get("mimi")

    qtbot.waitUntil(lambda: not window.engine.runner.busy, timeout=WAIT_MS)  # the training sample
    _ask(window, qtbot, "Is <bo> here?")
    trained = window.library.concepts.get("bo").active
    assert trained.kind == "trained" and trained.run_id == run.id
    assert window.engine._attached["bo"] == trained.id

    def rows(library, assistant, _attached: dict[str, int], _report: Report) -> tuple[ConceptState, ConceptState]:
        stored = ConceptState.from_bytes(library.tokens.read_bytes(trained), assistant.loaded.fingerprint)
        return assistant.slots.state("bo"), stored

    states: list = []
    with qtbot.waitSignal(window.engine.runner.idle, timeout=WAIT_MS):
        window.engine.submit(rows, states.append, pytest.fail)
    loaded, stored = states[0]
    assert (loaded.embed == stored.embed).all() and (loaded.head == stored.head).all()
