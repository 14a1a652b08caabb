"""The concept library as cards: thumbnail, name, kind, state (untrained, instant, trained with scores)."""

from __future__ import annotations

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QFrame,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QScrollArea,
    QSizePolicy,
    QVBoxLayout,
    QWidget,
)

from desktop.app.history import describe_scores, resumable_run
from desktop.app.widgets import FlowLayout, heading, square_pixmap
from store.library import Library
from store.models import Concept

THUMB = 176
STATE_COLOURS = {"untrained": "#8a8a8a", "instant": "#2b6cd4", "trained": "#1e8a3c"}


class ConceptCard(QFrame):
    """One concept: its first photo, name, kind, state badge, scores and actions."""

    train = Signal(str)
    resume = Signal(str)
    chat = Signal(str)

    def __init__(self, concept: Concept, thumbnail: QLabel, interrupted: bool) -> None:
        super().__init__()
        self.concept = concept
        self.setObjectName("card")
        self.setStyleSheet("#card { background: #ffffff; border: 1px solid #d8d8d8; border-radius: 8px; }")
        self.setFixedWidth(THUMB + 24)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(12, 12, 12, 12)
        layout.addWidget(thumbnail, alignment=Qt.AlignmentFlag.AlignHCenter)
        name = QLabel(f"<b>&lt;{concept.name}&gt;</b> <span style='color:#666'>{concept.kind}</span>")
        layout.addWidget(name)
        colour = STATE_COLOURS.get(concept.state, "#8a8a8a")
        self.badge = QLabel(concept.state)
        self.badge.setStyleSheet(f"color: white; background: {colour}; border-radius: 3px; padding: 1px 6px;")
        self.badge.setSizePolicy(QSizePolicy.Policy.Maximum, QSizePolicy.Policy.Fixed)
        photos = QLabel(f"{concept.photo_count} photo{'s' if concept.photo_count != 1 else ''}")
        photos.setStyleSheet("color: #666")
        row = QHBoxLayout()
        row.addWidget(self.badge)
        row.addWidget(photos)
        row.addStretch(1)
        layout.addLayout(row)
        self.scores = QLabel(describe_scores(concept.active.metrics) if concept.active else "")
        self.scores.setWordWrap(True)
        self.scores.setStyleSheet("color: #333; font-size: 11px;")
        self.scores.setVisible(bool(self.scores.text()))
        layout.addWidget(self.scores)
        if interrupted:
            note = QLabel("Training was interrupted")
            note.setStyleSheet("color: #a15c00;")
            layout.addWidget(note)
        buttons = QHBoxLayout()
        action = QPushButton("Resume" if interrupted else ("Retrain" if concept.state == "trained" else "Train"))
        action.clicked.connect(lambda: (self.resume if interrupted else self.train).emit(concept.name))
        talk = QPushButton("Chat")
        talk.setEnabled(concept.active is not None)
        talk.setToolTip("Mention it in the chat" if concept.active else "Train it first")
        talk.clicked.connect(lambda: self.chat.emit(concept.name))
        buttons.addWidget(action)
        buttons.addWidget(talk)
        layout.addLayout(buttons)


class LibraryView(QWidget):
    """All concepts as cards, with an Add button; `refresh` re-reads the library."""

    add = Signal()
    train = Signal(str)
    resume = Signal(str)
    chat = Signal(str)

    def __init__(self, library: Library) -> None:
        super().__init__()
        self.library = library
        self.cards: dict[str, ConceptCard] = {}
        layout = QVBoxLayout(self)
        top = QHBoxLayout()
        top.addWidget(heading("Your concepts"))
        top.addStretch(1)
        add = QPushButton("Add concept\u2026")
        add.setDefault(True)
        add.clicked.connect(self.add.emit)
        top.addWidget(add)
        layout.addLayout(top)
        self.problem = QLabel()
        self.problem.setWordWrap(True)
        self.problem.setTextFormat(Qt.TextFormat.PlainText)
        self.problem.setObjectName("problem")
        self.problem.setStyleSheet("#problem { background: #fde8e8; border: 1px solid #e0a0a0; padding: 6px; }")
        self.problem.hide()
        self.add.connect(self.problem.hide)
        layout.addWidget(self.problem)
        self.empty = QLabel(
            "No concepts yet. Add one from 3-5 photos of your dog, a person or a thing; Familiar learns it as a "
            "few tokens and can then talk about it and draw it."
        )
        self.empty.setWordWrap(True)
        layout.addWidget(self.empty)
        self.grid_host = QWidget()
        self.grid = FlowLayout(self.grid_host)
        scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setFrameShape(QFrame.Shape.NoFrame)
        scroll.setWidget(self.grid_host)
        layout.addWidget(scroll, 1)
        self.refresh()

    def show_problem(self, message: str) -> None:
        """Keep a message above the cards (e.g. why a concept has no instant tokens) until the next Add."""
        self.problem.setText(message)
        self.problem.show()

    def refresh(self) -> None:
        while (item := self.grid.takeAt(0)) is not None:
            if widget := item.widget():
                widget.hide()
                widget.deleteLater()
        self.cards.clear()
        concepts = self.library.concepts.list()
        self.empty.setVisible(not concepts)
        for concept in concepts:
            card = ConceptCard(concept, self._thumbnail(concept), resumable_run(self.library, concept.name) is not None)
            card.train.connect(self.train.emit)
            card.resume.connect(self.resume.emit)
            card.chat.connect(self.chat.emit)
            self.grid.addWidget(card)
            self.cards[concept.name] = card
        self.grid_host.updateGeometry()

    def _thumbnail(self, concept: Concept) -> QLabel:
        label = QLabel()
        label.setFixedSize(THUMB, THUMB)
        label.setAlignment(Qt.AlignmentFlag.AlignCenter)
        label.setStyleSheet("background: #f0f0f0; border-radius: 4px;")
        photos = self.library.concepts.photos(concept.name)
        if photos:
            label.setPixmap(square_pixmap(photos[0].thumbnail, THUMB))
        else:
            label.setText("no photos")
        return label
