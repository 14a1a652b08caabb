"""The OpenAI request and response shapes the server speaks, checked into plain requests (no torch here).

Familiar's extensions are extra JSON fields: `concepts` (library concepts to attach besides those named as
`<name>`), and for drawing `seed`, `temperature`, `top_k` and `guidance`.
"""

from __future__ import annotations

import base64
import binascii
import time
import uuid
from dataclasses import dataclass
from typing import Any

CHAT_DEFAULTS = {"max_tokens": 200, "temperature": 0.7, "top_p": 0.9}
"""The same defaults as `familiar chat`."""
MAX_TOKENS_LIMIT = 4096
ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error", 404: "not_found_error"}


class ApiError(Exception):
    """A request the server refuses: `status` is the HTTP status, the message says why."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status

    def body(self) -> dict[str, Any]:
        kind = ERROR_TYPES.get(self.status, "invalid_request_error" if self.status < 500 else "server_error")
        return {"error": {"message": str(self), "type": kind, "code": self.status}}


@dataclass(frozen=True)
class ChatRequest:
    """One turn: the last user message's text, the last image the user sent (as bytes), and sampling."""

    question: str
    image: bytes | None
    concepts: list[str]
    max_tokens: int
    temperature: float
    top_p: float | None
    seed: int | None
    stream: bool


@dataclass(frozen=True)
class ImageRequest:
    prompt: str
    concepts: list[str]
    seed: int | None
    temperature: float
    top_k: int | None
    guidance: float


def _number(body: dict[str, Any], key: str, kind: type, default: Any, low: float, high: float) -> Any:
    value = body.get(key, default)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int | float) or (kind is int and not isinstance(value, int)):
        raise ApiError(400, f"'{key}' must be {'an integer' if kind is int else 'a number'}")
    if not low <= value <= high:
        raise ApiError(400, f"'{key}' must be between {low:g} and {high:g}, not {value}")
    return kind(value)


def _concepts(body: dict[str, Any]) -> list[str]:
    names = body.get("concepts", [])
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise ApiError(400, "'concepts' must be a list of concept names")
    return names


def _check_model(body: dict[str, Any], served: str) -> None:
    model = body.get("model")
    if model is not None and model != served:
        raise ApiError(404, f"this server serves the model {served!r}, not {model!r}")


def _check_single(body: dict[str, Any]) -> None:
    if body.get("n", 1) != 1:
        raise ApiError(400, "'n' must be 1: the server makes one answer or picture per request")


def decode_data_url(url: Any) -> bytes:
    """The bytes of a `data:[type];base64,...` URL; the server fetches nothing from the network."""
    if not isinstance(url, str) or not url.startswith("data:"):
        raise ApiError(400, "images must be data: URLs (data:image/png;base64,...); the server fetches no URLs")
    header, sep, payload = url.partition(",")
    if not sep or not header.endswith(";base64"):
        raise ApiError(400, "an image data: URL must be base64-encoded (data:image/png;base64,...)")
    try:
        return base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise ApiError(400, "an image data: URL holds invalid base64") from None


def _parts(content: Any) -> tuple[list[str], list[bytes]]:
    """The text and images of one message's content: a string, or a list of OpenAI content parts."""
    if isinstance(content, str):
        return [content], []
    if not isinstance(content, list):
        raise ApiError(400, "a message's 'content' must be a string or a list of content parts")
    texts, images = [], []
    for part in content:
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text" and isinstance(part.get("text"), str):
            texts.append(part["text"])
        elif kind == "image_url":
            image_url = part.get("image_url")
            images.append(decode_data_url(image_url.get("url") if isinstance(image_url, dict) else image_url))
        else:
            raise ApiError(400, "content parts must be {'type': 'text', 'text': ...} or {'type': 'image_url', ...}")
    return texts, images


def chat_request(body: dict[str, Any], served: str) -> ChatRequest:
    """Check a /v1/chat/completions body. The model answers one turn: the last user message, about the last
    image the user sent (earlier turns' text is not given to it)."""
    _check_model(body, served)
    _check_single(body)
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise ApiError(400, "'messages' must be a non-empty list")
    question, image = None, None
    for message in messages:
        if not isinstance(message, dict) or message.get("role") not in ("system", "developer", "user", "assistant"):
            raise ApiError(400, "each message needs a 'role' of system, developer, user or assistant")
        if message["role"] != "user":
            continue
        texts, images = _parts(message.get("content"))
        if len(images) > 1:
            raise ApiError(400, "one image per message: the model looks at one photo at a time")
        question, image = "\n".join(texts), images[0] if images else image
    if question is None or not question.strip():
        raise ApiError(400, "the last user message has no text")
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise ApiError(400, "'stream' must be true or false")
    limit = "max_completion_tokens" if body.get("max_completion_tokens") is not None else "max_tokens"
    return ChatRequest(
        question=question,
        image=image,
        concepts=_concepts(body),
        max_tokens=_number(body, limit, int, CHAT_DEFAULTS["max_tokens"], 1, MAX_TOKENS_LIMIT),
        temperature=_number(body, "temperature", float, CHAT_DEFAULTS["temperature"], 0, 2),
        top_p=_number(body, "top_p", float, CHAT_DEFAULTS["top_p"], 0, 1),
        seed=_number(body, "seed", int, None, 0, 2**31 - 1),
        stream=stream,
    )


def image_request(body: dict[str, Any], served: str) -> ImageRequest:
    """Check a /v1/images/generations body: one picture, returned as base64 PNG, at the model's own size."""
    _check_model(body, served)
    _check_single(body)
    prompt = body.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        raise ApiError(400, "'prompt' must be a non-empty string")
    if body.get("response_format", "b64_json") != "b64_json":
        raise ApiError(400, "'response_format' must be b64_json: the server keeps no files to link to")
    if body.get("size", "auto") not in ("auto", None):
        raise ApiError(400, "'size' must be omitted or 'auto': the model draws at its own size")
    top_k = body.get("top_k")
    return ImageRequest(
        prompt=prompt,
        concepts=_concepts(body),
        seed=_number(body, "seed", int, None, 0, 2**31 - 1),
        temperature=_number(body, "temperature", float, 1.0, 0, 2),
        top_k=None if top_k is None else _number(body, "top_k", int, None, 1, 1 << 20),
        guidance=_number(body, "guidance", float, 1.0, 0, 20),
    )


class ChatReply:
    """Builds one completion's JSON objects: the whole answer, or its stream of chunks."""

    def __init__(self, model: str) -> None:
        self.id = f"chatcmpl-{uuid.uuid4().hex}"
        self.created = int(time.time())
        self.model = model

    def _envelope(self, kind: str, choice: dict[str, Any]) -> dict[str, Any]:
        return {"id": self.id, "object": kind, "created": self.created, "model": self.model, "choices": [choice]}

    def whole(self, text: str) -> dict[str, Any]:
        message = {"role": "assistant", "content": text}
        return self._envelope("chat.completion", {"index": 0, "message": message, "finish_reason": "stop"})

    def chunk(self, delta: dict[str, Any], finish_reason: str | None = None) -> dict[str, Any]:
        return self._envelope("chat.completion.chunk", {"index": 0, "delta": delta, "finish_reason": finish_reason})
