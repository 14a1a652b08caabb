"""The discovery file and the request checks, without a model: private permissions, stale and foreign files,
OpenAI content parts; and the client side imports no torch (the reason a second `familiar chat` is fast)."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from desktop.server import discovery
from desktop.server.api import ApiError, chat_request, image_request
from desktop.server.discovery import ServerInfo

ROOT = Path(__file__).resolve().parents[3]
PNG_URL = "data:image/png;base64," + base64.b64encode(b"first").decode()
OTHER_URL = "data:image/jpeg;base64," + base64.b64encode(b"second").decode()


def _info(token: str = "a" * 43, pid: int | None = None) -> ServerInfo:
    return ServerInfo(port=8770, token=token, model="demo", pid=os.getpid() if pid is None else pid)


def test_the_file_is_written_0600_whatever_the_umask(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        path = discovery.write(tmp_path / "library", _info())
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == 0o600
    assert json.loads(path.read_text())["host"] == "127.0.0.1"
    assert discovery.read_running(tmp_path / "library") == _info()
    assert [p.name for p in (tmp_path / "library").iterdir()] == ["server.json"]


def test_a_dead_process_or_a_foreign_file_is_not_a_running_server(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    discovery.write(tmp_path, _info(pid=int(done.stdout)))
    assert discovery.read(tmp_path) is not None and discovery.read_running(tmp_path) is None
    (tmp_path / "server.json").write_text('{"port": 1, "token": "x", "model": "demo", "pid": 1, "host": "0.0.0.0"}')
    assert discovery.read(tmp_path) is None
    (tmp_path / "server.json").write_text("{broken")
    assert discovery.read(tmp_path) is None


def test_a_server_removes_only_its_own_file(tmp_path: Path) -> None:
    discovery.write(tmp_path, _info(token="theirs"))
    discovery.remove(tmp_path, "mine")
    assert discovery.read(tmp_path) == _info(token="theirs")
    discovery.remove(tmp_path, "theirs")
    assert not (tmp_path / "server.json").exists()


def test_model_keys_name_demo_folders_and_hub_ids(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "anole").mkdir()
    assert discovery.model_key("demo") == "demo"
    assert discovery.model_key("anole") == discovery.model_key(str(tmp_path / "anole")) == str(tmp_path / "anole")
    assert discovery.model_key("leloy/Anole-7b-v0.1-hf") == "leloy/Anole-7b-v0.1-hf"


def test_the_turn_is_the_last_user_message_about_the_last_image_sent() -> None:
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": [{"type": "text", "text": "Look."}, {"type": "image_url", "image_url": PNG_URL}]},
        {"role": "assistant", "content": "A creature."},
        {"role": "user", "content": [{"type": "text", "text": "What colour"}, {"type": "text", "text": "is it?"}]},
    ]
    request = chat_request({"messages": messages, "max_completion_tokens": 9, "seed": 2}, "demo")
    assert (request.question, request.image) == ("What colour\nis it?", b"first")
    assert (request.max_tokens, request.seed, request.temperature, request.top_p) == (9, 2, 0.7, 0.9)
    newer = [*messages, {"role": "user", "content": [{"type": "image_url", "image_url": {"url": OTHER_URL}}, "x"]}]
    with pytest.raises(ApiError, match="content parts must be"):
        chat_request({"messages": newer}, "demo")
    newer[-1]["content"] = [{"type": "text", "text": "Now?"}, {"type": "image_url", "image_url": {"url": OTHER_URL}}]
    assert chat_request({"messages": newer}, "demo").image == b"second"


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": PNG_URL}] * 2}]}, "one image"),
        ({"messages": [{"role": "robot", "content": "hi"}]}, "needs a 'role'"),
        ({"messages": [{"role": "system", "content": "hi"}]}, "the last user message has no text"),
        ({"messages": [{"role": "user", "content": "hi"}], "stream": "yes"}, "'stream' must be true or false"),
        ({"messages": [{"role": "user", "content": "hi"}], "temperature": "hot"}, "'temperature' must be a number"),
        ({"messages": [{"role": "user", "content": "hi"}], "seed": 1.5}, "'seed' must be an integer"),
        ({"messages": [{"role": "user", "content": "hi"}], "concepts": "bo"}, "'concepts' must be a list"),
    ],
)
def test_malformed_chat_requests_are_400s(body: dict, message: str) -> None:
    with pytest.raises(ApiError, match=message) as caught:
        chat_request(body, "demo")
    assert caught.value.status == 400 and caught.value.body()["error"]["type"] == "invalid_request_error"


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"prompt": " "}, "'prompt' must be a non-empty string"),
        ({"prompt": "a cat", "response_format": "url"}, "must be b64_json"),
        ({"prompt": "a cat", "size": "1024x1024"}, "the model draws at its own size"),
        ({"prompt": "a cat", "top_k": 0}, "'top_k' must be between 1"),
    ],
)
def test_malformed_image_requests_are_400s(body: dict, message: str) -> None:
    with pytest.raises(ApiError, match=message):
        image_request(body, "demo")
    assert image_request({"prompt": "a cat", "size": "auto", "top_k": 5}, "demo").top_k == 5


def test_the_client_side_imports_no_torch() -> None:
    code = (
        "import json, sys, desktop.cli.main, desktop.cli.serve, desktop.server.client; "
        "print(json.dumps([m for m in ('torch', 'transformers', 'PySide6') if m in sys.modules]))"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert json.loads(done.stdout) == []
