"""Settings: the model (with its memory estimate, refused when it will not fit, and "Get a model..." to download a
real one), device, 4-bit, the Aligner for instant concepts, the offline index, the opt-in remote kNN service, and
the library folder. Saved to the settings file at once."""

from __future__ import annotations

import threading
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QMessageBox,
    QProgressBar,
    QPushButton,
    QScrollArea,
    QVBoxLayout,
    QWidget,
)

from desktop.app.settings import DEVICES, REMOTE_KNN_STATEMENT, AppSettings, save_settings
from desktop.app.tasks import Report, Runner
from desktop.app.widgets import heading
from desktop.services.model_download import DEFAULT_REPO, RELEASE_REPO

if TYPE_CHECKING:
    from desktop.services.model_check import ModelCheck
    from desktop.services.model_download import DownloadPlan
    from engine.progress import Progress

NOTE_WIDTH = 560
OK_STYLE, BAD_STYLE = "color: #1e6b34;", "color: #9b1c1c;"


def _folder_row(edit: QLineEdit, title: str, parent: QWidget) -> QHBoxLayout:
    row = QHBoxLayout()
    row.addWidget(edit, 1)
    browse = QPushButton("Browse\u2026")
    browse.clicked.connect(
        lambda: (
            (chosen := QFileDialog.getExistingDirectory(parent, title, edit.text() or str(Path.home())))
            and edit.setText(chosen)
        )
    )
    row.addWidget(browse)
    return row


def _file_row(edit: QLineEdit, title: str, pattern: str, parent: QWidget) -> QHBoxLayout:
    row = QHBoxLayout()
    row.addWidget(edit, 1)
    browse = QPushButton("Browse\u2026")
    browse.clicked.connect(
        lambda: (
            (chosen := QFileDialog.getOpenFileName(parent, title, edit.text() or str(Path.home()), pattern)[0])
            and edit.setText(chosen)
        )
    )
    row.addWidget(browse)
    return row


def _note(text: str) -> QLabel:
    """Grey explanatory text. The minimum width keeps its size hint (and so the page) from growing tall:
    a word-wrapped label's hint assumes a narrow column."""
    label = QLabel(text)
    label.setWordWrap(True)
    label.setMinimumWidth(NOTE_WIDTH)
    label.setStyleSheet("color: #555;")
    return label


