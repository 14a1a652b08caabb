"""Remote kNN reaches only public addresses, in any spelling, and connects to the address it checked.

No test here needs a network: host names are answered by an injected resolver, and the one live server
listens on 127.0.0.1 behind the test name ``knn.test`` (TLS with a test CA in ``data/``).
"""

from __future__ import annotations

import io
import ipaddress
import json
import socket
import ssl
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from engine.retrieval.addresses import AddressError, host_key, public_addresses, refusal
from engine.retrieval.remote_knn import (
    RemoteKnnClient,
    RemoteKnnError,
    RemoteKnnSettings,
    check_url,
    parse_response,
)

DATA = Path(__file__).parent / "data"
LAN_SERVICE = "192.168.1.20"
"""A self-hosted service on the user's network: its own host may be private, no other private host may."""

SHORTHANDS = ["127.1", "2130706433", "0x7f000001", "0177.0.0.1", "0", "10.1", "169.254.43518"]
OTHER_FORMS = [
    "0x7f.1",
    "127.0.0.1.",
    "0x",
    "[::1]",
    "[::ffff:127.0.0.1]",
    "[::ffff:7f00:1]",
    "[::127.0.0.1]",
    "[::ffff:0:a00:1]",
    "[64:ff9b::a9fe:a9fe]",
    "[64:ff9b:1::1]",
    "[2002:a9fe:a9fe::]",
    "[2001:0:4136:e378:8000:63bf:3fff:fdd2]",
    "[fe80::1%25eth0]",
    "[fc00::1]",
    "[fec0::1]",
    "[ff02::1]",
    "[::]",
    "100.64.0.1",
    "224.0.0.1",
    "240.0.0.1",
    "255.255.255.255",
    "192.168.0.1",
    "172.16.0.1",
    "192.0.2.1",
    "localhost",
    "LOCALHOST.",
    "printer.localhost",
    "1.2.3.256",
    "1.2.3.4.5",
    "09.1.1.1",
    "4294967296",
]
PRIVATE_NAMES = {
    "evil.example": ["10.0.0.5"],
    "mixed.example": ["93.184.216.34", "127.0.0.1"],
    "mapped.example": ["::ffff:169.254.169.254"],
    "ula.example": ["fd00::1"],
    "nat64.example": ["64:ff9b::7f00:1"],
    "cgnat.example": ["100.100.100.100"],
}


class Resolver:
    """A resolver from a table; each call is recorded. A list of answers is handed out one call at a time."""

    def __init__(self, table: dict[str, Any]) -> None:
        self.table = table
        self.calls: list[str] = []

    def __call__(self, host: str, port: int) -> list[str]:
        self.calls.append(host)
        answer = self.table[host]
        return answer.pop(0) if answer and isinstance(answer[0], list) else answer


@pytest.fixture
def connections(monkeypatch: pytest.MonkeyPatch) -> list[tuple[Any, ...]]:
    """Record (and refuse) every attempt to open a socket or look a name up through the system."""
    calls: list[tuple[Any, ...]] = []

    def refuse(*args: Any, **kwargs: Any) -> None:
        calls.append(args)
        raise OSError(f"test: no network ({args})")

    for name in ("socket", "create_connection", "getaddrinfo"):
        monkeypatch.setattr(socket, name, refuse)
    return calls


def _lan_client(resolver: Resolver | None = None) -> RemoteKnnClient:
    settings = RemoteKnnSettings(enabled=True, url=f"http://{LAN_SERVICE}:8080/knn-service", timeout_s=1.0)
    return RemoteKnnClient(settings, resolver or Resolver({}))


@pytest.mark.parametrize("host", SHORTHANDS + OTHER_FORMS)
def test_every_spelling_of_a_non_public_address_is_refused(host: str, connections: list[Any]) -> None:
    url = f"http://{host}:8080/a.jpg"
    with pytest.raises(RemoteKnnError, match=r"refusing|IPv4|IPv6"):
        check_url(url, allowed_host=LAN_SERVICE)
    body = json.dumps(
        [{"url": url, "similarity": 0.5}, {"url": "https://images.example.org/a.jpg", "similarity": 0.4}]
    ).encode()
    results, dropped = parse_response(body, 2, LAN_SERVICE)
    assert dropped == 1 and [r.url for r in results] == ["https://images.example.org/a.jpg"]
    resolver = Resolver({})
    with pytest.raises(RemoteKnnError, match=r"refusing|IPv4|IPv6"):
        _lan_client(resolver).download(url)
    assert connections == [] and resolver.calls == []


def test_the_shorthands_name_the_address_they_mean() -> None:
    meant = ["127.0.0.1", "127.0.0.1", "127.0.0.1", "127.0.0.1", "0.0.0.0", "10.0.0.1", "169.254.169.254"]
    assert [host_key(host) for host in SHORTHANDS] == meant
    for host in SHORTHANDS:
        with pytest.raises(AddressError, match=r"\(" + host_key(host).replace(".", r"\.") + ": "):
            public_addresses(host, 80, Resolver({}))


@pytest.mark.parametrize(("name", "answer"), PRIVATE_NAMES.items())
def test_a_name_is_refused_if_any_address_it_resolves_to_is_not_public(
    name: str, answer: list[str], connections: list[Any]
) -> None:
    resolver = Resolver({name: answer})
    with pytest.raises(RemoteKnnError, match=f"refusing to fetch from {name}: it resolves to"):
        _lan_client(resolver).download(f"https://{name}/a.jpg")
    assert connections == [] and resolver.calls == [name]


