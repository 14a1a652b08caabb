"""The chat view on the demo model: `<` offers concept names, a question with a photo streams its answer
piece by piece, a drawing appears inline (save, copy) and in the gallery, and Auto follows the model's own
choice between answering and drawing."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QApplication

from desktop.app.chat_view import NO_ANSWER, ChatView, ImageBubble, TextBubble
from engine.inference import assistant as assistant_module
from engine.inference.assistant import SHOWN_SIZE, Assistant
from engine.model.loading import TRAINED_DEMO

WAIT_MS = 90_000


def _give_tokens(window, qtbot, name: str) -> None:
    """Store starting rows for `name` as a trained version, made on the window's own model thread."""

    def job(library, assistant, _attached, _report):
        state = assistant.slots.initial_state(name, assistant.loaded.tokenizer, "dog")
        return library.tokens.add(name, state.to_bytes(), kind="trained").id

    with qtbot.waitSignal(window.engine.runner.idle, timeout=WAIT_MS):
        window.engine.submit(job, done=lambda _id: None, failed=pytest.fail)
    window.refresh()


def _bubbles(chat: ChatView, kind: type) -> list:
    return chat.transcript_host.findChildren(kind)


def _ask(chat: ChatView, qtbot, text: str, mode: str) -> None:
    chat.mode.setCurrentIndex(chat.mode.findData(mode))
    chat.edit.setText(text)
    with qtbot.waitSignal(chat.engine.runner.idle, timeout=WAIT_MS):
        qtbot.keyClick(chat.edit, Qt.Key.Key_Return)
    assert not chat.busy


@pytest.fixture()
def chat_window(open_window, qtbot, dreambooth: Path):
    window = open_window()
    window.library.concepts.add("bo", sorted((dreambooth / "dog").glob("*.jpg"))[:3], kind="pet")
    window.library.concepts.add("mimi", sorted((dreambooth / "cat").glob("*.jpg"))[:3], kind="pet")
    _give_tokens(window, qtbot, "bo")
    window.show_page("Chat")
    return window


def test_typing_a_bracket_offers_trained_concepts(chat_window, qtbot) -> None:
    edit = chat_window.chat_view.edit
    assert edit.names.stringList() == ["bo"]  # mimi has no learned tokens yet
    qtbot.keyClicks(edit, "What is <b")
    popup = edit.completer.popup()
    assert popup.isVisible() and edit.completer.currentCompletion() == "bo"
    qtbot.keyClick(popup, Qt.Key.Key_Return)
    assert edit.text() == "What is <bo> " and not popup.isVisible()
    qtbot.keyClicks(edit, "doing? <z")
    assert not popup.isVisible()


def test_question_with_a_photo_streams_its_answer(chat_window, qtbot, dreambooth: Path, monkeypatch) -> None:
    chat = chat_window.chat_view
    pieces: list[str] = []
    append = TextBubble.append
    monkeypatch.setattr(TextBubble, "append", lambda self, piece: (pieces.append(piece), append(self, piece)))
    # The chat samples with a fresh seed, and a sampled answer may be one token long; without a stop token
    # the answer is always eight tokens, so it must arrive in several pieces.
    sample = assistant_module.stream_text_tokens
    monkeypatch.setattr(
        assistant_module,
        "stream_text_tokens",
        lambda model, prompt, blocked, _stops, _most, *rest: sample(model, prompt, blocked, [], 8, *rest),
    )
    assert chat.attach_photo(dreambooth / "dog" / "04.jpg") and chat.attachment.isVisibleTo(chat)
    _ask(chat, qtbot, "What is <bo> doing in this photo?", "answer")
    assert not chat.attachment.isVisibleTo(chat)
    question, answer = _bubbles(chat, TextBubble)
    assert question.label.text() == "What is <bo> doing in this photo?" and question.findChildren(type(question.label))
    assert len(pieces) > 1 and answer.label.text() == "".join(pieces)
    assert chat_window.engine._attached == {"bo": chat_window.library.concepts.get("bo").active.id}


def test_an_answer_with_no_words_says_so(chat_window, qtbot, monkeypatch) -> None:
    """A model that ends its reply at once leaves a note in the transcript, not an empty bubble."""
    chat = chat_window.chat_view
    monkeypatch.setattr(Assistant, "chat", lambda *args, **kwargs: iter([" "]))
    _ask(chat, qtbot, "Is <bo> on grass?", "answer")
    assert [bubble.label.text() for bubble in _bubbles(chat, TextBubble)] == ["Is <bo> on grass?", NO_ANSWER]
    kept = chat_window.library.conversations.messages(chat.conversation)
    assert [message.text for message in kept] == ["Is <bo> on grass?", NO_ANSWER]


def test_drawing_appears_inline_and_in_the_gallery(chat_window, qtbot, tmp_path: Path) -> None:
    chat = chat_window.chat_view
    _ask(chat, qtbot, "<bo> at the beach", "draw")
    (bubble,) = _bubbles(chat, ImageBubble)
    stored = chat_window.library.gallery.list("bo")
    assert [image.id for image in stored] == [bubble.image.id]
    assert stored[0].version_ids == (chat_window.library.concepts.get("bo").active.id,)
    assert chat_window.gallery_view.grid.count() == 1 and chat_window.gallery_view.current().id == stored[0].id

    bubble.save_to(tmp_path / "beach.png")
    saved = Image.open(tmp_path / "beach.png")
    assert saved.size == (SHOWN_SIZE, SHOWN_SIZE) and saved.text["familiar:prompt"] == "<bo> at the beach"
    assert saved.text["familiar:warning"] == f"made by the {TRAINED_DEMO.warning}"
    assert chat_window.gallery_view.details.text().endswith(f"Made by the {TRAINED_DEMO.warning}.")
    bubble.copy()
    assert QApplication.clipboard().image().size().width() == SHOWN_SIZE


