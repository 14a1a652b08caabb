"""Opt-in remote kNN over a clip-retrieval-compatible service, with the offline index as the fallback.

Off by default: with ``RemoteKnnSettings(enabled=False)`` nothing here opens a socket. When the user enables it
and sets the URL, the query sent is the concept's normalised mean CLIP embedding (a list of floats), never a
photo. Responses are validated (types, ranges, counts, http/https URLs only); downloads are streamed with a
running byte cap, must decode as images, and go through the same checks on redirects. Every connection is made
to an address that was resolved and checked for it (only the service's own host may be a local or private
address), never through a proxy and never after a second lookup. Any failure of the service falls back to the
offline index with a warning the caller shows.
"""

from __future__ import annotations

import functools
import hashlib
import http.client
import io
import json
import math
import socket
import ssl
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from PIL import Image

from engine.errors import EngineError, ImageError
from engine.model.images import open_image
from engine.retrieval.addresses import (
    AddressError,
    IPAddress,
    Resolver,
    check_host,
    host_key,
    public_addresses,
    resolve,
    system_resolver,
)
from engine.retrieval.index import EmbeddingIndex, Neighbour, Neighbours
from engine.retrieval.vector_search import Backend

if TYPE_CHECKING:
    from engine.retrieval.embedder import Embedder

USER_AGENT = "Familiar (clip-retrieval client)"
MAX_URL_CHARS = 2048
MAX_CAPTION_CHARS = 1000
SIMILARITY_SLACK = 1e-3
BLOCK = 64 * 1024


class RemoteKnnError(EngineError):
    """The remote service failed or answered something unusable."""


@dataclass(frozen=True)
class RemoteKnnSettings:
    """The user's remote kNN choice. Disabled unless they turn it on and give the service's URL."""

    enabled: bool = False
    url: str | None = None
    """The service endpoint, e.g. ``https://example.org/knn-service``."""
    indice_name: str = "laion5B-L-14"
    timeout_s: float = 10.0
    """Connect and per-read timeout."""
    total_timeout_s: float = 60.0
    """Wall-clock limit for one request or download, however slowly the bytes trickle in."""
    max_results: int = 5000
    max_response_bytes: int = 16 * 2**20
    max_download_bytes: int = 20 * 2**20
    download_workers: int = 8


@dataclass(frozen=True)
class RemoteResult:
    url: str
    caption: str
    similarity: float
    id: int | str | None


@dataclass
class NeighbourSearch:
    """Neighbours and where they came from; ``warnings`` are for the user (e.g. the fallback notice)."""

    neighbours: Neighbours
    source: Literal["offline", "remote"]
    warnings: list[str] = field(default_factory=list)


def _host(url: str) -> str:
    return (urllib.parse.urlsplit(url).hostname or "").lower()


def _same_host(host: str, allowed_host: str | None) -> bool:
    """Whether ``host`` is ``allowed_host`` in any spelling (``127.1`` is ``127.0.0.1``)."""
    return allowed_host is not None and host_key(host) == host_key(allowed_host)


def check_url(url: str, allowed_host: str | None = None) -> str:
    """Return ``url`` if it is an http(s) URL that may be fetched, else raise RemoteKnnError.

    ``localhost`` names and IP literals in any spelling (``127.1``, ``2130706433``, ``0x7f000001``,
    ``[::ffff:127.0.0.1]``, ...) that denote a loopback, private, link-local or other non-public address are
    refused unless they are ``allowed_host`` (the service's own host), so a service cannot point the client at
    the user's network. Host names are judged when they are connected to, on every address they resolve to.
    """
    if not isinstance(url, str) or len(url) > MAX_URL_CHARS:
        raise RemoteKnnError("URL is not a string of reasonable length")
    try:
        parts = urllib.parse.urlsplit(url)
        host = parts.hostname
    except ValueError as exc:
        raise RemoteKnnError(f"malformed URL {url[:80]!r}: {exc}") from None
    if parts.scheme not in ("http", "https") or not host:
        raise RemoteKnnError(f"only http and https URLs are fetched, not {url[:80]!r}")
    try:
        if not _same_host(host, allowed_host):
            check_host(host)
    except AddressError as exc:
        raise RemoteKnnError(str(exc)) from None
    return url


Pin = Callable[[str, int], list[IPAddress]]
"""``(host, port) -> the checked addresses to connect to``."""


def _connect(addresses: list[IPAddress], port: int, timeout: float | None) -> socket.socket:
    """A TCP connection to the first of ``addresses`` that answers; numeric addresses need no lookup."""
    failure: OSError | None = None
    for address in addresses:
        try:
            return socket.create_connection((str(address), port), timeout)
        except OSError as exc:
            failure = exc
    raise failure or OSError("no address to connect to")


