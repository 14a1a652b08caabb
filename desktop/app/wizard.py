"""Add a concept: 1 to 200 photos, 3-5 advised, as the CLI takes them (dropped or picked, each checked by the
store as it arrives, refusals explained in place), a name validated as it is typed, a kind (object unless
chosen, as in the CLI) and facts; then add it, add and train, or add it instantly (the Aligner predicts its
tokens from the first photo on the model's thread, no training)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QDragEnterEvent, QDropEvent, QPixmap
from PySide6.QtWidgets import (
    QComboBox,
    QFileDialog,
    QFormLayout,
    QFrame,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPlainTextEdit,
    QPushButton,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from desktop.app.engine_host import EngineHost
from desktop.app.tasks import Report, Runner
from desktop.app.widgets import FlowLayout, heading
from store.errors import InvalidValueError, NotFoundError
from store.library import Library
from store.photos import clean_photo, read_photo_file
from store.validation import (
    ADVISED_PHOTOS,
    DEFAULT_KIND,
    KINDS,
    MAX_PHOTOS_PER_CONCEPT,
    check_facts,
    check_name,
    photo_count_warning,
)

if TYPE_CHECKING:
    from engine.inference.assistant import Assistant
    from store.models import TokenVersion

MIN_PHOTOS, MAX_PHOTOS = 1, MAX_PHOTOS_PER_CONCEPT  # the store's rules, the CLI's too (a warning below 3)
PHOTO_SIDE = 104
FACTS_HINT = "class: dog\nbreed: corgi\ncolour: red and white\nHe loves the beach and chasing gulls."


@dataclass(frozen=True)
class CheckedPhoto:
    """A photo the store's intake accepted: its path, hashes (to spot duplicates) and thumbnail."""

    path: Path
    source_sha256: str
    sha256: str
    thumbnail: bytes


def check_photo(path: Path, _report: Report) -> CheckedPhoto:
    """Run the store's own photo checks (size, type, damage, decompression bombs, pixel limits)."""
    cleaned = clean_photo(read_photo_file(path), path.name)
    return CheckedPhoto(path, cleaned.source_sha256, cleaned.sha256, cleaned.thumbnail)


def reason(message: str, path: Path) -> str:
    """The store's message without the file name it starts with (the row already shows it)."""
    for prefix in (f"{path}: ", f"{path.name}: "):
        if message.startswith(prefix):
            return message[len(prefix) :]
    return message


class PhotoTile(QFrame):
    """An accepted photo's thumbnail with a remove button."""

    removed = Signal(Path)

    def __init__(self, photo: CheckedPhoto) -> None:
        super().__init__()
        self.photo = photo
        layout = QVBoxLayout(self)
        layout.setContentsMargins(2, 2, 2, 2)
        image = QLabel()
        pixmap = QPixmap()
        pixmap.loadFromData(photo.thumbnail)
        image.setPixmap(
            pixmap.scaled(
                PHOTO_SIDE,
                PHOTO_SIDE,
                Qt.AspectRatioMode.KeepAspectRatioByExpanding,
                Qt.TransformationMode.SmoothTransformation,
            ).copy(0, 0, PHOTO_SIDE, PHOTO_SIDE)
        )
        image.setToolTip(str(photo.path))
        layout.addWidget(image)
        row = QHBoxLayout()
        name = QLabel(photo.path.name)
        name.setStyleSheet("font-size: 10px; color: #555;")
        name.setMaximumWidth(PHOTO_SIDE - 26)
        row.addWidget(name, 1)
        remove = QToolButton()
        remove.setText("\u2715")
        remove.setToolTip("Remove this photo")
        remove.clicked.connect(lambda: self.removed.emit(photo.path))
        row.addWidget(remove)
        layout.addLayout(row)


