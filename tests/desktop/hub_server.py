"""A small stand-in for the Hugging Face hub on 127.0.0.1, serving what `huggingface_hub` asks of a model repository:
`GET /api/models/REPO/revision/REV?blobs=True` (the file list with sizes, git blob ids and LFS sha256) and
`GET|HEAD /REPO/resolve/REV/PATH` (the file, with X-Repo-Commit, ETag, X-Linked-Etag/-Size and byte ranges).

Faults for tests: `drop_after[(repo, path)] = n` sends n bytes of that file, drops the connection and leaves the
server down (503) until `down` is cleared; `tamper[(repo, path)] = data` serves other bytes than the listing
publishes. Every request is logged as (method, path, Range header)."""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import unquote, urlsplit


@dataclass
class Repo:
    files: dict[str, bytes]
    lfs: set[str]
    """Paths stored with Git LFS: listed with their sha256, served with X-Linked-Etag."""
    licence: str | None = None

    def commit(self, repo_id: str) -> str:
        return hashlib.sha1(repo_id.encode()).hexdigest()


def git_blob_id(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@dataclass
class FakeHub:
    repos: dict[str, Repo]
    requests: list[tuple[str, str, str | None]] = field(default_factory=list)
    drop_after: dict[tuple[str, str], int] = field(default_factory=dict)
    tamper: dict[tuple[str, str], bytes] = field(default_factory=dict)
    down: bool = False
    url: str = ""

    def info(self, repo_id: str) -> dict[str, object]:
        repo = self.repos[repo_id]
        siblings = []
        for path, data in repo.files.items():
            entry: dict[str, object] = {"rfilename": path, "size": len(data), "blobId": git_blob_id(data)}
            if path in repo.lfs:
                entry["lfs"] = {"size": len(data), "sha256": hashlib.sha256(data).hexdigest(), "pointerSize": 134}
            siblings.append(entry)
        card = {"license": repo.licence} if repo.licence else {}
        return {"id": repo_id, "sha": repo.commit(repo_id), "siblings": siblings, "cardData": card}

    def downloads(self, path_end: str) -> list[tuple[str, str | None]]:
        """(method, Range header) of every request for a file whose URL ends with `path_end`."""
        return [(method, ranged) for method, path, ranged in self.requests if path.endswith(path_end)]


class _Handler(BaseHTTPRequestHandler):
    hub: FakeHub
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: object) -> None:
        """Quiet: tests read the requests from `FakeHub.requests`, not from a log on stderr."""

    def do_HEAD(self) -> None:
        self._serve(head=True)

    def do_GET(self) -> None:
        self._serve(head=False)

    def _serve(self, head: bool) -> None:
        hub = self.hub
        path = unquote(urlsplit(self.path).path)
        hub.requests.append((self.command, path, self.headers.get("Range")))
        if hub.down:
            self._reply(503, b"down for the test", {})
            return
        parts = path.strip("/").split("/")
        if parts[:2] == ["api", "models"]:
            repo_id = "/".join(parts[2:4])
            if repo_id not in hub.repos:
                self._reply(404, b'{"error": "Repository not found"}', {"X-Error-Code": "RepoNotFound"})
                return
            self._reply(200, json.dumps(hub.info(repo_id)).encode(), {"Content-Type": "application/json"})
            return
        if len(parts) < 5 or parts[2] != "resolve" or "/".join(parts[:2]) not in hub.repos:
            self._reply(404, b"not found", {"X-Error-Code": "EntryNotFound"})
            return
        repo_id, file = "/".join(parts[:2]), "/".join(parts[4:])
        repo = hub.repos[repo_id]
        if file not in repo.files:
            self._reply(404, b"not found", {"X-Error-Code": "EntryNotFound"})
            return
        published = repo.files[file]
        data = hub.tamper.get((repo_id, file), published)
        headers = {"X-Repo-Commit": repo.commit(repo_id), "Accept-Ranges": "bytes"}
        if file in repo.lfs:
            sha = hashlib.sha256(published).hexdigest()
            headers.update({"ETag": f'"{sha}"', "X-Linked-Etag": f'"{sha}"', "X-Linked-Size": str(len(published))})
        else:
            headers["ETag"] = f'"{git_blob_id(published)}"'
        start, status = 0, 200
        ranged = self.headers.get("Range")
        if ranged and ranged.startswith("bytes="):
            start, status = int(ranged.removeprefix("bytes=").split("-")[0]), 206
            headers["Content-Range"] = f"bytes {start}-{len(data) - 1}/{len(data)}"
        body = data[start:]
        if head:
            self._reply(status, b"", {**headers, "Content-Length": str(len(body))}, send_body=False)
            return
        cut = hub.drop_after.pop((repo_id, file), None)
        if cut is not None:
            self.send_response(status)
            for name, value in {**headers, "Content-Length": str(len(body))}.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(body[:cut])
            self.wfile.flush()
            hub.down = True
            self.close_connection = True
            return
        self._reply(status, body, headers)

    def _reply(self, status: int, body: bytes, headers: dict[str, str], send_body: bool = True) -> None:
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        if "Content-Length" not in headers:
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if send_body:
            self.wfile.write(body)


