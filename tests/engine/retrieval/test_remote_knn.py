"""The remote kNN client against real HTTP servers on 127.0.0.1: protocol, validation, limits and fallback."""

from __future__ import annotations

import io
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from engine.errors import EngineError
from engine.retrieval.embedder import Embedder, load_embedder
from engine.retrieval.index import EmbeddingIndex, build_index
from engine.retrieval.plan import PlanSettings, plan_concept, read_concept_photos
from engine.retrieval.remote_knn import (
    RemoteKnnClient,
    RemoteKnnError,
    RemoteKnnSettings,
    check_url,
    find_neighbours,
    parse_response,
)

HUGE_BYTES = 50 * 2**20


def _png(seed: int, size: int = 40) -> bytes:
    buffer = io.BytesIO()
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


class Service:
    """A clip-retrieval-like service whose behaviour a test switches with ``mode``."""

    def __init__(self) -> None:
        self.mode = "ok"
        self.results: list[dict[str, Any]] = []
        self.bodies: list[dict[str, Any]] = []
        self.huge_sent = 0
        self.huge_done = threading.Event()
        self.release = threading.Event()
        self.files = {"/img/a.png": _png(1), "/img/b.png": _png(2), "/img/c.png": _png(3)}
        service = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _send(self, status: int, body: bytes, kind: str, length: int | None = None) -> None:
                self.send_response(status)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body) if length is None else length))
                self.end_headers()
                self.wfile.write(body)

            def do_POST(self) -> None:
                service.bodies.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
                if service.mode == "hang":
                    service.release.wait(20)
                elif service.mode == "garbage":
                    self._send(200, b"<html>Service Unavailable</html>", "text/html")
                elif service.mode == "error":
                    self._send(500, b"{}", "application/json")
                else:
                    self._send(200, json.dumps(service.results).encode(), "application/json")

            def do_GET(self) -> None:
                if self.path in service.files:
                    self._send(200, service.files[self.path], "image/png")
                elif self.path == "/page":
                    self._send(200, b"<html>hello</html>", "text/html; charset=utf-8")
                elif self.path == "/not-an-image":
                    self._send(200, b"\x89PNG but not really" * 10, "image/png")
                elif self.path == "/liar":
                    self._send(200, b"tiny", "image/png", length=10**9)
                elif self.path == "/redirect-file":
                    self.send_response(302)
                    self.send_header("Location", "file:///etc/passwd")
                    self.end_headers()
                elif self.path == "/huge":
                    self.send_response(200)
                    self.send_header("Content-Type", "image/png")
                    self.end_headers()
                    try:
                        while service.huge_sent < HUGE_BYTES:
                            self.wfile.write(b"\0" * 65536)
                            service.huge_sent += 65536
                    except OSError:
                        pass
                    finally:
                        service.huge_done.set()
                else:
                    self._send(404, b"", "text/plain")

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)

    def result(self, path: str, similarity: float, **extra: Any) -> dict[str, Any]:
        return {
            "url": self.url + path,
            "caption": f"image {path}",
            "similarity": similarity,
            "id": len(self.results),
            **extra,
        }


