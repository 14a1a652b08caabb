"""`familiar serve`: keep the model loaded behind an OpenAI-compatible API on 127.0.0.1; and `use_server`, which
`familiar chat` and `familiar generate` call to send their request to a running server instead of loading."""

from __future__ import annotations

import argparse
import base64
import mimetypes
import signal
import sys
from typing import Any

from desktop.cli.answer import print_answer
from desktop.cli.progress import progress_bar

DEFAULT_PORT = 8770


def register(sub: argparse._SubParsersAction) -> None:
    serve = sub.add_parser(
        "serve", help="keep the model loaded behind a local OpenAI-compatible API (127.0.0.1 only, with a token)"
    )
    port_help = f"port on 127.0.0.1 (default: {DEFAULT_PORT}; 0 picks a free one)"
    serve.add_argument("--port", type=int, default=DEFAULT_PORT, help=port_help)
    serve.add_argument("--model", default="demo", help="'demo' (embedded), a model folder, or a hub id (default: demo)")
    serve.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default: auto)")
    serve.set_defaults(handler=run_serve)


def _stop_on_sigterm() -> None:
    def stop(_signum: int, _frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)


def run_serve(args: argparse.Namespace) -> int:
    from desktop.server import discovery
    from desktop.server.client import probe
    from desktop.server.handler import LocalServer
    from desktop.server.service import ServedModel
    from engine.errors import EngineError
    from engine.inference.assistant import Assistant
    from engine.model.loading import load_model
    from store.paths import resolve_data_dir

    library_dir = resolve_data_dir(args.data_dir)
    running = discovery.read_running(library_dir)
    if running is not None and probe(running) is not None:
        raise EngineError(f"a server for this library is already running at {running.address} (process {running.pid})")
    loaded = load_model(args.model, device=args.device, progress=progress_bar())
    served = ServedModel(Assistant(loaded), discovery.model_key(args.model), library_dir)
    try:
        server = LocalServer(served, args.port, library_dir)
    except OSError as exc:
        raise EngineError(
            f"cannot listen on 127.0.0.1:{args.port}: {exc.strerror or exc}; pass --port N (0 picks a free port)"
        ) from None
    _stop_on_sigterm()
    with server:
        path = server.announce()
        if served.assistant.notice:
            print(f"familiar: note: {served.assistant.notice}", file=sys.stderr)
        print(f"familiar: serving {served.model_id} at http://{server.info.address}/v1", flush=True)
        print(f"familiar: bearer token in {path} (readable only by you); Ctrl-C stops", flush=True)
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            print("familiar: server stopped", file=sys.stderr)
    return 0


def _image_part(path: Any) -> dict[str, Any]:
    from engine.errors import ImageError

    if not path.is_file():
        raise ImageError(f"{path} does not exist or is not a file.")
    kind = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    url = f"data:{kind};base64,{base64.b64encode(path.read_bytes()).decode('ascii')}"
    return {"type": "image_url", "image_url": {"url": url}}


def use_server(args: argparse.Namespace, command: str) -> bool:
    """Answer `familiar chat` or `familiar generate` through a running server with the same model; False when
    there is none (or --no-server, --concept-file or --auto, which run here), so the caller loads the model."""
    from desktop.server.client import connect
    from desktop.server.discovery import model_key
    from desktop.services.drawing import converted_png, picture_format
    from engine.errors import EngineError
    from store.paths import resolve_data_dir

    if args.no_server or args.concept_file or getattr(args, "auto", False):
        return False
    fmt = picture_format(args.output) if command == "generate" else "PNG"  # a bad name fails before anything runs
    client = connect(resolve_data_dir(args.data_dir))
    if client is None:
        return False
    served = client.model.get("id")
    if served != model_key(args.model):
        print(f"familiar: the server at {client.info.address} serves {served}; loading here", file=sys.stderr)
        return False
    print(f"familiar: using the server at {client.info.address}", file=sys.stderr)
    if client.model.get("notice"):
        print(f"familiar: note: {client.model['notice']}", file=sys.stderr)
    common = {"model": served, "seed": args.seed, "temperature": args.temperature, "concepts": args.concept}
    if command == "chat":
        content: list[dict[str, Any]] = [{"type": "text", "text": args.question}]
        if args.image:
            content.append(_image_part(args.image))
        messages = [{"role": "user", "content": content}]
        print_answer(client.chat({**common, "messages": messages, "max_tokens": args.max_tokens, "top_p": 0.9}))
        return True
    png, seed = client.draw({**common, "prompt": args.prompt, "top_k": args.top_k, "guidance": args.guidance})
    try:
        args.output.write_bytes(converted_png(png, fmt))
    except OSError as exc:
        raise EngineError(f"cannot write {args.output}: {exc.strerror or exc}") from None
    print(f"saved {args.output} (seed {seed})")
    if not args.no_gallery:
        from desktop.services.drawing import keep_png
        from store.library import Library

        with Library.open(args.data_dir) as library:
            keep_png(library, png, args.prompt, seed, {"via": "familiar generate", "model": served, "server": True})
    return True