def test_public_addresses_pass() -> None:
    for address in ("93.184.216.34", "8.8.8.8", "2606:4700::1111", "2a00:1450:4001:80b::200e"):
        assert refusal(ipaddress.ip_address(address)) is None
    assert public_addresses("images.example.org", 443, Resolver({"images.example.org": ["93.184.216.34"]})) == [
        ipaddress.ip_address("93.184.216.34")
    ]
    assert check_url("https://images.example.org/a.jpg") and check_url("http://8.8.8.8/a.jpg")


def test_the_connection_goes_to_the_checked_address_without_a_second_lookup(
    connections: list[Any],
) -> None:
    """A name that answers a public address, then a private one (DNS rebinding): the one lookup is checked and
    the socket is opened to exactly that address, so the second answer is never asked for."""
    resolver = Resolver({"rebind.example": [["93.184.216.34"], ["127.0.0.1"]]})
    with pytest.raises(RemoteKnnError, match=r"cannot reach rebind\.example"):
        _lan_client(resolver).download("http://rebind.example:8080/a.jpg")
    assert resolver.calls == ["rebind.example"]
    assert connections == [(("93.184.216.34", 8080), 1.0)]


def _png() -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.full((32, 32, 3), 200, dtype=np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


class TlsService:
    """A clip-retrieval-like HTTPS service on 127.0.0.1 with a certificate for ``knn.test``; it records the
    TLS server names and Host headers it is asked for."""

    def __init__(self) -> None:
        self.server_names: list[str | None] = []
        self.hosts: list[str] = []
        self.image = _png()
        service = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _reply(self, status: int, body: bytes = b"", kind: str = "image/png", location: str = "") -> None:
                service.hosts.append(self.headers["Host"])
                self.send_response(status)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                if location:
                    self.send_header("Location", location)
                self.end_headers()
                self.wfile.write(body)

            def do_POST(self) -> None:
                self.rfile.read(int(self.headers["Content-Length"]))
                answer = [{"url": f"{service.url}/img/a.png", "caption": "a", "similarity": 0.5, "id": 1}]
                self._reply(200, json.dumps(answer).encode(), "application/json")

            def do_GET(self) -> None:
                if self.path == "/img/a.png":
                    self._reply(200, service.image)
                elif self.path.startswith("/to/"):
                    self._reply(302, location=self.path.removeprefix("/to/").replace("PORT", str(service.port)))
                else:
                    self._reply(404, kind="text/plain")

        tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        tls.load_cert_chain(DATA / "knn-test-server.pem")
        tls.sni_callback = lambda _sock, name, _context: self.server_names.append(name)
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.server.socket = tls.wrap_socket(self.server.socket, server_side=True)
        self.port = self.server.server_address[1]
        self.url = f"https://knn.test:{self.port}"
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)


@pytest.fixture
def tls_service(monkeypatch: pytest.MonkeyPatch) -> Iterator[TlsService]:
    monkeypatch.setenv("SSL_CERT_FILE", str(DATA / "knn-test-ca.pem"))
    service = TlsService()
    service.thread.start()
    yield service
    service.server.shutdown()
    service.server.server_close()


def test_https_keeps_the_name_for_sni_and_host_while_connecting_to_the_pinned_address(
    tls_service: TlsService, monkeypatch: pytest.MonkeyPatch
) -> None:
    looked_up: list[str] = []
    system_getaddrinfo = socket.getaddrinfo

    def numeric_only(host: Any, *args: Any, **kwargs: Any) -> Any:
        looked_up.append(host)
        ipaddress.ip_address(host)  # a name here would be a second lookup
        return system_getaddrinfo(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", numeric_only)
    resolver = Resolver({"knn.test": ["127.0.0.1"], "evil.example": ["10.0.0.5"]})
    client = RemoteKnnClient(
        RemoteKnnSettings(enabled=True, url=f"{tls_service.url}/knn-service", timeout_s=5.0), resolver
    )
    (result,), dropped = client.query(np.ones(4, dtype=np.float32) / 2, 1)
    data, image = client.download(result.url)
    assert dropped == 0 and data == tls_service.image and image.size == (32, 32)
    assert set(tls_service.server_names) == {"knn.test"}
    assert set(tls_service.hosts) == {f"knn.test:{tls_service.port}"}
    assert resolver.calls == ["knn.test"] and set(looked_up) == {"127.0.0.1"}

    served = len(tls_service.hosts)
    for target, reason in (
        ("http://evil.example/a.png", "refusing to fetch from evil.example: it resolves to 10.0.0.5"),
        ("https://0x7f000001:PORT/img/a.png", r"non-public address 0x7f000001 \(127\.0\.0\.1: loopback\)"),
        ("https://127.1:PORT/img/a.png", r"non-public address 127\.1 \(127\.0\.0\.1: loopback\)"),
        ("file:///etc/passwd", "only http and https"),
    ):
        with pytest.raises(RemoteKnnError, match=reason):
            client.download(f"{tls_service.url}/to/{target}")
    assert len(tls_service.hosts) == served + 4, "only the redirecting service was reached"
    assert resolver.calls == ["knn.test", "evil.example"]
