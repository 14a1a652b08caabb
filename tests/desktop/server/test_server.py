"""`familiar serve` on the demo model, started as a real subprocess on a free loopback port and used with a plain
HTTP client: chat (text, a photo, streaming), drawing, concepts, token refusals, bad requests; then `familiar chat`
and `familiar generate` answering through it without loading the model, and stale discovery files ignored."""

from __future__ import annotations

import base64
import http.client
import io
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from desktop.cli.main import main
from desktop.server import discovery
from desktop.server.client import probe
from desktop.server.discovery import ServerInfo
from desktop.server.handler import LocalServer
from desktop.server.service import ServedModel
from engine.errors import EngineError
from engine.inference.assistant import SHOWN_SIZE, Assistant
from engine.inference.generation import Sampling
from engine.microworld.world import Identity, Scene, render
from engine.model import loading
from engine.model.loading import TRAINED_DEMO, LoadedModel, load_model
from store.library import Library

ROOT = Path(__file__).resolve().parents[3]
START_TIMEOUT_S = 120
CHAT, IMAGES = "/v1/chat/completions", "/v1/images/generations"
ONE_PER_REQUEST = "'n' must be 1: the server makes one answer or picture per request"
NO_FETCHING = "images must be data: URLs (data:image/png;base64,...); the server fetches no URLs"
DRAWN = "A photo of a small blue dotted square on sand, in the centre."


@pytest.fixture(scope="module")
def loaded() -> LoadedModel:
    return load_model("demo", device="cpu")


@pytest.fixture(scope="module")
def library_dir(tmp_path_factory: pytest.TempPathFactory, loaded: LoadedModel) -> Path:
    """A library with <bo> (learned starting rows on the demo) and <mimi> (no learned tokens)."""
    folder = tmp_path_factory.mktemp("served-library")
    state = Assistant(loaded).slots.initial_state("bo", loaded.tokenizer, "circle")
    with Library.open(folder) as library:
        library.concepts.add("bo", kind="pet")
        library.tokens.add("bo", state.to_bytes(), kind="trained")
        library.concepts.add("mimi", kind="pet")
    return folder