def test_auto_mode_follows_the_models_choice(chat_window, qtbot, monkeypatch) -> None:
    chat = chat_window.chat_view
    choices: list[bool] = []
    wants_image = Assistant.wants_image
    monkeypatch.setattr(Assistant, "wants_image", lambda self, *a: choices.append(wants_image(self, *a)) or choices[-1])
    for question in ("Tell me about <bo>", "A photo of <bo> on a sofa", "<bo> in the snow"):
        _ask(chat, qtbot, question, "auto")
    images, texts = _bubbles(chat, ImageBubble), _bubbles(chat, TextBubble)
    assert len(choices) == 3
    assert len(images) == sum(choices) and len(texts) == 3 + (3 - sum(choices))


def test_mentions_that_cannot_be_used_are_explained(chat_window, qtbot) -> None:
    chat = chat_window.chat_view
    _ask(chat, qtbot, "Is <mimi> here?", "answer")
    _ask(chat, qtbot, "Is <zed> here?", "answer")
    replies = [b.label.text() for b in _bubbles(chat, TextBubble)][1::2]
    assert "<mimi> is not trained yet" in replies[0]
    assert "no concept named 'zed'" in replies[1]


def test_conversations_are_kept_reopened_renamed_and_deleted(chat_window, open_window, qtbot, dreambooth: Path) -> None:
    from PySide6.QtWidgets import QLineEdit, QMessageBox

    chat = chat_window.chat_view
    assert chat.conversations.count() == 0
    chat.attach_photo(dreambooth / "dog" / "04.jpg")
    _ask(chat, qtbot, "What is <bo> doing?", "answer")
    _ask(chat, qtbot, "<bo> at the beach", "draw")
    (drawn,) = _bubbles(chat, ImageBubble)
    answer = _bubbles(chat, TextBubble)[1].label.text()
    chat.new_conversation()
    assert _bubbles(chat, TextBubble) == [] and chat.conversation is None
    _ask(chat, qtbot, "hello", "answer")
    assert [chat.conversations.item(i).text() for i in range(2)] == ["hello", "What is <bo> doing?"]
    chat_window.close()
    qtbot.waitUntil(lambda: not chat_window.isVisible(), timeout=WAIT_MS)

    window = open_window()  # a new window on the same library: the conversations are still there
    window.show_page("Chat")
    again = window.chat_view
    assert [again.conversations.item(i).text() for i in range(2)] == ["hello", "What is <bo> doing?"]
    kept = again.conversations.item(1)
    qtbot.mouseClick(
        again.conversations.viewport(), Qt.MouseButton.LeftButton, pos=again.conversations.visualItemRect(kept).center()
    )
    texts = [b.label.text() for b in _bubbles(again, TextBubble)]
    assert texts == ["What is <bo> doing?", answer, "<bo> at the beach"]
    assert [b.image.id for b in _bubbles(again, ImageBubble)] == [drawn.image.id]
    question = _bubbles(again, TextBubble)[0]
    assert len(question.findChildren(type(question.label))) == 2  # the question and the photo it asked about

    qtbot.keyClick(again.conversations, Qt.Key.Key_F2)
    editor = again.conversations.findChild(QLineEdit)
    qtbot.waitUntil(lambda: editor is not None and editor.isVisible(), timeout=5000)
    editor.selectAll()
    qtbot.keyClicks(editor, "Bo at the beach")
    qtbot.keyClick(editor, Qt.Key.Key_Return)  # the list commits the edit on its next event loop pass

    def titles() -> list[str]:
        return [c.title for c in again.library.conversations.list()]

    qtbot.waitUntil(lambda: "Bo at the beach" in titles(), timeout=5000)
    assert "What is <bo> doing?" not in titles()
    assert again.conversations.currentItem().text() == "Bo at the beach"

    qtbot.keyClick(again.conversations, Qt.Key.Key_Delete)
    dialog = again.dialog
    assert isinstance(dialog, QMessageBox) and "Bo at the beach" in dialog.text()
    (delete,) = [b for b in dialog.buttons() if b.text() == "Delete"]
    delete.click()
    assert [c.title for c in again.library.conversations.list()] == ["hello"]
    assert again.conversation is None and _bubbles(again, ImageBubble) == []
    assert [image.id for image in again.library.gallery.list()] == [drawn.image.id]  # the gallery keeps it


def test_auto_mode_draws_a_request_to_draw(chat_window, qtbot, monkeypatch) -> None:
    chat = chat_window.chat_view
    asked: list[str] = []
    wants_image = Assistant.wants_image
    monkeypatch.setattr(
        Assistant, "wants_image", lambda self, text, *a: asked.append(text) or wants_image(self, text, *a)
    )
    _ask(chat, qtbot, "Draw <bo> at the beach", "auto")
    (bubble,) = _bubbles(chat, ImageBubble)
    assert asked == []  # a request to draw is drawn without asking the model
    assert chat_window.library.gallery.list("bo")[0].prompt == "A photo of <bo> at the beach."
    assert bubble.image.prompt == "A photo of <bo> at the beach."