class DropArea(QFrame):
    """Accepts dropped files; `dropped` carries their paths."""

    dropped = Signal(list)

    def __init__(self) -> None:
        super().__init__()
        self.setAcceptDrops(True)
        self.setObjectName("drop")
        self.setStyleSheet("#drop { border: 2px dashed #a0a0a0; border-radius: 8px; background: #fafafa; }")

    def dragEnterEvent(self, event: QDragEnterEvent) -> None:
        if event.mimeData().hasUrls():
            event.acceptProposedAction()

    def dropEvent(self, event: QDropEvent) -> None:
        paths = [Path(url.toLocalFile()) for url in event.mimeData().urls() if url.isLocalFile()]
        if paths:
            event.acceptProposedAction()
            self.dropped.emit(paths)


class PhotoStrip(DropArea):
    """A drop area holding a line of text (`count`) with a button that picks photos, above the photo tiles
    (`tiles`); `box` is its layout, for anything a page adds below."""

    def __init__(self, pick_text: str, pick: Callable[[], None]) -> None:
        super().__init__()
        self.box = QVBoxLayout(self)
        top = QHBoxLayout()
        self.count = QLabel()
        top.addWidget(self.count, 1)
        button = QPushButton(pick_text)
        button.clicked.connect(pick)
        top.addWidget(button)
        self.box.addLayout(top)
        host = QWidget()
        host.setMinimumHeight(PHOTO_SIDE + 40)
        self.tiles = FlowLayout(host, spacing=8)
        self.box.addWidget(host)


INSTANT_TIP = "Add it and let the Aligner predict its tokens from the first photo: usable at once, no training"


