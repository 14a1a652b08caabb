"""The HTTP side: a ThreadingHTTPServer on 127.0.0.1 only, every request checked against the bearer token first,
errors as OpenAI-style JSON, chat streamed as server-sent events."""

from __future__ import annotations

import base64
import hmac
import json
import os
import secrets
import sys
import time
import traceback
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from desktop.server import discovery
from desktop.server.api import ApiError, ChatReply, ChatRequest, chat_request, image_request
from desktop.server.discovery import HOST, ServerInfo
from desktop.server.service import ServedModel
from engine.errors import EngineError
from store.errors import LibraryBusyError, NotFoundError, StoreError

MAX_BODY_BYTES = 64 * 1024 * 1024
ROUTES = {
    "/v1/models": ("GET", "_models"),
    "/v1/concepts": ("GET", "_concepts"),
    "/v1/chat/completions": ("POST", "_chat"),
    "/v1/images/generations": ("POST", "_images"),
}
CONCEPT_PREFIX = "/v1/concepts/"


def as_api_error(exc: Exception) -> ApiError:
    """The status and message a library or engine error gets."""
    if isinstance(exc, ApiError):
        return exc
    if isinstance(exc, NotFoundError):
        return ApiError(404, str(exc))
    if isinstance(exc, LibraryBusyError):
        return ApiError(503, str(exc))
    if isinstance(exc, EngineError | StoreError):
        return ApiError(400, " ".join(str(exc).split()))
    return ApiError(500, f"internal error: {type(exc).__name__}: {exc}")


class Handler(BaseHTTPRequestHandler):
    server: LocalServer
    server_version = "familiar"
    protocol_version = "HTTP/1.0"  # one request per connection; a stream ends when the connection closes

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def log_message(self, format: str, *args: Any) -> None:
        print(f"familiar serve: {self.command} {self.path} {format % args}", file=sys.stderr)

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        self.log_message("%s", code)

    def _dispatch(self, method: str) -> None:
        try:
            self._authorize()
            path = self.path.split("?", 1)[0]
            if path.startswith(CONCEPT_PREFIX) and method == "GET":
                self._send_json(200, self.server.served.concept(unquote(path[len(CONCEPT_PREFIX) :])))
                return
            if path not in ROUTES:
                raise ApiError(404, f"no endpoint {path}")
            wanted, name = ROUTES[path]
            if method != wanted:
                raise ApiError(405, f"{path} takes {wanted}")
            getattr(self, name)()
        except Exception as exc:
            error = as_api_error(exc)
            if error.status == 500:
                traceback.print_exc()
            self._send_json(error.status, error.body())

    def _authorize(self) -> None:
        header = self.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        if not header:
            raise ApiError(
                401,
                "missing bearer token: send 'Authorization: Bearer TOKEN' (the token is in the "
                f"discovery file {discovery.discovery_path(self.server.library_dir)})",
            )
        if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), self.server.token.encode()):
            raise ApiError(401, "wrong bearer token")

    def _body(self) -> dict[str, Any]:
        length = self.headers.get("Content-Length")
        if length is None or not length.isdigit():
            raise ApiError(400, "the request needs a Content-Length and a JSON body")
        if int(length) > MAX_BODY_BYTES:
            raise ApiError(400, f"the request body is over {MAX_BODY_BYTES // (1024 * 1024)} MiB")
        try:
            body = json.loads(self.rfile.read(int(length)))
        except (ValueError, UnicodeDecodeError):
            raise ApiError(400, "the request body is not valid JSON") from None
        if not isinstance(body, dict):
            raise ApiError(400, "the request body must be a JSON object")
        return body

    def _send_json(self, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            if status == 401:
                self.send_header("WWW-Authenticate", "Bearer")
            self.end_headers()
            self.wfile.write(data)
        except OSError:
            pass  # the client has gone

    def _models(self) -> None:
        self._send_json(200, {"object": "list", "data": [self.server.served.describe()]})

    def _concepts(self) -> None:
        self._send_json(200, {"object": "list", "data": self.server.served.concepts()})

    def _images(self) -> None:
        request = image_request(self._body(), self.server.served.model_id)
        png, seed = self.server.served.draw(request)
        item = {"b64_json": base64.b64encode(png).decode("ascii"), "revised_prompt": request.prompt, "seed": seed}
        self._send_json(200, {"created": int(time.time()), "data": [item]})

    def _chat(self) -> None:
        request = chat_request(self._body(), self.server.served.model_id)
        reply = ChatReply(self.server.served.model_id)
        if request.stream:
            self._stream(request, reply)
            return
        pieces: list[str] = []
        self.server.served.chat(request, pieces.append, lambda: False)
        self._send_json(200, reply.whole("".join(pieces)))

    def _stream(self, request: ChatRequest, reply: ChatReply) -> None:
        """Server-sent events in OpenAI's chunk format, then `data: [DONE]`. Headers go out with the first piece,
        so a request refused before the answer starts (an unknown concept, a bad image) gets a plain error."""
        from engine.inference.generation import GenerationCancelled

        state = {"started": False, "gone": False}

        def event(payload: str) -> None:
            self.wfile.write(f"data: {payload}\n\n".encode())
            self.wfile.flush()

        def start() -> None:
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Cache-Control", "no-cache")
            self.end_headers()
            state["started"] = True
            event(json.dumps(reply.chunk({"role": "assistant", "content": ""})))

        def on_piece(piece: str) -> None:
            try:
                if not state["started"]:
                    start()
                event(json.dumps(reply.chunk({"content": piece})))
            except OSError:
                state["gone"] = True

        try:
            self.server.served.chat(request, on_piece, lambda: state["gone"])
            if not state["started"]:
                start()
            event(json.dumps(reply.chunk({}, "stop")))
            event("[DONE]")
        except GenerationCancelled:
            return
        except OSError:
            return  # the client has gone
        except Exception as exc:
            if not state["started"]:
                raise
            event(json.dumps(as_api_error(exc).body()))


class LocalServer(ThreadingHTTPServer):
    """The server on 127.0.0.1:`port` (0 picks a free one) with a fresh random token. `announce()` writes the
    discovery file; closing the server removes it."""

    daemon_threads = True

    def __init__(self, served: ServedModel, port: int, library_dir: Path) -> None:
        super().__init__((HOST, port), Handler)
        self.served = served
        self.library_dir = library_dir
        self.token = secrets.token_urlsafe(32)
        self.info = ServerInfo(port=self.server_address[1], token=self.token, model=served.model_id, pid=os.getpid())

    def announce(self) -> Path:
        return discovery.write(self.library_dir, self.info)

    def server_close(self) -> None:
        super().server_close()
        discovery.remove(self.library_dir, self.token)
