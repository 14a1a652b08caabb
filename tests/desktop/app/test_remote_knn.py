"""The remote kNN setting reaches training: on (with a URL), training asks the service (a local fake
clip-retrieval server) for look-alikes, sending only the embedding; when the service fails, training falls back
to the offline index and the training view says so; off, training opens no socket at all."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from desktop.app.settings import AppSettings
from engine.retrieval.embedder import load_embedder
from engine.retrieval.index import EmbeddingIndex, build_index

WAIT_MS = 90_000
LOOK_ALIKES = {"soft_positives": 4, "negatives": 2}


class FakeService:
    """A clip-retrieval-like service on 127.0.0.1 that lists (and serves) a few photos, or answers garbage."""

    def __init__(self, photos: list[Path]) -> None:
        self.garbage = False
        self.bodies: list[dict[str, Any]] = []
        self.downloads: list[str] = []
        self.files = {f"/img/{i}.jpg": photo.read_bytes() for i, photo in enumerate(photos)}
        service = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _send(self, body: bytes, kind: str) -> None:
                self.send_response(200)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                service.bodies.append(body)
                if service.garbage:
                    self._send(b"<html>Service Unavailable</html>", "text/html")
                    return
                results = [
                    {"url": service.url + path, "caption": path, "similarity": 0.9 - i / 100, "id": i}
                    for i, path in enumerate(service.files)
                ]
                self._send(json.dumps(results[: body["num_images"]]).encode(), "application/json")

            def do_GET(self) -> None:
                service.downloads.append(self.path)
                self._send(service.files[self.path], "image/jpeg")

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)


@pytest.fixture(autouse=True)
def no_proxies(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture()
def service(dreambooth: Path) -> Iterator[FakeService]:
    photos = [photo for subject in ("dog2", "dog3") for photo in sorted((dreambooth / subject).glob("*.jpg"))[:3]]
    server = FakeService(photos)
    server.thread.start()
    yield server
    server.server.shutdown()
    server.server.server_close()


@pytest.fixture(scope="module")
def index(dreambooth: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    pool = tmp_path_factory.mktemp("pool")
    for subject in ("backpack", "can", "cat"):
        (pool / subject).mkdir()
        for photo in sorted((dreambooth / subject).glob("*.jpg"))[:2]:
            (pool / subject / photo.name).write_bytes(photo.read_bytes())
    path = tmp_path_factory.mktemp("index") / "index"
    build_index(pool, path, load_embedder("demo"))
    return path


def _train(window, qtbot, dreambooth: Path, settings: AppSettings) -> Any:
    window.library.concepts.add("bo", sorted((dreambooth / "dog").glob("*.jpg"))[:3], kind="pet")
    window.refresh()
    window.settings_view.settings = settings
    ended: list = []  # the finished run, or the failure's message
    window.training.finished.connect(ended.append)
    window.training.failed.connect(ended.append)
    window.train("bo")
    qtbot.waitUntil(lambda: bool(ended), timeout=WAIT_MS)
    (run,) = ended
    assert not isinstance(run, str), run
    assert run.status == "done"
    return run


def _log(window, run) -> list[str]:
    return [line.message for line in window.library.runs.log_lines(run.id)]


def _warnings(window, run) -> list[str]:
    return [line.message for line in window.library.runs.log_lines(run.id) if line.warning]


def test_the_remote_service_is_used_only_when_switched_on_with_a_url() -> None:
    on = AppSettings(remote_knn=True, remote_knn_url=" https://knn.example.org/knn-service ")
    assert on.remote_knn_service == "https://knn.example.org/knn-service"
    assert replace(on, remote_knn=False).remote_knn_service is None
    assert replace(on, remote_knn_url="").remote_knn_service is None


def test_remote_knn_on_asks_the_service_with_the_embedding_only(
    open_window, qtbot, service: FakeService, index: Path, dreambooth: Path
) -> None:
    window = open_window(**LOOK_ALIKES)
    settings = AppSettings(
        device="cpu", index_folder=str(index), remote_knn=True, remote_knn_url=service.url + "/knn-service"
    )
    assert window.training.options(settings).remote_knn_url == service.url + "/knn-service"
    run = _train(window, qtbot, dreambooth, settings)

    (body,) = service.bodies
    assert set(body) == {
        "embedding_input",
        "modality",
        "num_images",
        "indice_name",
        "use_safety_model",
        "use_violence_detector",
        "deduplicate",
    }
    embedding = body["embedding_input"]
    assert len(embedding) == EmbeddingIndex(index).embedder.dim and all(isinstance(x, float) for x in embedding)
    assert body["modality"] == "image" and body["num_images"] == LOOK_ALIKES["soft_positives"] + 1
    assert service.downloads  # the listed pictures were fetched (and checked) locally
    log = _log(window, run)
    assert any("look-alikes from the remote kNN service" in line for line in log)
    assert not _warnings(window, run)
    assert not list(window.library.layout.tmp.glob("remote-knn-*"))  # downloads are not kept
    assert window.training.options(settings).remote_knn_url == run.config["remote_knn_url"]


def test_a_failing_service_falls_back_to_the_offline_index_with_a_visible_note(
    open_window, qtbot, service: FakeService, index: Path, dreambooth: Path
) -> None:
    service.garbage = True
    window = open_window(**LOOK_ALIKES)
    settings = AppSettings(
        device="cpu", index_folder=str(index), remote_knn=True, remote_knn_url=service.url + "/knn-service"
    )
    run = _train(window, qtbot, dreambooth, settings)
    assert len(service.bodies) == 1
    notes = _warnings(window, run)
    assert any("remote kNN service at 127.0.0.1 failed" in n and "using the offline index" in n for n in notes)
    assert any(f"look-alikes from the offline index {index}" in line for line in _log(window, run))
    view = window.training_view
    assert view.notice.isVisibleTo(view) and "remote kNN service at 127.0.0.1 failed" in view.notice.text()


def test_remote_knn_off_opens_no_socket(
    open_window, qtbot, service: FakeService, index: Path, dreambooth: Path, request: pytest.FixtureRequest
) -> None:
    window = open_window(**LOOK_ALIKES)
    settings = AppSettings(
        device="cpu", index_folder=str(index), remote_knn=False, remote_knn_url=service.url + "/knn-service"
    )
    assert window.training.options(settings).remote_knn_url is None
    opened = request.getfixturevalue("no_sockets")  # only now: the fake service and the window have their sockets
    run = _train(window, qtbot, dreambooth, settings)
    assert opened == [] and service.bodies == [] and service.downloads == []
    assert any(f"look-alikes from the offline index {index}" in line for line in _log(window, run))


def test_settings_refuse_the_remote_service_without_an_offline_index(open_window) -> None:
    view = open_window().settings_view
    view.remote.setChecked(True)
    view.remote_url.setText("https://knn.example.org/knn-service")
    view.index.clear()
    view.save()
    assert "needs an offline index" in view.saved.text() and not view.path.exists()