@pytest.fixture(scope="module")
def server(library_dir: Path) -> Iterator[tuple[subprocess.Popen[str], ServerInfo]]:
    """`familiar serve --port 0 --device cpu` in its own process, once it answers."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "FAMILIAR_DATA": str(library_dir)}
    command = [sys.executable, "-m", "desktop.cli.main", "serve", "--port", "0", "--device", "cpu"]
    process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + START_TIMEOUT_S
    info = None
    while info is None or probe(info) is None:
        if process.poll() is not None:
            pytest.fail(f"the server exited: {process.communicate()[1]}")
        if time.monotonic() > deadline:
            process.kill()
            pytest.fail("the server did not start in time")
        time.sleep(0.2)
        info = discovery.read_running(library_dir)
    yield process, info
    if process.poll() is None:
        process.kill()
        process.communicate()


SERVERS_TOKEN = "the server's token"


def call(
    info: ServerInfo, method: str, path: str, body: Any = None, token: str | None = SERVERS_TOKEN
) -> tuple[int, bytes]:
    """One request with a plain HTTP client; `token=None` sends no Authorization header."""
    connection = http.client.HTTPConnection(info.host, info.port, timeout=60)
    sent = info.token if token == SERVERS_TOKEN else token
    headers = {} if sent is None else {"Authorization": f"Bearer {sent}"}
    data = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
    connection.request(method, path, body=data, headers=headers)
    response = connection.getresponse()
    return response.status, response.read()


def ok(info: ServerInfo, method: str, path: str, body: Any = None) -> dict[str, Any]:
    status, data = call(info, method, path, body)
    assert status == 200, data
    return json.loads(data)


def error(info: ServerInfo, method: str, path: str, body: Any = None, **kwargs: Any) -> tuple[int, str]:
    status, data = call(info, method, path, body, **kwargs)
    return status, json.loads(data)["error"]["message"]


def ask(question: str, **extra: Any) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": question}], "seed": 3, "max_tokens": 8, **extra}


def data_url(image: Image.Image) -> str:
    out = io.BytesIO()
    image.save(out, format="PNG")
    return "data:image/png;base64," + base64.b64encode(out.getvalue()).decode()


def test_the_discovery_file_is_private_and_names_a_loopback_server(server, library_dir: Path) -> None:
    process, info = server
    path = discovery.discovery_path(library_dir)
    assert path.stat().st_mode & 0o777 == 0o600
    assert (info.host, info.pid, info.model) == ("127.0.0.1", process.pid, "demo")
    assert len(info.token) >= 32


def test_models_lists_the_served_model_with_the_demo_warning(server) -> None:
    entry = ok(server[1], "GET", "/v1/models")["data"][0]
    assert entry["id"] == "demo" and entry["object"] == "model" and entry["notice"] == TRAINED_DEMO.warning


@pytest.mark.parametrize(("method", "path"), [("GET", "/v1/models"), ("POST", "/v1/chat/completions")])
def test_a_request_without_the_token_or_with_a_wrong_one_is_refused(
    server, library_dir: Path, method: str, path: str
) -> None:
    info = server[1]
    body = ask("What colour is it?") if method == "POST" else None
    assert error(info, method, path, body, token=None) == (
        401,
        f"missing bearer token: send 'Authorization: Bearer TOKEN' (the token is in the discovery file "
        f"{discovery.discovery_path(library_dir)})",
    )
    assert error(info, method, path, body, token="not-" + info.token) == (401, "wrong bearer token")
    assert error(info, method, path, body, token=info.token[:-1]) == (401, "wrong bearer token")


def test_chat_answers_text_and_follows_the_seed(server) -> None:
    info = server[1]
    first = ok(info, "POST", "/v1/chat/completions", ask("What colour is the red striped circle?"))
    again = ok(info, "POST", "/v1/chat/completions", ask("What colour is the red striped circle?"))
    assert first["object"] == "chat.completion" and first["model"] == "demo"
    choice = first["choices"][0]
    assert choice["message"]["role"] == "assistant" and choice["finish_reason"] == "stop"
    assert choice["message"]["content"].strip()
    assert choice["message"]["content"] == again["choices"][0]["message"]["content"]


@pytest.mark.parametrize("colour", ["blue", "red"])
def test_chat_reads_an_image_sent_as_a_data_url(server, loaded: LoadedModel, colour: str) -> None:
    scene = Scene(Identity("square", colour, "plain", "none", "none"), "large", "centre", "grass")
    picture = render(scene).resize((128, 128), Image.Resampling.NEAREST)
    content = [
        {"type": "text", "text": "What colour is it?"},
        {"type": "image_url", "image_url": {"url": data_url(picture)}},
    ]
    body = {"messages": [{"role": "user", "content": content}], "temperature": 0, "max_tokens": 6}
    answer = ok(server[1], "POST", "/v1/chat/completions", body)["choices"][0]["message"]["content"]
    assert answer.strip() == f"{colour.capitalize()}."
    here = Assistant(loaded).chat("What colour is it?", picture.convert("RGB"), Sampling(temperature=0), 6)
    assert answer == "".join(here)


def test_streaming_sends_openai_chunks_ending_with_done(server) -> None:
    info = server[1]
    connection = http.client.HTTPConnection(info.host, info.port, timeout=60)
    body = json.dumps(ask("Describe the red striped circle.", stream=True, max_tokens=12)).encode()
    connection.request("POST", "/v1/chat/completions", body, {"Authorization": f"Bearer {info.token}"})
    response = connection.getresponse()
    assert response.status == 200 and response.getheader("Content-Type") == "text/event-stream"
    events = [line[len(b"data: ") :].decode() for line in response.read().splitlines() if line.startswith(b"data: ")]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert {c["object"] for c in chunks} == {"chat.completion.chunk"} and len({c["id"] for c in chunks}) == 1
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert chunks[-1]["choices"][0] == {"index": 0, "delta": {}, "finish_reason": "stop"}
    streamed = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks)
    whole = ok(info, "POST", "/v1/chat/completions", ask("Describe the red striped circle.", max_tokens=12))
    assert len(chunks) > 3 and streamed == whole["choices"][0]["message"]["content"]


def test_the_image_endpoint_returns_a_png_with_its_seed(server) -> None:
    reply = ok(server[1], "POST", "/v1/images/generations", {"prompt": DRAWN, "seed": 7})
    item = reply["data"][0]
    assert item["seed"] == 7 and item["revised_prompt"] == DRAWN
    with Image.open(io.BytesIO(base64.b64decode(item["b64_json"]))) as image:
        assert image.format == "PNG" and image.size == (SHOWN_SIZE, SHOWN_SIZE)
        assert image.text["familiar:seed"] == "7" and image.text["familiar:prompt"] == DRAWN
        assert image.text["familiar:warning"] == f"made by the {TRAINED_DEMO.warning}"


def test_concepts_are_listed_and_attached_when_named(server) -> None:
    info = server[1]
    listed = {c["name"]: c for c in ok(info, "GET", "/v1/concepts")["data"]}
    assert listed["bo"]["usable"] is True and listed["bo"]["version"] == 1 and listed["bo"]["kind"] == "pet"
    assert listed["mimi"]["usable"] is False and listed["mimi"]["state"] == "untrained"
    assert ok(info, "GET", "/v1/concepts/bo")["name"] == "bo"
    answer = ok(info, "POST", "/v1/chat/completions", ask("What colour is <bo>?"))
    assert answer["choices"][0]["message"]["content"].strip()
    drawn = ok(info, "POST", "/v1/images/generations", {"prompt": "<bo> on sand", "seed": 1})
    assert drawn["data"][0]["b64_json"]


def test_unknown_and_untrained_concepts_are_clear_errors(server) -> None:
    info = server[1]
    missing = "no concept named 'nobody' in the library"
    assert error(info, "GET", "/v1/concepts/nobody") == (404, missing)
    assert error(info, "POST", "/v1/chat/completions", ask("Where is <nobody>?")) == (404, missing)
    assert error(info, "POST", "/v1/chat/completions", ask("hi", stream=True, concepts=["nobody"])) == (404, missing)
    assert error(info, "POST", "/v1/images/generations", {"prompt": "<nobody> on sand"}) == (404, missing)
    status, message = error(info, "POST", "/v1/chat/completions", ask("Where is <mimi>?"))
    assert status == 400 and "<mimi> is not trained yet" in message


@pytest.mark.parametrize(
    ("method", "path", "body", "expected"),
    [
        ("POST", CHAT, b"{not json", (400, "the request body is not valid JSON")),
        ("POST", CHAT, {"messages": []}, (400, "'messages' must be a non-empty list")),
        ("POST", CHAT, ask("hi", max_tokens=0), (400, "'max_tokens' must be between 1 and 4096, not 0")),
        ("POST", CHAT, ask("hi", model="gpt-4o"), (404, "this server serves the model 'demo', not 'gpt-4o'")),
        ("POST", IMAGES, {"prompt": DRAWN, "n": 2}, (400, ONE_PER_REQUEST)),
        ("GET", "/v1/nothing", None, (404, "no endpoint /v1/nothing")),
        ("GET", "/v1/chat/completions", None, (405, "/v1/chat/completions takes POST")),
    ],
)  # fmt: skip
def test_bad_requests_get_clear_json_errors(server, method: str, path: str, body: Any, expected: tuple) -> None:
    assert error(server[1], method, path, body) == expected


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("https://example.com/a.png", NO_FETCHING),
        ("data:image/png;base64,@@@", "an image data: URL holds invalid base64"),
        ("data:;base64,bm90IGFuIGltYWdl", "The image data is not an image in a format Familiar can read."),
    ],
)  # fmt: skip
def test_bad_images_are_refused_without_fetching_anything(server, url: str, expected: str) -> None:
    content = [{"type": "text", "text": "What is it?"}, {"type": "image_url", "image_url": {"url": url}}]
    assert error(server[1], "POST", "/v1/chat/completions", {"messages": [{"role": "user", "content": content}]}) == (
        400,
        expected,
    )


@pytest.fixture()
def no_loading(monkeypatch: pytest.MonkeyPatch) -> None:
    """Loading a model in this process fails the command with a recognisable error."""

    def refuse(*_args: Any, **_kwargs: Any) -> None:
        raise EngineError("the model was loaded in the CLI's process")

    monkeypatch.setattr(loading, "load_model", refuse)


def test_familiar_chat_answers_through_the_server_without_loading(
    server, library_dir: Path, no_loading: None, capsys: pytest.CaptureFixture[str]
) -> None:
    info = server[1]
    args = ["--data-dir", str(library_dir), "chat", "What colour is <bo>?", "--seed", "4", "--max-tokens", "8"]
    assert main(args) == 0
    captured = capsys.readouterr()
    assert f"familiar: using the server at 127.0.0.1:{info.port}\n" in captured.err
    assert f"familiar: note: {TRAINED_DEMO.warning}" in captured.err
    direct = ask("What colour is <bo>?", seed=4, max_tokens=8, temperature=0.7, top_p=0.9)
    assert captured.out == ok(info, "POST", "/v1/chat/completions", direct)["choices"][0]["message"]["content"] + "\n"


def test_familiar_chat_sends_its_photo_and_reports_the_servers_refusals(
    server, library_dir: Path, tmp_path: Path, no_loading: None, capsys: pytest.CaptureFixture[str]
) -> None:
    photo = tmp_path / "blue.png"
    render(Scene(Identity("circle", "blue", "plain", "none", "none"), "large", "centre", "grass")).save(photo)
    base = ["--data-dir", str(library_dir), "chat", "What colour is it?", "--temperature", "0"]
    assert main([*base, "--image", str(photo)]) == 0
    assert capsys.readouterr().out == " Blue.\n"  # as the model says it, leading space included
    assert main([*base, "--image", str(tmp_path / "missing.png")]) == 2
    assert f"{tmp_path / 'missing.png'} does not exist" in capsys.readouterr().err
    assert main(["--data-dir", str(library_dir), "chat", "Where is <nobody>?"]) == 2
    assert "refused: no concept named 'nobody' in the library" in capsys.readouterr().err


def test_familiar_generate_draws_through_the_server(
    server, library_dir: Path, tmp_path: Path, no_loading: None, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "drawn.png"
    assert main(["--data-dir", str(library_dir), "generate", DRAWN, "-o", str(out), "--seed", "5"]) == 0
    captured = capsys.readouterr()
    assert "using the server" in captured.err and captured.out == f"saved {out} (seed 5)\n"
    with Image.open(out) as image:
        assert image.text["familiar:seed"] == "5" and image.size == (SHOWN_SIZE, SHOWN_SIZE)
    with Library.open(library_dir) as library:
        (kept,) = library.gallery.list()
    assert kept.path.read_bytes() == out.read_bytes() and kept.params["server"] and kept.seed == 5
    jpeg = tmp_path / "drawn.jpg"
    assert main(["--data-dir", str(library_dir), "generate", DRAWN, "-o", str(jpeg), "--seed", "5"]) == 0
    with Image.open(jpeg) as image:
        assert image.format == "JPEG" and '"familiar:seed": "5"' in image.getexif()[0x010E]
    assert main(["--data-dir", str(library_dir), "generate", DRAWN, "-o", str(tmp_path / "drawn.gif")]) == 2
    assert "the name must end in" in capsys.readouterr().err


@pytest.mark.parametrize("flags", [["--no-server"], ["--model", str(loading.demo_model_dir())]])
def test_no_server_or_another_model_loads_here(
    server, library_dir: Path, no_loading: None, capsys: pytest.CaptureFixture[str], flags: list[str]
) -> None:
    assert main(["--data-dir", str(library_dir), "chat", "hi", *flags]) == 2
    captured = capsys.readouterr()
    assert "using the server" not in captured.err
    assert "the model was loaded in the CLI's process" in captured.err


def test_a_second_server_for_the_same_library_is_refused_before_loading(
    server, library_dir: Path, no_loading: None, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--data-dir", str(library_dir), "serve", "--port", "0"]) == 2
    assert f"already running at 127.0.0.1:{server[1].port}" in capsys.readouterr().err


def _free_port() -> int:
    with socket.socket() as probe_socket:
        probe_socket.bind(("127.0.0.1", 0))
        return probe_socket.getsockname()[1]


def _dead_pid() -> int:
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    return int(done.stdout)


@pytest.mark.parametrize("owner", ["dead process", "live process, nothing listening"])
def test_a_stale_discovery_file_is_ignored(
    tmp_path: Path, no_loading: None, capsys: pytest.CaptureFixture[str], owner: str
) -> None:
    pid = _dead_pid() if owner == "dead process" else os.getpid()
    discovery.write(tmp_path, ServerInfo(port=_free_port(), token="t" * 43, model="demo", pid=pid))
    assert main(["--data-dir", str(tmp_path), "chat", "hi"]) == 2
    captured = capsys.readouterr()
    assert "using the server" not in captured.err and "loaded in the CLI's process" in captured.err


def test_sigterm_stops_the_server_and_removes_its_file(server, library_dir: Path) -> None:
    """Last: it ends the module's server."""
    process, _info = server
    process.send_signal(signal.SIGTERM)
    _out, err = process.communicate(timeout=30)
    assert process.returncode == 0 and "familiar: server stopped" in err
    assert not discovery.discovery_path(library_dir).exists()


