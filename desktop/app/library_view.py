"""The concept library as cards, and its management: select a card, rename it in place (F2), remove it to the
trash (Delete, undone with Ctrl+Z or the banner's Undo), export it (Ctrl+E) or import `.familiar` files, drop
photos on a card to add them, edit its photos and facts; a right click or the card's "⋯" button lists it all."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QEvent, QObject, QPoint, Qt, Signal
from PySide6.QtGui import (
    QAction,
    QContextMenuEvent,
    QDragEnterEvent,
    QDropEvent,
    QKeyEvent,
    QKeySequence,
    QMouseEvent,
)
from PySide6.QtWidgets import (
    QFileDialog,
    QFrame,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QMenu,
    QMessageBox,
    QPushButton,
    QScrollArea,
    QSizePolicy,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from desktop.app.history import resumable_run
from desktop.app.tasks import Report, Runner
from desktop.app.undo import UndoHistory
from desktop.app.widgets import Banner, FlowLayout, heading, square_pixmap
from desktop.services.verdict import verdict
from store.archive import SUFFIX
from store.errors import ConceptExistsError, InvalidValueError, StoreError
from store.library import Library
from store.models import Concept
from store.validation import TRASH_DAYS, check_name

THUMB = 176
STATE_COLOURS = {"untrained": "#8a8a8a", "instant": "#2b6cd4", "trained": "#1e8a3c"}
CARD_STYLE = "#card {{ background: #ffffff; border: {border}; border-radius: 8px; }}"
SELECTED_BORDER = "2px solid #2b6cd4"
PLAIN_BORDER = "1px solid #d8d8d8"


def dropped(event: QDragEnterEvent | QDropEvent) -> tuple[list[Path], list[Path]]:
    """The local files a drag carries: (`.familiar` archives, the other files)."""
    paths = [Path(url.toLocalFile()) for url in event.mimeData().urls() if url.isLocalFile()]
    archives = [p for p in paths if p.suffix.lower() == SUFFIX]
    return archives, [p for p in paths if p not in archives]


class ConceptCard(QFrame):
    """One concept: its first photo, name (edited in place to rename), kind, state badge, scores and actions.
    Photos dropped on it are added to it; `.familiar` files dropped on it are imported."""

    train = Signal(str)
    resume = Signal(str)
    chat = Signal(str)
    selected = Signal(str)
    menu_requested = Signal(str, QPoint)
    renamed = Signal(str, str)
    photos_dropped = Signal(str, list)
    archives_dropped = Signal(list)

    def __init__(self, concept: Concept, thumbnail: QLabel, interrupted: bool) -> None:
        super().__init__()
        self.concept = concept
        self.setObjectName("card")
        self.setAcceptDrops(True)
        self.setFocusPolicy(Qt.FocusPolicy.ClickFocus)
        self.set_selected(False)
        self.setFixedWidth(THUMB + 24)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(12, 12, 12, 12)
        layout.addWidget(thumbnail, alignment=Qt.AlignmentFlag.AlignHCenter)
        title = QHBoxLayout()
        self.name = QLabel(f"<b>&lt;{_escape(concept.name)}&gt;</b> <span style='color:#666'>{concept.kind}</span>")
        title.addWidget(self.name, 1)
        self.more = QToolButton()
        self.more.setText("\u22ef")
        self.more.setToolTip("Rename, edit, export or remove")
        self.more.clicked.connect(
            lambda: self.menu_requested.emit(concept.name, self.more.mapToGlobal(self.more.rect().bottomLeft()))
        )
        title.addWidget(self.more)
        layout.addLayout(title)
        self.name_edit = QLineEdit(concept.name)
        self.name_edit.hide()
        self.name_edit.returnPressed.connect(self._finish_rename)
        self.name_edit.textChanged.connect(self._check_name)
        self.name_edit.installEventFilter(self)
        layout.addWidget(self.name_edit)
        self.name_problem = QLabel()
        self.name_problem.setWordWrap(True)
        self.name_problem.setStyleSheet("color: #9b1c1c; font-size: 11px;")
        self.name_problem.hide()
        layout.addWidget(self.name_problem)
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
        self.verdict = QLabel()
        self.verdict.setWordWrap(True)
        self.verdict.setStyleSheet("color: #333; font-size: 11px;")
        self.numbers = QLabel()
        self.numbers.setWordWrap(True)
        self.numbers.setStyleSheet("color: #555; font-size: 10px;")
        self.numbers.hide()
        self.numbers_button = QToolButton()
        self.numbers_button.setText("Numbers")
        self.numbers_button.setCheckable(True)
        self.numbers_button.setToolTip("The raw scores behind the verdict")
        self.numbers_button.toggled.connect(self.numbers.setVisible)
        if concept.active is not None:
            judged = verdict(
                concept.name, concept.active.metrics, kind=concept.active.kind, photo_count=concept.photo_count
            )
            self.verdict.setText("\n".join(judged.lines()))
            self.numbers.setText(judged.numbers)
            layout.addWidget(self.verdict)
            if judged.numbers:
                layout.addWidget(self.numbers_button, alignment=Qt.AlignmentFlag.AlignLeft)
                layout.addWidget(self.numbers)
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

    def set_selected(self, selected: bool) -> None:
        self.setStyleSheet(CARD_STYLE.format(border=SELECTED_BORDER if selected else PLAIN_BORDER))

    def start_rename(self) -> None:
        """Swap the name for an editor holding it, selected (Enter renames, Escape cancels)."""
        self.name_edit.setText(self.concept.name)
        self.name_edit.show()
        self.name_edit.selectAll()
        self.name_edit.setFocus()

    def cancel_rename(self) -> None:
        self.name_edit.hide()
        self.name_problem.hide()

    def _check_name(self, text: str) -> None:
        try:
            check_name(text)
        except InvalidValueError as exc:
            self.name_problem.setText(str(exc))
            self.name_problem.show()
        else:
            self.name_problem.hide()

    def _finish_rename(self) -> None:
        new = self.name_edit.text()
        if new == self.concept.name:
            self.cancel_rename()
        elif self.name_problem.isHidden():
            self.renamed.emit(self.concept.name, new)

    def show_rename_problem(self, message: str) -> None:
        self.name_problem.setText(message)
        self.name_problem.show()

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:
        if (
            watched is self.name_edit
            and isinstance(event, QKeyEvent)
            and event.type() == QEvent.Type.KeyPress
            and event.key() == Qt.Key.Key_Escape
        ):
            self.cancel_rename()
            self.setFocus()
            return True
        return super().eventFilter(watched, event)

    def mousePressEvent(self, event: QMouseEvent) -> None:
        self.selected.emit(self.concept.name)
        self.setFocus()
        super().mousePressEvent(event)

    def contextMenuEvent(self, event: QContextMenuEvent) -> None:
        self.selected.emit(self.concept.name)
        self.menu_requested.emit(self.concept.name, event.globalPos())

    def dragEnterEvent(self, event: QDragEnterEvent) -> None:
        if any(dropped(event)):
            event.acceptProposedAction()

    def dropEvent(self, event: QDropEvent) -> None:
        archives, photos = dropped(event)
        if not archives and not photos:
            return
        event.acceptProposedAction()
        if archives:
            self.archives_dropped.emit(archives)
        if photos:
            self.photos_dropped.emit(self.concept.name, photos)


class LibraryView(QWidget):
    """All concepts as cards, with Add and Import buttons; `refresh` re-reads the library. `changed` fires
    after this view changed the library (the other views re-read it); `edit(name)` asks for the editor;
    `add_with(paths)` for the add-concept page with photos dropped on the library."""

    add = Signal()
    add_with = Signal(list)
    train = Signal(str)
    resume = Signal(str)
    chat = Signal(str)
    edit = Signal(str)
    changed = Signal()

    def __init__(self, library: Library, history: UndoHistory, runner: Runner) -> None:
        super().__init__()
        self.library = library
        self.history = history
        self.runner = runner
        self.cards: dict[str, ConceptCard] = {}
        self.selected: str | None = None
        self.dialog: QFileDialog | QMessageBox | None = None  # the file dialog or question being shown
        self.setAcceptDrops(True)
        layout = QVBoxLayout(self)
        top = QHBoxLayout()
        top.addWidget(heading("Your concepts"))
        top.addStretch(1)
        importing = QPushButton("Import\u2026")
        importing.setToolTip(f"Add concepts from {SUFFIX} files (Ctrl+I), or drop the files here")
        importing.clicked.connect(self.ask_import)
        top.addWidget(importing)
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
        self.notice = Banner("", "info", action="Undo")
        self.notice.hide()
        self.notice.action.connect(self.history.undo)
        layout.addWidget(self.notice)
        self.empty = QLabel(
            "No concepts yet. Add one from 3-5 photos of your dog, a person or a thing; Familiar learns it as a "
            f"few tokens and can then talk about it and draw it. Drop {SUFFIX} files here to import concepts."
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
        delete = QKeySequence(QKeySequence.StandardKey.Delete)
        self.rename_action = self._action("Rename", QKeySequence(Qt.Key.Key_F2), self._rename_selected)
        self.edit_action = self._action("Edit photos and facts\u2026", None, lambda: self._on_selected(self.edit.emit))
        export = QKeySequence("Ctrl+E")
        self.export_action = self._action("Export\u2026", export, lambda: self._on_selected(self.ask_export))
        self.remove_action = self._action("Remove (to the trash)", delete, lambda: self._on_selected(self.remove))
        self.history.failed.connect(self.show_problem)
        self.refresh()

    def _action(self, text: str, keys: QKeySequence | None, slot: object) -> QAction:
        action = QAction(text, self)
        if keys is not None:
            action.setShortcut(keys)
        action.setShortcutContext(Qt.ShortcutContext.WidgetWithChildrenShortcut)
        action.triggered.connect(slot)
        self.addAction(action)
        return action

    def show_problem(self, message: str) -> None:
        """Keep a message above the cards (e.g. why a concept has no instant tokens) until the next Add."""
        self.problem.setText(message)
        self.problem.show()

    def show_notice(self, message: str, undo: bool = False) -> None:
        """A passing note above the cards, with an Undo button when `undo`."""
        self.notice.label.setText(message)
        if self.notice.button is not None:
            self.notice.button.setVisible(undo)
        self.notice.show()

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
            card.selected.connect(self.select)
            card.menu_requested.connect(self._show_menu)
            card.renamed.connect(self.rename)
            card.photos_dropped.connect(self.add_photos)
            card.archives_dropped.connect(self.import_files)
            self.grid.addWidget(card)
            self.cards[concept.name] = card
        if self.selected not in self.cards:
            self.selected = None
        self.select(self.selected)
        self.grid_host.updateGeometry()

    def select(self, name: str | None) -> None:
        self.selected = name
        for card_name, card in self.cards.items():
            card.set_selected(card_name == name)
        for action in (self.rename_action, self.edit_action, self.export_action, self.remove_action):
            action.setEnabled(name is not None)

    def menu(self, name: str) -> QMenu:
        """The card's menu: Rename, Edit, Export, Remove (each acting on `name`, which is selected)."""
        self.select(name)
        menu = QMenu(self)
        for action in (self.rename_action, self.edit_action, self.export_action):
            menu.addAction(action)
        menu.addSeparator()
        menu.addAction(self.remove_action)
        return menu

    def _show_menu(self, name: str, where: QPoint) -> None:
        self.menu(name).popup(where)

    def _on_selected(self, act: object) -> None:
        if self.selected is not None:
            act(self.selected)  # type: ignore[operator]

    def _rename_selected(self) -> None:
        if self.selected in self.cards:
            self.cards[self.selected].start_rename()

    def rename(self, old: str, new: str) -> None:
        """Rename `old` to `new` (undoable); a refusal is shown under the name being edited."""
        try:
            renamed = self.library.concepts.rename(old, new).name
        except StoreError as exc:
            if old in self.cards:
                self.cards[old].show_rename_problem(str(exc))
            return
        self.history.push(f"Rename <{old}> to <{renamed}>", lambda: self.library.concepts.rename(renamed, old))
        self.selected = renamed
        self.show_notice(f"Renamed <{old}> to <{renamed}>.", undo=True)
        self._after_change()

    def remove(self, name: str) -> None:
        """Move the concept to the trash (undoable: Ctrl+Z, or Undo in the note that says so)."""
        try:
            trashed = self.library.concepts.remove(name)
        except StoreError as exc:
            self.show_problem(str(exc))
            return
        self.history.push(
            f"Remove <{trashed.name}>",
            lambda: self.library.concepts.restore(trashed.name, trashed_id=trashed.id),
        )
        versions = f", {trashed.version_count} version{'s' if trashed.version_count != 1 else ''}"
        self.show_notice(
            f"Moved <{trashed.name}> to the trash ({_photos(trashed.photo_count)}{versions}, its runs and pictures). "
            f"It is deleted for good after {TRASH_DAYS} days; Undo (Ctrl+Z) brings it back.",
            undo=True,
        )
        self._after_change()

    def _after_change(self) -> None:
        self.refresh()
        self.changed.emit()

    def add_photos(self, name: str, paths: list[Path]) -> None:
        """Add photos (dropped on a card) to a concept in the background, all or none."""
        root = self.library.root

        def work(_report: Report) -> int:
            with Library.open(root) as library:
                return library.concepts.edit(name, add=paths).photo_count

        self.runner.submit(
            work,
            done=lambda count: (
                self.show_notice(f"Added {_photos(len(paths))} to <{name}>; it has {count} now."),
                self._after_change(),
            ),
            failed=lambda message: self.show_problem(f"No photo was added to <{name}>: {message}"),
        )

    def ask_export(self, name: str) -> None:
        """Ask where to save the concept's `.familiar` file (the dialog says it holds the photos)."""
        count = self.library.concepts.get(name).photo_count
        dialog = QFileDialog(
            self, f"Export <{name}>: the file holds its {_photos(count)}", str(Path.home() / f"{name}{SUFFIX}")
        )
        dialog.setAcceptMode(QFileDialog.AcceptMode.AcceptSave)
        dialog.setNameFilter(f"Familiar concept (*{SUFFIX})")
        dialog.setDefaultSuffix(SUFFIX.lstrip("."))
        dialog.setOption(QFileDialog.Option.DontConfirmOverwrite)  # asked below, saying what the file holds
        dialog.fileSelected.connect(lambda target: self.export_to(name, Path(target)))
        self._show(dialog)

    def export_to(self, name: str, target: Path, overwrite: bool = False) -> None:
        """Write the concept to `target`; an existing file is replaced only after the user says so."""
        if not target.suffix:
            target = target.with_suffix(SUFFIX)
        if target.exists() and not overwrite:
            count = self.library.concepts.get(name).photo_count
            question = QMessageBox(
                QMessageBox.Icon.Question,
                "Replace the file?",
                f"{target.name} already exists in {target.parent}. Replace it with <{name}>? The new file holds "
                f"its {_photos(count)} and learned tokens.",
                QMessageBox.StandardButton.Cancel,
                self,
            )
            replace = question.addButton("Replace", QMessageBox.ButtonRole.AcceptRole)
            question.buttonClicked.connect(
                lambda button: button is replace and self.export_to(name, target, overwrite=True)
            )
            self._show(question)
            return
        root = self.library.root

        def work(_report: Report) -> tuple[Path, int]:
            with Library.open(root) as library:
                return library.export_concept(name, target, overwrite=overwrite), library.concepts.get(name).photo_count

        self.runner.submit(
            work,
            done=lambda result: self.show_notice(
                f"Exported <{name}> to {result[0]}. The file holds its {_photos(result[1])}: share it only with "
                "people who may see them."
            ),
            failed=lambda message: self.show_problem(f"<{name}> was not exported: {message}"),
        )

    def ask_import(self) -> None:
        """Ask for `.familiar` files to import."""
        dialog = QFileDialog(self, "Import concepts", str(Path.home()), f"Familiar concepts (*{SUFFIX})")
        dialog.setFileMode(QFileDialog.FileMode.ExistingFiles)
        dialog.filesSelected.connect(lambda files: self.import_files([Path(f) for f in files]))
        self._show(dialog)

    def import_files(self, paths: list[Path]) -> None:
        """Import `.familiar` files in the background; a taken name gets a free one (bo-2, bo-3, ...)."""
        root = self.library.root
        for path in paths:

            def work(_report: Report, source: Path = path) -> tuple[str, str | None]:
                with Library.open(root) as library:
                    try:
                        return library.import_concept(source).name, None
                    except ConceptExistsError as exc:
                        taken = exc.name or "concept"
                        free = next(
                            f"{taken}-{n}" for n in range(2, 10_000) if library.find_concept(f"{taken}-{n}") is None
                        )
                        return library.import_concept(source, rename=free).name, taken

            self.runner.submit(
                work,
                done=self._imported,
                failed=lambda message, source=path: self.show_problem(f"{source.name} was not imported: {message}"),
            )

    def _imported(self, result: tuple[str, str | None]) -> None:
        name, taken = result
        if taken is None:
            self.show_notice(f"Imported <{name}>.")
        else:
            self.show_notice(f"Imported <{name}>: <{taken}> was taken. Press F2 to rename it.")
        self.selected = name
        self._after_change()

    def _show(self, dialog: QFileDialog | QMessageBox) -> None:
        dialog.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        dialog.finished.connect(lambda _result: self.dialog is dialog and setattr(self, "dialog", None))
        self.dialog = dialog
        dialog.open()

    def dragEnterEvent(self, event: QDragEnterEvent) -> None:
        if any(dropped(event)):
            event.acceptProposedAction()

    def dropEvent(self, event: QDropEvent) -> None:
        """`.familiar` files are imported; photos start a new concept (drop them on a card to add them to it)."""
        archives, photos = dropped(event)
        if not archives and not photos:
            return
        event.acceptProposedAction()
        if archives:
            self.import_files(archives)
        if photos:
            self.add_with.emit(photos)

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


def _photos(count: int) -> str:
    return f"{count} photo{'s' if count != 1 else ''}"


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