class _PinnedHTTPConnection(http.client.HTTPConnection):
    """Connects to the addresses ``pin`` checked for the host; the Host header still names the host."""

    def __init__(self, host: str, *, pin: Pin, **kwargs: Any) -> None:
        super().__init__(host, **kwargs)
        self.pin = pin

    def connect(self) -> None:
        self.sock = _connect(self.pin(self.host, self.port), self.port, self.timeout)


class _PinnedHTTPSConnection(http.client.HTTPSConnection):
    """As ``_PinnedHTTPConnection``, with TLS whose SNI and certificate check use the host's name."""

    def __init__(self, host: str, *, pin: Pin, context: ssl.SSLContext, **kwargs: Any) -> None:
        super().__init__(host, context=context, **kwargs)
        self.pin = pin
        self.tls = context

    def connect(self) -> None:
        raw = _connect(self.pin(self.host, self.port), self.port, self.timeout)
        try:
            self.sock = self.tls.wrap_socket(raw, server_hostname=self.host)
        except BaseException:
            raw.close()
            raise


class _PinnedHTTPHandler(urllib.request.HTTPHandler):
    def __init__(self, pin: Pin) -> None:
        super().__init__()
        self.pin = pin

    def http_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        return self.do_open(functools.partial(_PinnedHTTPConnection, pin=self.pin), req)


class _PinnedHTTPSHandler(urllib.request.HTTPSHandler):
    def __init__(self, pin: Pin, tls: ssl.SSLContext) -> None:
        super().__init__(context=tls)
        self.pin = pin
        self.tls = tls

    def https_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        return self.do_open(functools.partial(_PinnedHTTPSConnection, pin=self.pin, context=self.tls), req)


class _CheckedRedirects(urllib.request.HTTPRedirectHandler):
    """Follows a redirect only to a URL that ``check_url`` accepts (its host is checked again on connecting)."""

    def __init__(self, allowed_host: str | None) -> None:
        self.allowed_host = allowed_host

    def http_error_302(self, req: urllib.request.Request, fp: Any, code: int, msg: str, headers: Any) -> Any:
        target = headers.get("location") or headers.get("uri")
        if target:
            check_url(urllib.parse.urljoin(req.full_url, target), self.allowed_host)
        return super().http_error_302(req, fp, code, msg, headers)

    http_error_301 = http_error_303 = http_error_307 = http_error_308 = http_error_302


def _read_capped(response: http.client.HTTPResponse, cap: int, deadline: float, what: str) -> bytes:
    """The body, read in blocks with a running count: refused past ``cap`` bytes or past ``deadline``."""
    declared = response.headers.get("Content-Length")
    if declared is not None and declared.strip().isdigit() and int(declared) > cap:
        raise RemoteKnnError(f"{what} declares {int(declared)} bytes, over the {cap}-byte limit")
    chunks, total = [], 0
    while True:
        if time.monotonic() > deadline:
            raise RemoteKnnError(f"{what} took too long")
        block = response.read(BLOCK)
        if not block:
            return b"".join(chunks)
        total += len(block)
        if total > cap:
            raise RemoteKnnError(f"{what} is over the {cap}-byte limit; download refused")
        chunks.append(block)


def _validate_result(item: Any, service_host: str | None) -> RemoteResult:
    if not isinstance(item, dict):
        raise RemoteKnnError("result is not an object")
    url = check_url(item.get("url"), service_host)
    caption = item.get("caption")
    if caption is None:
        caption = ""
    if not isinstance(caption, str):
        raise RemoteKnnError("caption is not a string")
    similarity = item.get("similarity")
    if isinstance(similarity, bool) or not isinstance(similarity, int | float) or not math.isfinite(similarity):
        raise RemoteKnnError("similarity is not a finite number")
    if abs(similarity) > 1 + SIMILARITY_SLACK:
        raise RemoteKnnError(f"similarity {similarity} is outside [-1, 1]")
    identifier = item.get("id")
    if isinstance(identifier, bool) or not (identifier is None or isinstance(identifier, int | str)):
        raise RemoteKnnError("id is not an integer or string")
    if isinstance(identifier, str) and len(identifier) > 200:
        raise RemoteKnnError("id is too long")
    caption = "".join(ch for ch in caption[:MAX_CAPTION_CHARS] if ch.isprintable())
    return RemoteResult(url, caption, float(similarity), identifier)


