"""Talk to a running server found through the discovery file. Plain http.client to 127.0.0.1: no proxy settings
are read, so the token never leaves the machine."""

from __future__ import annotations

import base64
import http.client
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from desktop.server import discovery
from desktop.server.discovery import ServerInfo
from engine.errors import EngineError

PROBE_TIMEOUT_S = 2.0


class ServerClient:
    """A live server and the model entry it answered with."""

    def __init__(self, info: ServerInfo, model: dict[str, Any]) -> None:
        self.info = info
        self.model = model

    def _send(self, method: str, path: str, body: dict[str, Any] | None, timeout: float | None) -> Any:
        connection = http.client.HTTPConnection(self.info.host, self.info.port, timeout=timeout)
        headers = {"Authorization": f"Bearer {self.info.token}"}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        connection.request(method, path, body=data, headers=headers)
        response = connection.getresponse()
        if response.status != 200:
            raise EngineError(f"the server at {self.info.address} refused: {_message(response.read())}")
        return response

    def chat(self, body: dict[str, Any]) -> Iterator[str]:
        """Stream a chat completion's text pieces (`stream` is set here)."""
        response = self._send("POST", "/v1/chat/completions", {**body, "stream": True}, None)
        for raw in response:
            line = raw.decode("utf-8").strip()
            if not line.startswith("data: "):
                continue
            payload = line[len("data: ") :]
            if payload == "[DONE]":
                return
            chunk = json.loads(payload)
            if "error" in chunk:
                raise EngineError(f"the server at {self.info.address} failed: {chunk['error']['message']}")
            content = chunk["choices"][0]["delta"].get("content")
            if content:
                yield content
        raise EngineError(f"the server at {self.info.address} closed the stream before it ended")

    def draw(self, body: dict[str, Any]) -> tuple[bytes, int]:
        """One picture's PNG bytes and seed."""
        item = json.loads(self._send("POST", "/v1/images/generations", body, None).read())["data"][0]
        return base64.b64decode(item["b64_json"]), int(item["seed"])


def _message(data: bytes) -> str:
    try:
        return str(json.loads(data)["error"]["message"])
    except (ValueError, KeyError, TypeError):
        return data.decode("utf-8", "replace")[:200]


def probe(info: ServerInfo) -> dict[str, Any] | None:
    """The server's model entry if it answers /v1/models with this token within a moment, else None."""
    try:
        response = ServerClient(info, {})._send("GET", "/v1/models", None, PROBE_TIMEOUT_S)
        return json.loads(response.read())["data"][0]
    except (OSError, EngineError, ValueError, KeyError, IndexError, http.client.HTTPException):
        return None


def connect(library_dir: Path) -> ServerClient | None:
    """The server the library's discovery file names, if it is alive and answers; None otherwise (no file, a stale
    one, or a server that does not answer)."""
    info = discovery.read_running(library_dir)
    if info is None:
        return None
    model = probe(info)
    return None if model is None else ServerClient(info, model)