@contextmanager
def serve(hub: FakeHub) -> Iterator[FakeHub]:
    """Run `hub` on a free port of 127.0.0.1 for the block; `hub.url` is its endpoint."""
    handler = type("Handler", (_Handler,), {"hub": hub})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    hub.url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        yield hub
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def tiny_model_hub() -> FakeHub:
    """The demo model's files as a repository in the Hugging Face layout (without its demo marker and its converted
    decoder), and an original release holding a VQGAN checkpoint saved with `torch.save` of a plain state dict.
    Files Familiar must not fetch (a pickled copy of the weights, the release's own weights) are listed too. The
    weights are widened to float32 (17 MB), so the file is longer than huggingface_hub's 10 MiB download chunk and
    a dropped connection leaves part of it to resume."""
    import io

    import torch
    from safetensors.torch import load_file, save

    from engine.model.loading import demo_model_dir

    demo = demo_model_dir()
    names = ("config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json")
    model = {name: (demo / name).read_bytes() for name in names}
    weights = load_file(demo / "model.safetensors")
    model["model.safetensors"] = save({k: v.float() for k, v in weights.items()}, metadata={"format": "pt"})
    model["LICENSE"] = b"Test licence for the tiny model.\n"
    model["pytorch_model.bin"] = b"not to be fetched"
    checkpoint = io.BytesIO()
    torch.save({"state_dict": load_file(demo / "vqgan_decoder.safetensors")}, checkpoint)
    release = {
        "tokenizer/vqgan.ckpt": checkpoint.getvalue(),
        "tokenizer/vqgan.yaml": b"model: {}\n",
        "LICENSE.txt": b"Test licence for the release.\n",
        "models/7b/consolidated.pth": b"not to be fetched",
    }
    return FakeHub(
        repos={
            MODEL_REPO: Repo(model, lfs={"model.safetensors", "pytorch_model.bin"}, licence="apache-2.0"),
            RELEASE: Repo(release, lfs={"tokenizer/vqgan.ckpt", "models/7b/consolidated.pth"}),
        }
    )


MODEL_REPO = "familiar-test/tiny-anole-hf"
RELEASE = "familiar-test/tiny-release"


def loopback_only(monkeypatch: Any) -> list[tuple[object, ...]]:
    """From now on, connecting anywhere but 127.0.0.1 fails the test; returns every address connected to."""
    import socket

    connected: list[tuple[object, ...]] = []
    connect = socket.socket.connect

    def guarded(self: socket.socket, address: Any) -> None:
        connected.append(tuple(address) if isinstance(address, tuple) else (address,))
        if not (isinstance(address, tuple) and address[0] == "127.0.0.1"):
            raise AssertionError(f"a connection outside the loopback server was attempted: {address}")
        connect(self, address)

    monkeypatch.setattr(socket.socket, "connect", guarded)
    return connected