class ConceptWizard(QWidget):
    """The add-concept page. `created(name, train)` fires once the concept is in the library (with its instant
    tokens, when added instantly); `instant_failed(name, message)` first, when those could not be made."""

    created = Signal(str, bool)
    instant_failed = Signal(str, str)
    cancelled = Signal()

    def __init__(self, library: Library, runner: Runner, engine: EngineHost) -> None:
        super().__init__()
        self.library = library
        self.runner = runner
        self.engine = engine
        self.aligner: str | None = None
        self.photos: list[CheckedPhoto] = []
        self.refused: list[tuple[Path, str]] = []
        self.pending: set[Path] = set()
        self.checker = Runner(1, self)  # one at a time, so photos arrive in the order they were dropped
        layout = QVBoxLayout(self)
        layout.addWidget(heading("Add a concept"))
        intro = QLabel(
            "Drop 3-5 photos of your concept (or pick them): clear, different views, the concept large in the "
            "frame (1 works, with less to learn from). Each photo is checked as it arrives; photos are stored "
            "without their metadata (GPS, camera)."
        )
        intro.setWordWrap(True)
        layout.addWidget(intro)

        self.drop = PhotoStrip("Choose photos\u2026", self._pick)
        self.drop.dropped.connect(self.add_files)
        self.count, self.tiles = self.drop.count, self.drop.tiles
        self.problems = QLabel()
        self.problems.setWordWrap(True)
        self.problems.setTextFormat(Qt.TextFormat.RichText)
        self.problems.setStyleSheet("color: #9b1c1c;")
        self.drop.box.addWidget(self.problems)
        layout.addWidget(self.drop)

        form = QFormLayout()
        self.name = QLineEdit()
        self.name.setPlaceholderText("e.g. bo")
        self.name.textChanged.connect(self._update)
        self.name_message = QLabel()
        self.name_message.setWordWrap(True)
        name_box = QVBoxLayout()
        name_box.addWidget(self.name)
        name_box.addWidget(self.name_message)
        form.addRow("Name", name_box)
        self.kind = QComboBox()
        self.kind.addItems(KINDS)
        self.kind.setCurrentText(DEFAULT_KIND)
        form.addRow("Kind", self.kind)
        self.facts = QPlainTextEdit()
        self.facts.setPlaceholderText(FACTS_HINT)
        self.facts.setFixedHeight(96)
        form.addRow("Facts", self.facts)
        layout.addLayout(form)

        self.error = QLabel()
        self.error.setWordWrap(True)
        self.error.setStyleSheet("color: #9b1c1c;")
        layout.addWidget(self.error)
        buttons = QHBoxLayout()
        cancel = QPushButton("Cancel")
        cancel.clicked.connect(self._cancel)
        buttons.addWidget(cancel)
        buttons.addStretch(1)
        self.add_instant = QPushButton("Add instantly")
        self.add_instant.clicked.connect(lambda: self._submit(train=False, instant=True))
        buttons.addWidget(self.add_instant)
        self.add_only = QPushButton("Add")
        self.add_only.clicked.connect(lambda: self._submit(train=False))
        buttons.addWidget(self.add_only)
        self.add_train = QPushButton("Add and train")
        self.add_train.setDefault(True)
        self.add_train.clicked.connect(lambda: self._submit(train=True))
        buttons.addWidget(self.add_train)
        layout.addLayout(buttons)
        layout.addStretch(1)
        self._busy = False
        self._update()

    def add_files(self, paths: list[Path]) -> None:
        """Check each file with the store's photo intake in the background; refusals are listed in place."""
        for path in paths:
            path = Path(path)
            if any(p.path == path for p in self.photos) or path in self.pending:
                self._refuse(path, "already added")
            else:
                self.pending.add(path)
                self.checker.submit(
                    lambda report, p=path: check_photo(p, report),
                    done=self._accepted,
                    failed=lambda message, p=path: self._checked_refused(p, message),
                )
        self._update()

    def _accepted(self, photo: CheckedPhoto) -> None:
        self.pending.discard(photo.path)
        twin = next((p for p in self.photos if {p.sha256, p.source_sha256} & {photo.sha256, photo.source_sha256}), None)
        if twin is not None:
            self._refuse(photo.path, f"the same photo as {twin.path.name}")
        elif len(self.photos) >= MAX_PHOTOS:
            self._refuse(photo.path, f"a concept holds at most {MAX_PHOTOS} photos; remove one to add this")
        else:
            self.photos.append(photo)
            tile = PhotoTile(photo)
            tile.removed.connect(self.remove_photo)
            self.tiles.addWidget(tile)
        self._update()

    def _checked_refused(self, path: Path, message: str) -> None:
        self.pending.discard(path)
        self._refuse(path, reason(message, path))
        self._update()

    def _refuse(self, path: Path, why: str) -> None:
        self.refused.append((path, why))
        rows = [f"\u2717 <b>{p.name}</b>: {_escape(w)}" for p, w in self.refused[-6:]]
        self.problems.setText("Not added:<br>" + "<br>".join(rows))

    def remove_photo(self, path: Path) -> None:
        self.photos = [p for p in self.photos if p.path != path]
        for index in range(self.tiles.count()):
            tile = self.tiles.itemAt(index).widget()
            if isinstance(tile, PhotoTile) and tile.photo.path == path:
                self.tiles.takeAt(index)
                tile.deleteLater()
                break
        self._update()

    def name_problem(self) -> str | None:
        """Why the typed name cannot be used, in the store's own words, or None."""
        name = self.name.text()
        if not name:
            return "Give it a short name; you will write it as <name> in the chat."
        try:
            check_name(name)
            existing = self.library.concepts.get(name)
        except InvalidValueError as exc:
            return str(exc)
        except NotFoundError:
            return None
        return f"a concept named {existing.name!r} already exists"

    def _update(self) -> None:
        problem = self.name_problem()
        if problem is None:
            self.name_message.setText(f"You will mention it as <{self.name.text()}>.")
            self.name_message.setStyleSheet("color: #1e6b34;")
        else:
            self.name_message.setText(problem)
            self.name_message.setStyleSheet("color: #9b1c1c;" if self.name.text() else "color: #666;")
        waiting = f", checking {len(self.pending)}\u2026" if self.pending else ""
        warning = photo_count_warning(len(self.photos)) if self.photos else None
        advice = f"\n{warning[0].upper()}{warning[1:]}." if warning else ""
        self.count.setText(
            f"{len(self.photos)} photo{'s' if len(self.photos) != 1 else ''}{waiting}. Drop photos here; "
            f"{ADVISED_PHOTOS}-5 from different angles work best.{advice}"
        )
        self.count.setStyleSheet("color: #a15c00;" if warning else "")
        ready = problem is None and MIN_PHOTOS <= len(self.photos) <= MAX_PHOTOS and not self.pending
        self.add_only.setEnabled(ready and not self._busy)
        self.add_train.setEnabled(ready and not self._busy)
        self.add_instant.setEnabled(ready and not self._busy and self.aligner is not None)

    def set_aligner(self, path: str | None, why: str) -> None:
        """The Aligner file "Add instantly" uses, or None (the button is then disabled and its tip says `why`)."""
        self.aligner = path
        self.add_instant.setToolTip(INSTANT_TIP if path is not None else why)
        self._update()

    def _pick(self) -> None:
        files, _ = QFileDialog.getOpenFileNames(
            self,
            "Choose photos (3-5 work best)",
            str(Path.home()),
            "Photos (*.jpg *.jpeg *.png *.webp *.heic);;All files (*)",
        )
        self.add_files([Path(f) for f in files])

    def _submit(self, train: bool, instant: bool = False) -> None:
        try:
            facts = check_facts(self.facts.toPlainText())
        except InvalidValueError as exc:
            self.error.setText(str(exc))
            return
        busy = self.engine.busy_reason() if instant else None
        if busy is not None:
            self.error.setText(f"{busy} (Add stores the concept without tokens now.)")
            return
        name, kind = self.name.text(), self.kind.currentText()
        paths = [p.path for p in self.photos]
        data_dir = self.library.root
        self._busy = True
        self.error.setText("Adding\u2026")
        self._update()

        def work(_report: Report) -> str:
            with Library.open(data_dir) as library:
                return library.concepts.add(name, paths, kind=kind, facts=facts).name

        if instant:
            self.runner.submit(work, done=self._predict, failed=self._failed)
        else:
            self.runner.submit(work, done=lambda added: self._done(added, train), failed=self._failed)

    def _predict(self, name: str) -> None:
        """The concept is in the library: predict its instant tokens on the model's thread."""
        aligner = Path(self.aligner or "")
        self.error.setText(f"Added <{name}>; predicting its tokens from its first photo\u2026")

        def job(library: Library, assistant: Assistant, _attached: dict[str, int], report: Report) -> TokenVersion:
            from desktop.services.instant import add_instant_tokens

            return add_instant_tokens(library, assistant, name, aligner, self.engine.cache, report)

        self.engine.submit(
            job,
            done=lambda _version: self._done(name, False),
            failed=lambda message: self._predict_failed(name, message),
            progress=lambda message: self.error.setText(f"<{name}>: {message}\u2026"),
        )

    def _predict_failed(self, name: str, message: str) -> None:
        self.instant_failed.emit(name, message)
        self._done(name, False)

    def _done(self, name: str, train: bool) -> None:
        self._busy = False
        self.reset()
        self.created.emit(name, train)

    def _failed(self, message: str) -> None:
        self._busy = False
        self.error.setText(message)
        self._update()

    def _cancel(self) -> None:
        self.reset()
        self.cancelled.emit()

    def reset(self) -> None:
        """Empty the form for the next concept."""
        for photo in list(self.photos):
            self.remove_photo(photo.path)
        self.refused.clear()
        self.problems.clear()
        self.error.clear()
        self.name.clear()
        self.facts.clear()
        self.kind.setCurrentText(DEFAULT_KIND)
        self._update()


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
