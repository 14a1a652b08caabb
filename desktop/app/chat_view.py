"""The chat: questions with `<concept>` mentions and an optional photo; answers stream in piece by piece;
pictures appear inline (save, copy) and in the gallery. In Auto mode the model itself chooses between
answering and drawing (`Assistant.wants_image`).

Conversations are kept in the library (`store.conversations`): the first question starts one, named after it; the
list beside the transcript reopens one, renames it (F2 or double-click) and deletes it (Delete, after asking).
Each turn is answered on its own, as before: a reopened conversation shows what was said, and the model does not
read the earlier turns."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import TYPE_CHECKING

from PySide6.QtCore import QEvent, QObject, Qt, Signal
from PySide6.QtGui import QDragEnterEvent, QDropEvent, QGuiApplication, QImage, QKeyEvent
from PySide6.QtWidgets import (
    QComboBox,
    QFileDialog,
    QFrame,
    QHBoxLayout,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QMessageBox,
    QProgressBar,
    QPushButton,
    QScrollArea,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from desktop.app.engine_host import EngineHost
from desktop.app.mentions import MentionEdit
from desktop.app.tasks import Report
from desktop.app.widgets import fitted_pixmap, heading, square_pixmap
from engine.progress import Progress
from store.conversations import title_from
from store.errors import StoreError
from store.library import Library
from store.models import GeneratedImage as StoredImage
from store.models import Message

if TYPE_CHECKING:
    from desktop.services.conversation import Reply
    from engine.inference.assistant import Assistant

NO_ANSWER = "(no answer: the model ended its reply at once; try asking another way)"
MODES = {"auto": "Auto: the model decides", "answer": "Answer in words", "draw": "Draw a picture"}
LIST_WIDTH = 160
PICTURE_GONE = "(this picture was deleted from the gallery)"
IMAGE_SIDE = 320
PHOTO_SIDE = 120
DRAW_REPORT_EVERY = 32


class TextBubble(QFrame):
    """One message; the assistant's grows as pieces arrive."""

    def __init__(self, text: str, mine: bool) -> None:
        super().__init__()
        self.setObjectName("bubble")
        colour = "#dbe8ff" if mine else "#f1f1f1"
        self.setStyleSheet(f"#bubble {{ background: {colour}; border-radius: 8px; }}")
        self.layout_ = QVBoxLayout(self)
        self.label = QLabel(text)
        self.label.setTextFormat(Qt.TextFormat.PlainText)
        self.label.setWordWrap(True)
        self.label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.layout_.addWidget(self.label)

    def append(self, piece: str) -> None:
        self.label.setText(self.label.text() + piece)


class ImageBubble(QFrame):
    """A generated picture with its prompt and seed, and Save / Copy buttons."""

    def __init__(self, image: StoredImage) -> None:
        super().__init__()
        self.image = image
        self.setObjectName("bubble")
        self.setStyleSheet("#bubble { background: #f1f1f1; border-radius: 8px; }")
        layout = QVBoxLayout(self)
        picture = QLabel()
        picture.setPixmap(fitted_pixmap(image.path, IMAGE_SIDE))
        picture.setToolTip(image.prompt)
        layout.addWidget(picture)
        caption = QLabel(f"seed {image.seed} \u00b7 kept in the gallery")
        caption.setStyleSheet("color: #555;")
        layout.addWidget(caption)
        buttons = QHBoxLayout()
        save = QPushButton("Save\u2026")
        save.clicked.connect(self._ask_save)
        copy = QPushButton("Copy")
        copy.clicked.connect(self.copy)
        buttons.addWidget(save)
        buttons.addWidget(copy)
        buttons.addStretch(1)
        layout.addLayout(buttons)

    def save_to(self, target: Path) -> None:
        """Copy the stored PNG (with its prompt, seed and model text chunks)."""
        shutil.copyfile(self.image.path, target)

    def copy(self) -> None:
        QGuiApplication.clipboard().setImage(QImage(str(self.image.path)))

    def _ask_save(self) -> None:
        target, _ = QFileDialog.getSaveFileName(
            self, "Save picture", str(Path.home() / f"familiar-{self.image.seed}.png"), "PNG (*.png)"
        )
        if target:
            self.save_to(Path(target))