@pytest.fixture(autouse=True)
def no_proxies(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def service() -> Iterator[Service]:
    server = Service()
    server.thread.start()
    yield server
    server.release.set()
    server.server.shutdown()
    server.server.server_close()


@pytest.fixture(scope="module")
def embedder() -> Embedder:
    return load_embedder("demo")


@pytest.fixture(scope="module")
def offline(dreambooth: Path, embedder: Embedder, tmp_path_factory: pytest.TempPathFactory) -> EmbeddingIndex:
    path = tmp_path_factory.mktemp("offline") / "index"
    build_index(dreambooth / "cat", path, embedder)
    return EmbeddingIndex(path)


@pytest.fixture(scope="module")
def query(dreambooth: Path, embedder: Embedder) -> np.ndarray:
    return embedder.embed([Image.open(dreambooth / "dog" / "00.jpg").convert("RGB")])[0]


def _settings(service: Service, **overrides: Any) -> RemoteKnnSettings:
    return RemoteKnnSettings(enabled=True, url=service.url + "/knn-service", timeout_s=2.0, **overrides)


def test_remote_search_sends_the_embedding_only_and_checks_every_download(
    service: Service, offline: EmbeddingIndex, embedder: Embedder, query: np.ndarray, tmp_path: Path
) -> None:
    service.results = [
        service.result("/img/a.png", 0.9),
        service.result("/page", 0.85),
        service.result("/img/b.png", 0.8),
        service.result("/not-an-image", 0.75),
        service.result("/huge", 0.7),
        {"url": "ftp://example.org/x.png", "caption": "", "similarity": 0.6, "id": 9},
        service.result("/img/c.png", 0.5),
    ]
    found = find_neighbours(query, 10, offline, _settings(service, max_download_bytes=2**20), embedder, tmp_path)
    assert found.source == "remote", found.warnings

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
    assert body["modality"] == "image" and body["num_images"] == 10 and body["indice_name"] == "laion5B-L-14"
    np.testing.assert_allclose(body["embedding_input"], query, atol=1e-6)

    items = found.neighbours.items
    assert sorted(item.url for item in items) == [service.url + p for p in ("/img/a.png", "/img/b.png", "/img/c.png")]
    similarities = [item.similarity for item in items]
    assert similarities == sorted(similarities, reverse=True)
    for item, vector in zip(items, found.neighbours.embeddings, strict=True):
        saved = Path(item.source)
        assert saved.parent == tmp_path and saved.read_bytes() == service.files[item.url[len(service.url) :]]
        assert saved.name == f"{item.sha256}.png" and item.row is None
        assert item.similarity == pytest.approx(float(vector @ query), abs=1e-5)
    assert found.warnings == ["remote kNN: 3 of 7 results used (1 malformed, 3 not downloadable)"]


def test_a_service_that_answers_garbage_falls_back_to_the_offline_index(
    service: Service, offline: EmbeddingIndex, embedder: Embedder, query: np.ndarray, tmp_path: Path
) -> None:
    service.mode = "garbage"
    found = find_neighbours(query, 3, offline, _settings(service), embedder, tmp_path)
    assert found.source == "offline"
    assert [i.row for i in found.neighbours.items] == [i.row for i in offline.neighbours(query, 3).items]
    (warning,) = found.warnings
    assert "failed (the service did not answer with JSON)" in warning and str(offline.path) in warning


def test_a_service_error_falls_back_with_its_status(
    service: Service, offline: EmbeddingIndex, embedder: Embedder, query: np.ndarray, tmp_path: Path
) -> None:
    service.mode = "error"
    found = find_neighbours(query, 3, offline, _settings(service), embedder, tmp_path)
    assert found.source == "offline" and "HTTP 500" in found.warnings[0]


def test_a_hanging_service_times_out_and_falls_back(
    service: Service, offline: EmbeddingIndex, embedder: Embedder, query: np.ndarray, tmp_path: Path
) -> None:
    service.mode = "hang"
    started = time.monotonic()
    found = find_neighbours(
        query, 3, offline, RemoteKnnSettings(enabled=True, url=service.url, timeout_s=0.3), embedder, tmp_path
    )
    assert time.monotonic() - started < 5
    assert found.source == "offline" and "timed out" in found.warnings[0]


def test_no_offline_index_and_a_failing_service_is_an_error(
    service: Service, embedder: Embedder, query: np.ndarray, tmp_path: Path
) -> None:
    service.mode = "garbage"
    with pytest.raises(EngineError, match="no offline index"):
        find_neighbours(query, 3, None, _settings(service), embedder, tmp_path)


def test_a_huge_download_is_refused_without_reading_it_all(service: Service) -> None:
    client = RemoteKnnClient(_settings(service, max_download_bytes=2**20))
    with pytest.raises(RemoteKnnError, match="over the 1048576-byte limit; download refused"):
        client.download(service.url + "/huge")
    assert service.huge_done.wait(10)
    assert service.huge_sent < HUGE_BYTES
    with pytest.raises(RemoteKnnError, match="declares 1000000000 bytes"):
        client.download(service.url + "/liar")


@pytest.mark.parametrize(
    ("path", "reason"),
    [
        ("/page", "is text/html, not an image"),
        ("/not-an-image", "not an image in a format"),
        ("/redirect-file", "only http and https"),
        ("/missing", "HTTP 404"),
    ],
)
def test_downloads_must_be_images_over_http(service: Service, path: str, reason: str) -> None:
    with pytest.raises(RemoteKnnError, match=reason):
        RemoteKnnClient(_settings(service)).download(service.url + path)


def _valid(**changes: Any) -> dict[str, Any]:
    return {"url": "https://images.example.org/a.jpg", "caption": "a dog", "similarity": 0.5, "id": 1, **changes}


@pytest.mark.parametrize(
    "item",
    [
        _valid(url="file:///etc/passwd"),
        _valid(url="javascript:alert(1)"),
        _valid(url=None),
        _valid(url=42),
        _valid(url="https://x.org/" + "a" * 3000),
        _valid(url="http://192.168.1.1/a.jpg"),
        _valid(similarity=5.0),
        _valid(similarity=float("nan")),
        _valid(similarity="0.5"),
        _valid(similarity=True),
        _valid(caption=3),
        _valid(id=True),
        _valid(id=[1]),
        "not an object",
    ],
)
def test_malformed_results_are_dropped(item: Any) -> None:
    body = json.dumps([_valid(similarity=0.2), item, _valid(similarity=0.9)]).encode()
    results, dropped = parse_response(body, 3)
    assert dropped == 1 and [r.similarity for r in results] == [0.9, 0.2]


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"\xff\xfe", "did not answer with JSON"),
        (b'{"error": "indice not found"}', "reported an error: indice not found"),
        (b'{"results": []}', "JSON dict, not a list"),
        (json.dumps([_valid()] * 4).encode(), "sent 4 results for 3 asked"),
        (json.dumps([_valid(similarity=9)] * 2).encode(), "none of the service's 2 results is valid"),
    ],
)
def test_unusable_answers_are_errors(body: bytes, reason: str) -> None:
    with pytest.raises(RemoteKnnError, match=reason):
        parse_response(body, 3)