def parse_response(body: bytes, num_images: int, service_host: str | None = None) -> tuple[list[RemoteResult], int]:
    """Validated results of a clip-retrieval response, best first, and how many malformed items were dropped.

    Result URLs must pass ``check_url`` (only ``service_host`` may be a local or private address).
    """
    try:
        data = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise RemoteKnnError("the service did not answer with JSON") from None
    if isinstance(data, dict) and "error" in data:
        raise RemoteKnnError(f"the service reported an error: {str(data['error'])[:200]}")
    if not isinstance(data, list):
        raise RemoteKnnError(f"the service answered a JSON {type(data).__name__}, not a list of results")
    if len(data) > num_images:
        raise RemoteKnnError(f"the service sent {len(data)} results for {num_images} asked")
    results, dropped = [], 0
    for item in data:
        try:
            results.append(_validate_result(item, service_host))
        except RemoteKnnError:
            dropped += 1
    if data and not results:
        raise RemoteKnnError(f"none of the service's {len(data)} results is valid")
    results.sort(key=lambda result: -result.similarity)
    return results, dropped


class RemoteKnnClient:
    """Talks to one clip-retrieval-compatible service. Constructing it with the service off is an error.

    ``resolver`` answers host names (default: the system's). The service's host is resolved once and may be
    any address, since the user chose it; every other host must resolve to public addresses only.
    """

    def __init__(self, settings: RemoteKnnSettings, resolver: Resolver = system_resolver) -> None:
        if not settings.enabled:
            raise EngineError("remote kNN is off; enable it in the settings and give the service's URL first")
        if not settings.url:
            raise EngineError("remote kNN is on but has no URL; set the service's URL (e.g. .../knn-service)")
        parts = urllib.parse.urlsplit(settings.url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise EngineError(f"the remote kNN URL must be an http or https URL, not {settings.url!r}")
        if settings.timeout_s <= 0 or settings.total_timeout_s <= 0 or settings.max_results < 1:
            raise EngineError("remote kNN timeouts and result limit must be positive")
        self.settings = settings
        self.service_host = _host(settings.url)
        self.resolver = resolver
        self._service_addresses: list[IPAddress] | None = None
        self._lock = threading.Lock()
        self._tls = ssl.create_default_context()

    def _pin(self, host: str, port: int) -> list[IPAddress]:
        """The addresses a connection to ``host`` may use: the service's, resolved once for this client (a
        later lookup cannot move it), or those of a host that resolves to public addresses only."""
        try:
            if not _same_host(host, self.service_host):
                return public_addresses(host, port, self.resolver)
            with self._lock:
                if self._service_addresses is None:
                    self._service_addresses = resolve(host, port, self.resolver)
                return self._service_addresses
        except AddressError as exc:
            raise RemoteKnnError(str(exc)) from None

    def _open(self, request: urllib.request.Request) -> http.client.HTTPResponse:
        """Open ``request`` over pinned, checked connections only: no proxies, no file/ftp/data URLs."""
        opener = urllib.request.OpenerDirector()
        for handler in (
            _PinnedHTTPHandler(self._pin),
            _PinnedHTTPSHandler(self._pin, self._tls),
            urllib.request.HTTPDefaultErrorHandler(),
            _CheckedRedirects(self.service_host),
            urllib.request.HTTPErrorProcessor(),
            urllib.request.UnknownHandler(),
        ):
            opener.add_handler(handler)
        try:
            return opener.open(request, timeout=self.settings.timeout_s)
        except RemoteKnnError:
            raise
        except urllib.error.HTTPError as exc:
            exc.close()
            raise RemoteKnnError(f"HTTP {exc.code} from {_host(request.full_url)}") from None
        except (urllib.error.URLError, OSError, ValueError, http.client.HTTPException) as exc:
            reason = getattr(exc, "reason", exc)
            raise RemoteKnnError(f"cannot reach {_host(request.full_url)}: {reason}") from None

    def query(self, embedding: np.ndarray, num_images: int) -> tuple[list[RemoteResult], int]:
        """Ask for the ``num_images`` nearest images to ``embedding``; returns (results, dropped malformed)."""
        vector = np.asarray(embedding, dtype=np.float32).reshape(-1)
        if not np.isfinite(vector).all():
            raise EngineError("the query embedding has NaN or infinite values")
        num_images = min(int(num_images), self.settings.max_results)
        payload = {
            "embedding_input": [float(x) for x in vector],
            "modality": "image",
            "num_images": num_images,
            "indice_name": self.settings.indice_name,
            "use_safety_model": True,
            "use_violence_detector": True,
            "deduplicate": True,
        }
        request = urllib.request.Request(
            self.settings.url or "",
            data=json.dumps(payload).encode(),
            method="POST",
            headers={"Content-Type": "application/json", "Accept": "application/json", "User-Agent": USER_AGENT},
        )
        deadline = time.monotonic() + self.settings.total_timeout_s
        try:
            with self._open(request) as response:
                body = _read_capped(response, self.settings.max_response_bytes, deadline, "the service's answer")
        except (OSError, http.client.HTTPException) as exc:
            raise RemoteKnnError(f"the service's answer broke off ({type(exc).__name__}: {exc})") from None
        return parse_response(body, num_images, self.service_host)

    def download(self, url: str) -> tuple[bytes, Image.Image]:
        """An image's bytes and decoded picture, refusing oversized, non-image or disallowed downloads."""
        check_url(url, self.service_host)
        request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT, "Accept": "image/*"})
        deadline = time.monotonic() + self.settings.total_timeout_s
        try:
            with self._open(request) as response:
                kind = (response.headers.get("Content-Type") or "").lower()
                if kind.startswith("text/") or any(word in kind for word in ("html", "json", "xml")):
                    raise RemoteKnnError(f"{url[:80]} is {kind.split(';')[0]}, not an image")
                data = _read_capped(response, self.settings.max_download_bytes, deadline, url[:80])
        except (OSError, http.client.HTTPException) as exc:
            raise RemoteKnnError(f"{url[:80]} broke off ({type(exc).__name__}: {exc})") from None
        try:
            return data, open_image(data)
        except ImageError as exc:
            raise RemoteKnnError(f"{url[:80]}: {exc}") from None