class DrawingBubble(QFrame):
    """Shown while a picture is being drawn."""

    def __init__(self) -> None:
        super().__init__()
        layout = QVBoxLayout(self)
        layout.addWidget(QLabel("Drawing\u2026"))
        self.bar = QProgressBar()
        layout.addWidget(self.bar)

    def step(self, update: Progress) -> None:
        self.bar.setRange(0, update.total)
        self.bar.setValue(update.step)


class ChatView(QWidget):
    """The conversation. `image_added` fires when a picture lands in the gallery."""

    image_added = Signal()

    def __init__(self, library: Library, engine: EngineHost) -> None:
        super().__init__()
        self.library = library
        self.engine = engine
        self.photo: Path | None = None
        self.reply: QWidget | None = None
        self.reply_row: QHBoxLayout | None = None
        self.busy = False
        self.conversation: int | None = None
        """The kept conversation the transcript shows (None: a new one starts with the next question)."""
        self.dialog: QMessageBox | None = None
        self.setAcceptDrops(True)
        outer = QHBoxLayout(self)
        side_panel = QWidget()
        side_panel.setFixedWidth(LIST_WIDTH)
        side = QVBoxLayout(side_panel)
        side.setContentsMargins(0, 0, 0, 0)
        side.addWidget(QLabel("Conversations"))
        self.conversations = QListWidget()
        self.conversations.setTextElideMode(Qt.TextElideMode.ElideRight)
        self.conversations.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.conversations.setToolTip("Click to reopen; F2 or double-click renames; Delete removes")
        self.conversations.itemClicked.connect(lambda item: self.open_conversation(item.data(Qt.ItemDataRole.UserRole)))
        self.conversations.itemChanged.connect(self._renamed)
        side.addWidget(self.conversations, 1)
        row = QHBoxLayout()
        self.new_button = QToolButton()
        self.new_button.setText("New")
        self.new_button.setToolTip("Start a new conversation")
        self.new_button.clicked.connect(self.new_conversation)
        self.rename_button = QToolButton()
        self.rename_button.setText("Rename")
        self.rename_button.clicked.connect(self.start_rename)
        self.delete_button = QToolButton()
        self.delete_button.setText("Delete")
        self.delete_button.clicked.connect(self.ask_delete)
        for button in (self.new_button, self.rename_button, self.delete_button):
            row.addWidget(button)
        side.addLayout(row)
        outer.addWidget(side_panel)
        self.conversations.installEventFilter(self)  # Delete asks to delete; F2 and double-click edit (the list's own)
        layout = QVBoxLayout()
        outer.addLayout(layout, 1)
        layout.addWidget(heading("Chat"))
        self.transcript_host = QWidget()
        self.transcript = QVBoxLayout(self.transcript_host)
        self.transcript.addStretch(1)
        self.scroll = QScrollArea()
        self.scroll.setWidgetResizable(True)
        self.scroll.setWidget(self.transcript_host)
        layout.addWidget(self.scroll, 1)
        bar = self.scroll.verticalScrollBar()
        self.follow = True  # keep the newest message in view unless the user scrolled up to read
        bar.valueChanged.connect(lambda value: setattr(self, "follow", value >= bar.maximum() - 4))
        bar.rangeChanged.connect(lambda _low, high: self.follow and bar.setValue(high))

        self.attachment = QFrame()
        row = QHBoxLayout(self.attachment)
        row.setContentsMargins(0, 0, 0, 0)
        self.attachment_image = QLabel()
        self.attachment_name = QLabel()
        remove = QToolButton()
        remove.setText("\u2715")
        remove.setToolTip("Remove the photo")
        remove.clicked.connect(self.clear_photo)
        row.addWidget(self.attachment_image)
        row.addWidget(self.attachment_name)
        row.addWidget(remove)
        row.addStretch(1)
        self.attachment.hide()
        layout.addWidget(self.attachment)

        inputs = QHBoxLayout()
        photo = QPushButton("Photo\u2026")
        photo.setToolTip("Attach a photo to your question (or drop one here)")
        photo.clicked.connect(self._pick_photo)
        inputs.addWidget(photo)
        self.edit = MentionEdit()
        self.edit.setPlaceholderText("Ask about a photo, or describe a picture; type < to mention a concept")
        self.edit.returnPressed.connect(self.send)
        inputs.addWidget(self.edit, 1)
        self.mode = QComboBox()
        for key, label in MODES.items():
            self.mode.addItem(label, key)
        self.mode.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        self.mode.setMinimumContentsLength(12)
        inputs.addWidget(self.mode)
        self.send_button = QPushButton("Send")
        self.send_button.clicked.connect(self.send)
        inputs.addWidget(self.send_button)
        self.stop_button = QPushButton("Stop")
        self.stop_button.setEnabled(False)
        self.stop_button.clicked.connect(self.engine.cancel)
        inputs.addWidget(self.stop_button)
        layout.addLayout(inputs)
        self.refresh()
        self.list_conversations()

    def refresh(self) -> None:
        """Offer the trained concepts' names for `<` mentions."""
        self.edit.set_names([c.name for c in self.library.concepts.list() if c.active is not None])

    def list_conversations(self) -> None:
        """Re-read the kept conversations, the most recently used first, keeping the open one selected."""
        self.conversations.blockSignals(True)
        self.conversations.clear()
        for kept in self.library.conversations.list():
            item = QListWidgetItem(kept.title)
            item.setData(Qt.ItemDataRole.UserRole, kept.id)
            item.setToolTip(f"{kept.message_count} messages, last {kept.updated_at[:16].replace('T', ' ')}")
            item.setFlags(item.flags() | Qt.ItemFlag.ItemIsEditable)
            self.conversations.addItem(item)
            if kept.id == self.conversation:
                self.conversations.setCurrentItem(item)
        self.conversations.blockSignals(False)
        chosen = self.conversations.currentItem() is not None
        self.rename_button.setEnabled(chosen)
        self.delete_button.setEnabled(chosen and not self.busy)

    def new_conversation(self) -> None:
        """An empty transcript; the next question starts a new kept conversation."""
        if self.busy:
            return
        self.conversation = None
        self._clear_transcript()
        self.list_conversations()
        self.edit.setFocus()

    def open_conversation(self, conversation_id: int) -> None:
        """Show a kept conversation's messages; the next question continues it."""
        if self.busy:
            self.list_conversations()
            return
        self.conversation = conversation_id
        self._clear_transcript()
        for message in self.library.conversations.messages(conversation_id):
            self._show_message(message)
        self.list_conversations()

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:
        if (
            watched is self.conversations
            and isinstance(event, QKeyEvent)
            and event.type() == QEvent.Type.KeyPress
            and event.key() == Qt.Key.Key_Delete
            and self.conversations.state() != self.conversations.State.EditingState
        ):
            self.ask_delete()
            return True
        return super().eventFilter(watched, event)

    def start_rename(self) -> None:
        item = self.conversations.currentItem()
        if item is not None:
            self.conversations.editItem(item)

    def _renamed(self, item: QListWidgetItem) -> None:
        conversation_id = item.data(Qt.ItemDataRole.UserRole)
        try:
            self.library.conversations.rename(conversation_id, item.text())
        except StoreError as exc:
            self._note(str(exc))
        self.list_conversations()

    def ask_delete(self) -> None:
        """Ask, then delete the selected conversation for good (its pictures stay in the gallery)."""
        item = self.conversations.currentItem()
        if item is None or self.busy:
            return
        conversation_id = item.data(Qt.ItemDataRole.UserRole)
        question = QMessageBox(
            QMessageBox.Icon.Question,
            "Delete the conversation?",
            f"Delete \u201c{item.text()}\u201d for good? Its pictures stay in the gallery.",
            QMessageBox.StandardButton.Cancel,
            self,
        )
        delete = question.addButton("Delete", QMessageBox.ButtonRole.DestructiveRole)
        question.buttonClicked.connect(lambda button: button is delete and self.delete_conversation(conversation_id))
        question.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        question.finished.connect(lambda _result: self.dialog is question and setattr(self, "dialog", None))
        self.dialog = question
        question.open()

    def delete_conversation(self, conversation_id: int) -> None:
        self.library.conversations.remove(conversation_id)
        if self.conversation == conversation_id:
            self.conversation = None
            self._clear_transcript()
        self.list_conversations()

    def _keep(self, role: str, text: str = "", photo: Path | None = None, image_id: int | None = None) -> None:
        """Add a message to the open conversation (starting one for a first question); a photo that cannot be
        kept is left out with a note."""
        try:
            if self.conversation is None:
                self.conversation = self.library.conversations.create(title_from(text)).id
            try:
                self.library.conversations.add_message(self.conversation, role, text, photo=photo, image_id=image_id)
            except StoreError as exc:
                if photo is None:
                    raise
                self.library.conversations.add_message(self.conversation, role, text)
                self._note(f"The photo was not kept with the conversation: {exc}")
        except StoreError as exc:
            self._note(f"This message was not kept: {exc}")
        self.list_conversations()

    def _show_message(self, message: Message) -> None:
        if message.role == "user":
            self._user_message(message.text, message.photo)
        elif message.image is not None:
            self._add(ImageBubble(message.image))
        else:
            self._add(TextBubble(message.text or PICTURE_GONE, False))

    def _clear_transcript(self) -> None:
        while self.transcript.count() > 1:
            item = self.transcript.takeAt(0)
            if item is None:
                continue
            widgets = [item.widget()] if item.widget() is not None else []
            row = item.layout()
            while row is not None and row.count():
                child = row.takeAt(0)
                if child is not None and child.widget() is not None:
                    widgets.append(child.widget())
            for widget in widgets:
                widget.setParent(None)
                widget.deleteLater()
            if row is not None:
                row.deleteLater()

    def mention(self, name: str) -> None:
        self.edit.setText(f"{self.edit.text()} <{name}> ".lstrip())
        self.edit.setFocus()

    def attach_photo(self, path: Path) -> bool:
        """Attach a photo to the next question; False (with a note in the transcript) if it is unreadable."""
        thumb = square_pixmap(path, 48)
        if thumb.isNull():
            self._note(f"{path.name} is not a photo that can be read")
            return False
        self.photo = path
        self.attachment_image.setPixmap(thumb)
        self.attachment_name.setText(path.name)
        self.attachment.show()
        return True

    def clear_photo(self) -> None:
        self.photo = None
        self.attachment.hide()

    def send(self) -> None:
        """Ask the model: the turn runs on the model's thread; pieces stream back as signals. While a training
        run has the model, the question is refused with a note (it would wait for the whole run)."""
        question = self.edit.text().strip()
        if not question or self.busy:
            return
        busy = self.engine.busy_reason()
        if busy is not None:  # the question stays in the box, to send once the run is over
            self._note(busy)
            return
        photo, mode = self.photo, self.mode.currentData()
        self.follow = True
        self._user_message(question, photo)
        self._keep("user", question, photo)
        self.edit.clear()
        self.clear_photo()
        waiting = "\u2026" if self.engine.state == "ready" else "Waiting for the model to load\u2026"
        self.reply = TextBubble(waiting, False)
        self.reply.setProperty("placeholder", True)
        self.reply_row = self._add(self.reply)
        self._set_busy(True)

        def job(library: Library, assistant: Assistant, attached: dict[str, int], report: Report) -> Reply | None:
            from desktop.services.conversation import take_turn
            from engine.inference.generation import GenerationCancelled

            def drawing(update: Progress) -> None:
                if update.step == 1 or update.step % DRAW_REPORT_EVERY == 0 or update.step == update.total:
                    report(update)

            report(("start", ""))
            try:
                return take_turn(
                    library,
                    assistant,
                    attached,
                    question,
                    photo,
                    mode,
                    on_text=lambda piece: report(("text", piece)),
                    on_drawing=drawing,
                    cancelled=self.engine.cancel_event.is_set,
                )
            except GenerationCancelled:
                return None

        self.engine.submit(job, done=self._answered, failed=self._failed, progress=self._piece)

    def _piece(self, update: tuple[str, str] | Progress) -> None:
        """A chat turn's report: ("start", ""), ("text", piece), or a drawing's progress."""
        if isinstance(update, Progress):
            if not isinstance(self.reply, DrawingBubble):
                self._replace(DrawingBubble())
            assert isinstance(self.reply, DrawingBubble)
            self.reply.step(update)
            return
        kind, text = update
        if kind == "start" and isinstance(self.reply, TextBubble):
            self.reply.label.setText("\u2026")
        elif kind == "text":
            if self.reply is not None and self.reply.property("placeholder"):
                self._replace(TextBubble("", False))
            if isinstance(self.reply, TextBubble):
                self.reply.append(text)

    def _answered(self, reply: Reply | None) -> None:
        if reply is None:
            self._finish_text(" (stopped)")
            if isinstance(self.reply, TextBubble):
                self._keep("assistant", self.reply.label.text())
        elif reply.kind == "image" and reply.image is not None:
            self._replace(ImageBubble(reply.image))
            self._keep("assistant", image_id=reply.image.id)
            self.image_added.emit()
        elif not reply.text.strip():  # the model ended its reply at once
            self._replace(TextBubble(NO_ANSWER, False))
            self._keep("assistant", NO_ANSWER)
        else:
            if self.reply is not None and self.reply.property("placeholder"):
                self._replace(TextBubble(reply.text, False))
            self._keep("assistant", reply.text)
        self._end_turn()

    def _failed(self, message: str) -> None:
        bubble = TextBubble(message, False)
        bubble.setStyleSheet("#bubble { background: #fde8e8; border-radius: 8px; }")
        self._replace(bubble)
        self._end_turn()

    def _end_turn(self) -> None:
        self.reply = self.reply_row = None
        self._set_busy(False)

    def _finish_text(self, suffix: str) -> None:
        if isinstance(self.reply, TextBubble) and not self.reply.property("placeholder"):
            self.reply.append(suffix)
        else:
            self._replace(TextBubble(suffix.strip(), False))

    def _user_message(self, question: str, photo: Path | None) -> None:
        bubble = TextBubble(question, True)
        if photo is not None:
            image = QLabel()
            image.setPixmap(fitted_pixmap(photo, PHOTO_SIDE))
            bubble.layout_.addWidget(image)
        self._add(bubble, mine=True)

    def _note(self, text: str) -> None:
        note = QLabel(text)
        note.setStyleSheet("color: #9b1c1c;")
        self._add(note)

    def _add(self, widget: QWidget, mine: bool = False) -> QHBoxLayout:
        row = QHBoxLayout()
        if mine:
            row.addStretch(1)
        row.addWidget(widget, 4)
        if not mine:
            row.addStretch(1)
        self.transcript.insertLayout(self.transcript.count() - 1, row)
        return row

    def _replace(self, widget: QWidget) -> None:
        """Put `widget` where the pending reply is (a placeholder, a drawing in progress)."""
        if self.reply is None or self.reply_row is None:
            self.reply_row = self._add(widget)
        else:
            self.reply_row.replaceWidget(self.reply, widget)
            self.reply.setParent(None)
            self.reply.deleteLater()
        self.reply = widget

    def _set_busy(self, busy: bool) -> None:
        self.busy = busy
        self.send_button.setEnabled(not busy)
        self.stop_button.setEnabled(busy)
        self.new_button.setEnabled(not busy)
        self.delete_button.setEnabled(not busy and self.conversations.currentItem() is not None)

    def _pick_photo(self) -> None:
        path, _ = QFileDialog.getOpenFileName(
            self, "Attach a photo", str(Path.home()), "Photos (*.jpg *.jpeg *.png *.webp);;All files (*)"
        )
        if path:
            self.attach_photo(Path(path))

    def dragEnterEvent(self, event: QDragEnterEvent) -> None:
        if event.mimeData().hasUrls():
            event.acceptProposedAction()

    def dropEvent(self, event: QDropEvent) -> None:
        local = [Path(url.toLocalFile()) for url in event.mimeData().urls() if url.isLocalFile()]
        if local:
            event.acceptProposedAction()
            self.attach_photo(local[0])