def test_results_keep_printable_captions_and_ids() -> None:
    (result,), dropped = parse_response(json.dumps([_valid(caption="a\ndog\x07", id="abc", similarity=1)]).encode(), 1)
    assert dropped == 0 and result.caption == "adog" and result.id == "abc" and result.similarity == 1.0


def test_private_and_local_addresses_are_refused_unless_they_are_the_service() -> None:
    for url in (
        "http://10.0.0.1/a.jpg",
        "http://127.0.0.1:9/a.jpg",
        "http://[::1]/a.jpg",
        "http://localhost/a",
        "http://169.254.169.254/latest/meta-data",
    ):
        with pytest.raises(RemoteKnnError, match="refusing"):
            check_url(url)
    assert check_url("http://127.0.0.1:9/a.jpg", allowed_host="127.0.0.1")
    assert check_url("https://images.example.org/a.jpg")


def test_with_the_service_off_no_socket_is_opened(
    no_sockets: list[Any],
    offline: EmbeddingIndex,
    embedder: Embedder,
    query: np.ndarray,
    dreambooth: Path,
    tmp_path: Path,
) -> None:
    found = find_neighbours(
        query, 3, offline, RemoteKnnSettings(url="https://knn.example.org/knn-service"), embedder, tmp_path
    )
    assert found.source == "offline" and found.warnings == [] and len(found.neighbours.items) == 3
    photos, embeddings = read_concept_photos(sorted((dreambooth / "dog").glob("*.jpg")), embedder)
    plan = plan_concept("dog", photos, embeddings, offline, settings=PlanSettings(top_n=3, num_hard_negatives=1))
    assert plan.source == "offline" and plan.soft_positives
    with pytest.raises(EngineError, match="remote kNN is off"):
        RemoteKnnClient(RemoteKnnSettings())
    with pytest.raises(EngineError, match="has no URL"):
        RemoteKnnClient(RemoteKnnSettings(enabled=True))
    with pytest.raises(EngineError, match="must be an http or https URL"):
        RemoteKnnClient(RemoteKnnSettings(enabled=True, url="ftp://knn.example.org/"))
    with pytest.raises(RemoteKnnError, match="non-public address"):
        RemoteKnnClient(RemoteKnnSettings(enabled=True, url="https://knn.example.org/")).download(
            "http://192.168.1.1/x.jpg"
        )
    assert no_sockets == []
