"""The main window: a navigation list, the views in a stack, the demo banner and the model status.

Construction is cheap (no torch): the model loads on the engine's thread after the window is built. Ctrl+Z
takes back the last library change (remove, rename, delete a picture), Ctrl+I imports `.familiar` files, and
`.familiar` files dropped anywhere on the window are imported."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PySide6.QtCore import QCoreApplication, QSize, Qt, QTimer
from PySide6.QtGui import QAction, QCloseEvent, QDragEnterEvent, QDropEvent, QKeySequence
from PySide6.QtWidgets import (
    QHBoxLayout,
    QLabel,
    QListWidget,
    QMainWindow,
    QProgressBar,
    QStackedWidget,
    QVBoxLayout,
    QWidget,
)

from desktop.app.chat_view import ChatView
from desktop.app.concept_editor import ConceptEditor
from desktop.app.engine_host import HOW_TO_SET_A_MODEL, EngineHost, ModelInfo
from desktop.app.gallery_view import GalleryView
from desktop.app.history import resumable_run
from desktop.app.library_view import LibraryView, dropped
from desktop.app.settings import AppSettings
from desktop.app.settings_view import SettingsView
from desktop.app.tasks import Runner
from desktop.app.training import TrainingController
from desktop.app.training_view import TrainingView
from desktop.app.undo import UndoHistory
from desktop.app.widgets import Banner
from desktop.app.wizard import ConceptWizard
from store.library import Library

PAGES = ("Library", "Chat", "Training", "Gallery", "Settings")


@dataclass
class AppContext:
    """Where things are and what tests may inject (`train_overrides` are TrainOptions fields)."""

    data_dir: Path
    settings_path: Path
    settings: AppSettings
    folder_override: str | None = None
    train_overrides: dict[str, Any] = field(default_factory=dict)


class MainWindow(QMainWindow):
    """Familiar's window. `idle()` is true once the model has loaded (or failed) and no work is running."""

    def __init__(self, context: AppContext) -> None:
        super().__init__()
        self.context = context
        self.setWindowTitle("Familiar")
        self.resize(QSize(1120, 780))
        self.library = Library.open(context.data_dir)
        self.engine = EngineHost(context.data_dir, self)
        self.work = Runner(2, self)
        self.training = TrainingController(self.engine, context.train_overrides, self)
        self._closing = False

        self.settings_view = SettingsView(
            context.settings, context.settings_path, context.data_dir, context.folder_override, self.work
        )
        self.history = UndoHistory(self)
        self.library_view = LibraryView(self.library, self.history, self.work)
        self.chat_view = ChatView(self.library, self.engine)
        self.training_view = TrainingView(self.library, self.training, self.engine, lambda: self.settings_view.settings)
        self.gallery_view = GalleryView(self.library, self.history)
        self.wizard = ConceptWizard(self.library, self.work, self.engine)
        self.editor = ConceptEditor(self.library, self.work)
        self.views: dict[str, QWidget] = {
            "Library": self.library_view,
            "Chat": self.chat_view,
            "Training": self.training_view,
            "Gallery": self.gallery_view,
            "Settings": self.settings_view,
            "Add concept": self.wizard,
            "Edit concept": self.editor,
        }
        self._build()
        self._connect()
        self._offer_resume()
        # Start loading once the window has been shown and painted: the first import of torch in the
        # worker holds the interpreter lock for a few hundred milliseconds at a time.
        QTimer.singleShot(0, lambda: self.engine.load(context.settings))

    def _build(self) -> None:
        central = QWidget()
        outer = QVBoxLayout(central)
        self.demo_banner = Banner("", "warning", action="Open Settings")
        self.demo_banner.hide()
        self.error_banner = Banner("", "error", action="Open Settings")
        self.error_banner.hide()
        self.resume_banner = Banner("", "info", action="Resume")
        self.resume_banner.hide()
        for banner in (self.demo_banner, self.error_banner, self.resume_banner):
            outer.addWidget(banner)
        body = QHBoxLayout()
        self.nav = QListWidget()
        self.nav.addItems(PAGES)
        self.nav.setFixedWidth(140)
        self.nav.setStyleSheet("QListWidget { font-size: 14px; } QListWidget::item { padding: 8px; }")
        body.addWidget(self.nav)
        self.stack = QStackedWidget()
        for view in self.views.values():
            self.stack.addWidget(view)
        body.addWidget(self.stack, 1)
        outer.addLayout(body, 1)
        self.setCentralWidget(central)
        self.model_status = QLabel()
        self.busy = QProgressBar()
        self.busy.setRange(0, 0)
        self.busy.setFixedWidth(120)
        self.statusBar().addWidget(self.model_status, 1)
        self.statusBar().addPermanentWidget(self.busy)
        self.nav.setCurrentRow(0)
        self.setAcceptDrops(True)
        self.undo_action = self._shortcut("Undo", QKeySequence.StandardKey.Undo, self.history.undo)
        self.import_action = self._shortcut(
            "Import\u2026", QKeySequence("Ctrl+I"), lambda: (self.show_page("Library"), self.library_view.ask_import())
        )

    def _shortcut(self, text: str, keys: QKeySequence | QKeySequence.StandardKey, slot: object) -> QAction:
        """A window-wide shortcut (a text field that has the focus keeps its own Ctrl+Z)."""
        action = QAction(text, self)
        action.setShortcut(QKeySequence(keys))
        action.setShortcutContext(Qt.ShortcutContext.WindowShortcut)
        action.triggered.connect(slot)
        self.addAction(action)
        return action

    def _connect(self) -> None:
        self.nav.currentTextChanged.connect(lambda page: page and self.stack.setCurrentWidget(self.views[page]))
        for banner in (self.demo_banner, self.error_banner):
            banner.action.connect(lambda: self.show_page("Settings"))
        self.engine.status.connect(self.model_status.setText)
        self.engine.ready.connect(self._model_ready)
        self.engine.failed.connect(self._model_failed)
        self.library_view.add.connect(lambda: self.show_page("Add concept"))
        self.library_view.add_with.connect(self._add_with)
        self.library_view.edit.connect(self._edit)
        self.library_view.changed.connect(self._library_changed)
        self.gallery_view.changed.connect(self._library_changed)
        self.history.undone.connect(self._undone)
        self.editor.saved.connect(self._edited)
        self.editor.cancelled.connect(lambda: self.show_page("Library"))
        self.library_view.train.connect(lambda name: self.train(name))
        self.library_view.resume.connect(lambda name: self.train(name, resume=True))
        self.library_view.chat.connect(self._chat_about)
        self.wizard.created.connect(self._concept_added)
        self.wizard.instant_failed.connect(self._instant_failed)
        self.wizard.cancelled.connect(lambda: self.show_page("Library"))
        self.training_view.changed.connect(self.refresh)
        self.training.finished.connect(self._training_ended)
        self.training.failed.connect(self._training_ended)
        self.chat_view.image_added.connect(self.gallery_view.refresh)
        self.settings_view.model_chosen.connect(self._load_model)

    def _offer_resume(self) -> None:
        """After a restart, point at a training run that stopped early (the newest one) and offer Resume."""
        stopped = [run for c in self.library.concepts.list() if (run := resumable_run(self.library, c.name))]
        if not stopped:
            return
        latest = max(stopped, key=lambda s: s.run.updated_at)
        self.resume_banner.label.setText(latest.describe())
        self.resume_banner.action.connect(
            lambda: (self.resume_banner.hide(), self.train(latest.run.concept, resume=True))
        )
        self.resume_banner.show()

    def show_page(self, page: str) -> None:
        if page in PAGES:
            self.nav.setCurrentRow(PAGES.index(page))
        else:
            self.nav.clearSelection()
        if page == "Add concept":
            self._offer_instant()
        self.stack.setCurrentWidget(self.views[page])

    def _offer_instant(self) -> None:
        """Tell the wizard which Aligner "Add instantly" would use with the loaded model, or why there is none."""
        self.wizard.set_aligner(*self.engine.aligner_for(self.settings_view.settings))

    def train(self, name: str, resume: bool = False) -> None:
        self.show_page("Training")
        self.training_view.start(name, resume=resume)

    def refresh(self) -> None:
        """Re-read the library into every view (after a concept is added or a run ends)."""
        if self._closing:
            return
        self.library_view.refresh()
        self.chat_view.refresh()
        self.gallery_view.refresh()

    def idle(self) -> bool:
        return (
            self.engine.state in ("ready", "failed")
            and not self.engine.runner.busy
            and not self.training.running
            and not self.work.busy
            and not self.wizard.checker.busy
        )

    def _library_changed(self) -> None:
        """A view changed the library: the others read it again (the library view already has)."""
        if self._closing:
            return
        self.chat_view.refresh()
        self.gallery_view.refresh()
        self.training_view.refresh()

    def _undone(self, text: str) -> None:
        self.refresh()
        self.training_view.refresh()
        self.model_status.setText(f"Undone: {text}")

    def _add_with(self, paths: list[Path]) -> None:
        self.show_page("Add concept")
        self.wizard.add_files(paths)

    def _edit(self, name: str) -> None:
        self.editor.open(name)
        self.show_page("Edit concept")

    def _edited(self, name: str) -> None:
        self.library_view.show_notice(f"Saved the changes to <{name}>.")
        self.refresh()
        self.training_view.refresh()
        self.show_page("Library")

    def dragEnterEvent(self, event: QDragEnterEvent) -> None:
        if dropped(event)[0]:
            event.acceptProposedAction()

    def dropEvent(self, event: QDropEvent) -> None:
        """`.familiar` files dropped anywhere on the window are imported (the library view shows them)."""
        archives, _ = dropped(event)
        if archives:
            event.acceptProposedAction()
            self.show_page("Library")
            self.library_view.import_files(archives)

    def _concept_added(self, name: str, train: bool) -> None:
        self.refresh()
        self.training_view.refresh()
        if train:
            self.train(name)
        else:
            self.show_page("Library")

    def _instant_failed(self, name: str, message: str) -> None:
        self.library_view.show_problem(
            f"<{name}> was added with its photos but has no instant tokens (it stays untrained): {message}"
        )

    def _chat_about(self, name: str) -> None:
        self.show_page("Chat")
        self.chat_view.mention(name)

    def _load_model(self, settings: AppSettings) -> None:
        self.demo_banner.hide()
        self.error_banner.hide()
        self.busy.show()
        self.engine.load(settings)
        self._offer_instant()

    def _model_ready(self, info: ModelInfo) -> None:
        self.busy.hide()
        if info.notice:
            self.demo_banner.label.setText(f"Familiar is running its {info.notice}. {HOW_TO_SET_A_MODEL}")
        self.demo_banner.setVisible(info.is_demo)
        self._offer_instant()
        self.training_view.refresh()  # its estimate needs the loaded model

    def _model_failed(self, message: str) -> None:
        self.busy.hide()
        self._offer_instant()
        self.error_banner.label.setText(f"The model could not be loaded: {message}")
        self.error_banner.show()

    def _training_ended(self, _result: object) -> None:
        if self._closing:
            self.close()

    def closeEvent(self, event: QCloseEvent) -> None:
        """A running training run is cancelled first (which saves a checkpoint); then the window closes."""
        if self.training.running:
            self._closing = True
            self.training.cancel()
            self.model_status.setText("Saving a checkpoint of the training run before closing\u2026")
            event.ignore()
            return
        self._closing = True
        self.engine.cancel()
        self.settings_view.stop_download()
        for runner in (self.engine.runner, self.work, self.wizard.checker, self.training.runner):
            runner.wait()
        QCoreApplication.sendPostedEvents()
        self.library.close()
        event.accept()