def test_an_in_process_server_replaces_a_stale_file_serves_requests_one_at_a_time_and_cleans_up(
    tmp_path: Path, loaded: LoadedModel
) -> None:
    stale = ServerInfo(port=_free_port(), token="s" * 43, model="demo", pid=_dead_pid())
    discovery.write(tmp_path, stale)
    with LocalServer(ServedModel(Assistant(loaded), "demo", tmp_path), 0, tmp_path) as local:
        local.announce()
        assert discovery.read_running(tmp_path) == local.info != stale
        thread = threading.Thread(target=local.serve_forever, daemon=True)
        thread.start()
        colours = ("red", "blue", "green", "yellow")
        questions = [ask(f"What colour is the {c} striped circle?", seed=1, max_tokens=10) for c in colours]
        with ThreadPoolExecutor(4) as pool:
            together = list(pool.map(lambda q: ok(local.info, "POST", CHAT, q), questions))
        one_by_one = [ok(local.info, "POST", CHAT, q) for q in questions]
        local.shutdown()
        thread.join()
    texts = [[r["choices"][0]["message"]["content"] for r in replies] for replies in (together, one_by_one)]
    assert texts[0] == texts[1] and len(set(texts[0])) > 1
    assert not discovery.discovery_path(tmp_path).exists()