class SettingsView(QWidget):
    """`model_chosen(settings)` fires when a model passed its memory check; the window then loads it."""

    model_chosen = Signal(object)

    def __init__(
        self, settings: AppSettings, path: Path, library_dir: Path, folder_override: str | None, runner: Runner
    ) -> None:
        super().__init__()
        self.settings = settings
        self.path = path
        self.runner = runner
        self.library_dir = library_dir
        self.release_repo = RELEASE_REPO
        """The original release the VQGAN checkpoint comes from (tests point it at their stand-in hub)."""
        self._stop_download = threading.Event()
        outer = QVBoxLayout(self)
        outer.addWidget(heading("Settings"))
        body = QWidget()
        layout = QVBoxLayout(body)
        scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setWidget(body)
        outer.addWidget(scroll, 1)

        model = QGroupBox("Model")
        form = QFormLayout(model)
        self.model = QLineEdit(settings.model)
        self.model.setPlaceholderText("demo, or a Chameleon-family model folder")
        row = _folder_row(self.model, "Choose a model folder", self)
        demo = QPushButton("Use demo")
        demo.clicked.connect(lambda: self.model.setText("demo"))
        row.addWidget(demo)
        form.addRow("Model folder", row)
        self.device = QComboBox()
        self.device.addItems(DEVICES)
        self.device.setCurrentText(settings.device)
        form.addRow("Device", self.device)
        self.four_bit = QCheckBox("Load real models in 4-bit (NF4) on a CUDA GPU")
        self.four_bit.setChecked(settings.four_bit)
        form.addRow("", self.four_bit)
        form.addRow(
            "",
            _note(
                "A model folder is in the Hugging Face layout (e.g. Anole-7b-v0.1-hf) with the original release's "
                "VQGAN decoder. About 7 GiB in 4-bit on a GPU; 17 GiB in bf16."
            ),
        )
        self.hub_repo = QLineEdit(DEFAULT_REPO)
        self.hub_repo.setPlaceholderText(DEFAULT_REPO)
        get_row = QHBoxLayout()
        get_row.addWidget(self.hub_repo, 1)
        self.get_button = QPushButton("Get a model\u2026")
        self.get_button.setToolTip("Download the model from the Hugging Face hub after showing its size and licence")
        self.get_button.clicked.connect(self.get_model)
        get_row.addWidget(self.get_button)
        form.addRow("Hub model", get_row)
        download_row = QHBoxLayout()
        self.download_bar = QProgressBar()
        self.download_bar.hide()
        download_row.addWidget(self.download_bar, 1)
        self.cancel_download = QPushButton("Cancel")
        self.cancel_download.hide()
        self.cancel_download.clicked.connect(self._stop_download.set)
        download_row.addWidget(self.cancel_download)
        form.addRow("", download_row)
        self.download_status = _note(
            "Nothing is downloaded until you click Get a model\u2026 and agree; an interrupted download resumes."
        )
        self.download_status.setTextFormat(Qt.TextFormat.PlainText)
        form.addRow("", self.download_status)
        self.aligner = QLineEdit(settings.aligner)
        self.aligner.setPlaceholderText("the demo model's own; for another model, one made by familiar aligner train")
        form.addRow("Aligner file", _file_row(self.aligner, "Aligner file", "Aligner (*.safetensors)", self))
        form.addRow(
            "", _note("The Aligner makes instant concepts from one photo (Add instantly); it is saved by Save.")
        )
        self.estimate = QLabel("Check and load estimates the memory the model needs before loading it.")
        self.estimate.setStyleSheet("color: #555;")
        self.estimate.setWordWrap(True)
        self.estimate.setTextFormat(Qt.TextFormat.PlainText)
        form.addRow("Memory", self.estimate)
        self.load_button = QPushButton("Check and load")
        self.load_button.clicked.connect(self.check_and_load)
        form.addRow("", self.load_button)
        layout.addWidget(model)

        retrieval = QGroupBox("Finding look-alike pictures (soft positives)")
        form = QFormLayout(retrieval)
        self.index = QLineEdit(settings.index_folder)
        self.index.setPlaceholderText("none: the demo model's bundled subset; other models use your photos only")
        form.addRow("Offline index folder", _folder_row(self.index, "Choose an index folder", self))
        self.weights = QLineEdit(settings.embedder_weights)
        self.weights.setPlaceholderText("the index's embedder weights file (not needed for a demo index)")
        form.addRow("Embedder weights", _file_row(self.weights, "Embedder weights", "Weights (*.safetensors)", self))
        form.addRow("", _note("Build an index with `familiar index build FOLDER -o INDEX` (see docs/retrieval.md)."))
        self.remote = QCheckBox("Use a remote kNN service (off by default)")
        self.remote.setChecked(settings.remote_knn)
        form.addRow("", self.remote)
        self.remote_url = QLineEdit(settings.remote_knn_url)
        self.remote_url.setPlaceholderText("https://\u2026 (a clip-retrieval compatible service)")
        self.remote_url.setEnabled(settings.remote_knn)
        self.remote.toggled.connect(self.remote_url.setEnabled)
        form.addRow("Service URL", self.remote_url)
        form.addRow("", _note(REMOTE_KNN_STATEMENT))
        layout.addWidget(retrieval)

        library = QGroupBox("Library")
        form = QFormLayout(library)
        self.data_folder = QLineEdit(settings.data_folder or str(library_dir))
        form.addRow("Data folder", _folder_row(self.data_folder, "Choose the library folder", self))
        where = f"In use now: {library_dir}. A new folder takes effect the next time Familiar starts."
        if folder_override:
            where += f" This session's folder was set by {folder_override}, which wins over this setting."
        form.addRow("", _note(where))
        layout.addWidget(library)

        layout.addStretch(1)
        save_row = QHBoxLayout()
        self.saved = QLabel()
        self.saved.setWordWrap(True)
        save_row.addWidget(self.saved, 1)
        save = QPushButton("Save")
        save.setToolTip("Save the Aligner, look-alike and library choices (the model is saved by Check and load)")
        save.clicked.connect(self.save)
        save_row.addWidget(save)
        outer.addLayout(save_row)

    def save(self) -> None:
        """Save the Aligner, retrieval and library choices (the model is saved by Check and load)."""
        url = self.remote_url.text().strip()
        index, weights = self.index.text().strip(), self.weights.text().strip()
        aligner = self.aligner.text().strip()
        problem = None
        if self.remote.isChecked() and not url.startswith(("https://", "http://")):
            problem = "The remote kNN service needs an http(s) URL."
        elif self.remote.isChecked() and not index:
            problem = "The remote kNN service needs an offline index too (its embedder, and the fallback)."
        elif aligner and not Path(aligner).expanduser().is_file():
            problem = f"The Aligner file {aligner} does not exist."
        elif index and not Path(index).expanduser().is_dir():
            problem = f"The index folder {index} does not exist."
        elif weights and not Path(weights).expanduser().is_file():
            problem = f"The embedder weights file {weights} does not exist."
        if problem:
            self.saved.setStyleSheet(BAD_STYLE)
            self.saved.setText(problem)
            return
        self.settings = replace(
            self.settings,
            index_folder=index,
            embedder_weights=weights,
            remote_knn=self.remote.isChecked(),
            remote_knn_url=url,
            data_folder=self.data_folder.text().strip(),
            aligner=aligner,
        )
        save_settings(self.path, self.settings)
        self.saved.setStyleSheet(OK_STYLE)
        self.saved.setText(f"Saved to {self.path}")

    def check_and_load(self) -> None:
        """Estimate memory in the background; a model that fits is saved and loaded, one that does not is refused."""
        chosen = replace(
            self.settings,
            model=self.model.text().strip() or "demo",
            device=self.device.currentText(),
            four_bit=self.four_bit.isChecked(),
        )
        self.estimate.setStyleSheet("")
        self.estimate.setText("Reading the model's config\u2026")
        self.load_button.setEnabled(False)

        def work(_report: Report) -> ModelCheck:
            from desktop.services.model_check import check_model

            return check_model(chosen.model, chosen.device, chosen.four_bit)

        self.runner.submit(work, done=lambda check: self._checked(chosen, check), failed=self._refused)

    def _checked(self, chosen: AppSettings, check: ModelCheck) -> None:
        self.load_button.setEnabled(True)
        if not check.fits:
            self._refused(check.message)
            return
        self.estimate.setStyleSheet(OK_STYLE)
        self.estimate.setText(check.message + " Loading it now.")
        self.settings = replace(self.settings, model=chosen.model, device=chosen.device, four_bit=chosen.four_bit)
        save_settings(self.path, self.settings)
        self.model_chosen.emit(self.settings)

    def _refused(self, message: str) -> None:
        self.load_button.setEnabled(True)
        self.estimate.setStyleSheet(BAD_STYLE)
        self.estimate.setText(message)

    def get_model(self) -> None:
        """Ask the hub for the model's files off the UI thread; `_planned` then asks the user before downloading."""
        from desktop.services.model_download import default_destination, plan_download

        repo = self.hub_repo.text().strip() or DEFAULT_REPO
        destination = default_destination(self.library_dir, repo)
        release = self.release_repo
        self._downloading(True)
        self._status("Asking the hub for the model's files, sizes and licence\u2026", "")

        def work(_report: Report) -> DownloadPlan:
            return plan_download(destination, repo, release_repo=release)

        self.runner.submit(work, done=self._planned, failed=self._download_failed)

    def _planned(self, plan: DownloadPlan) -> None:
        summary = "\n".join(plan.describe())
        if not plan.fits:
            self._download_failed(f"Nothing downloaded: {plan.disk_problem()}.")
            return
        asked = QMessageBox.question(self, "Get a model", summary + "\n\nDownload it now?")
        if asked != QMessageBox.StandardButton.Yes:
            self._downloading(False)
            self._status("Nothing downloaded.", "")
            return
        from desktop.services.model_download import download

        self._stop_download.clear()
        self.cancel_download.show()
        self.download_bar.show()
        self._status(f"Downloading into {plan.destination}\u2026", "")

        def work(report: Report) -> Path:
            return download(plan, progress=report, cancelled=self._stop_download.is_set)

        self.runner.submit(work, done=self._downloaded, failed=self._download_failed, progress=self._progress)

    def _progress(self, update: Progress) -> None:
        self.download_bar.setMaximum(update.total)
        self.download_bar.setValue(update.step)
        left = f", about {update.eta_seconds / 60:.0f} min left" if update.eta_seconds is not None else ""
        self._status(f"{update.step} of {update.total} MiB{left}", "")

    def _downloaded(self, folder: Path) -> None:
        self._downloading(False)
        self._status(f"Downloaded and verified into {folder}.", OK_STYLE)
        self.model.setText(str(folder))
        self.check_and_load()

    def _download_failed(self, message: str) -> None:
        self._downloading(False)
        self._status(message, BAD_STYLE)

    def _downloading(self, busy: bool) -> None:
        self.get_button.setEnabled(not busy)
        if not busy:
            self.cancel_download.hide()
            self.download_bar.hide()

    def _status(self, text: str, style: str) -> None:
        self.download_status.setStyleSheet(style or "color: #555;")
        self.download_status.setText(text)

    def stop_download(self) -> None:
        """Cancel a download in progress (what was fetched is kept for the next one)."""
        self._stop_download.set()