def _try_download(client: RemoteKnnClient, result: RemoteResult) -> tuple[RemoteResult, bytes, Image.Image] | None:
    try:
        data, image = client.download(result.url)
    except RemoteKnnError:
        return None
    return result, data, image


def _save(folder: Path, data: bytes, image_format: str | None) -> tuple[Path, str]:
    digest = hashlib.sha256(data).hexdigest()
    path = folder / f"{digest}.{(image_format or 'img').lower()}"
    if not path.exists():
        temporary = path.with_suffix(".part")
        temporary.write_bytes(data)
        temporary.replace(path)
    return path, digest


def remote_neighbours(
    client: RemoteKnnClient, query: np.ndarray, k: int, embedder: Embedder, download_dir: Path
) -> tuple[Neighbours, list[str]]:
    """Query the service, download and check the images into ``download_dir``, and embed them locally.

    Similarities are recomputed from the downloaded pixels (a URL's content may have changed since it was
    indexed), and the results are re-ranked by them.
    """
    results, dropped = client.query(query, k)
    download_dir.mkdir(parents=True, exist_ok=True)
    items: list[Neighbour] = []
    embeddings: list[np.ndarray] = []
    window = max(1, client.settings.download_workers) * 4
    with ThreadPoolExecutor(max_workers=max(1, client.settings.download_workers)) as pool:
        for start in range(0, len(results), window):
            fetched = [
                got
                for got in pool.map(lambda r: _try_download(client, r), results[start : start + window])
                if got is not None
            ]
            if not fetched:
                continue
            vectors = embedder.embed([image for _, _, image in fetched])
            for (result, data, _), vector in zip(fetched, vectors, strict=True):
                path, digest = _save(download_dir, data, Image.open(io.BytesIO(data)).format)
                items.append(Neighbour(str(path), result.caption, digest, float(vector @ query), url=result.url))
            embeddings.append(vectors)
    if not items:
        raise RemoteKnnError(f"none of the {len(results)} images the service listed could be downloaded")
    notes = []
    if dropped or len(items) < len(results):
        notes.append(
            f"remote kNN: {len(items)} of {len(results) + dropped} results used "
            f"({dropped} malformed, {len(results) - len(items)} not downloadable)"
        )
    order = np.argsort([-item.similarity for item in items], kind="stable")
    return Neighbours([items[i] for i in order], np.concatenate(embeddings)[order]), notes


def find_neighbours(
    query: np.ndarray,
    k: int,
    index: EmbeddingIndex | None,
    settings: RemoteKnnSettings | None = None,
    embedder: Embedder | None = None,
    download_dir: Path | None = None,
    backend: Backend = "auto",
) -> NeighbourSearch:
    """The ``k`` nearest images: from the remote service when it is enabled and works, else the offline index.

    With the service disabled (the default) this touches no network at all.
    """
    query = np.asarray(query, dtype=np.float32).reshape(-1)
    settings = settings or RemoteKnnSettings()
    if not settings.enabled:
        if index is None:
            raise EngineError("no offline index to search; build one with `familiar index build`")
        return NeighbourSearch(index.neighbours(query, k, backend), "offline")
    if embedder is None or download_dir is None:
        raise EngineError("remote kNN needs the local embedder and a download folder to check the images")
    client = RemoteKnnClient(settings)
    try:
        neighbours, notes = remote_neighbours(client, query, k, embedder, download_dir)
        return NeighbourSearch(neighbours, "remote", notes)
    except RemoteKnnError as exc:
        if index is None:
            raise EngineError(f"the remote kNN service failed ({exc}) and there is no offline index") from None
        warning = (
            f"the remote kNN service at {_host(settings.url or '')} failed ({exc}); "
            f"using the offline index {index.path} instead"
        )
        return NeighbourSearch(index.neighbours(query, k, backend), "offline", [warning])
