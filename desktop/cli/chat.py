"""`familiar chat` and `familiar generate`: talk about concepts and draw them from the command line."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from desktop.cli.progress import progress_bar

if TYPE_CHECKING:
    from engine.inference.assistant import Assistant, GeneratedImage


def register(sub: argparse._SubParsersAction) -> None:
    chat = sub.add_parser("chat", help="ask a question, optionally about a photo and your concepts")
    chat.add_argument("question", help="the question; mention concepts as <name>")
    chat.add_argument("--image", type=Path, help="a photo to ask about")
    chat.add_argument("--auto", action="store_true", help="let the model decide between answering and drawing")
    chat.add_argument("-o", "--output", type=Path, help="where --auto saves a picture (default: familiar-SEED.png)")
    chat.add_argument("--max-tokens", type=int, default=200)
    chat.add_argument("--temperature", type=float, default=0.7)
    _common(chat)
    chat.set_defaults(handler=run_chat)

    generate = sub.add_parser("generate", help="draw a picture; mention concepts as <name>")
    generate.add_argument("prompt")
    generate.add_argument("-o", "--output", type=Path, required=True, help="PNG file to write")
    generate.add_argument("--temperature", type=float, default=1.0)
    generate.add_argument("--top-k", type=int, default=None)
    generate.add_argument("--guidance", type=float, default=1.0, help="classifier-free guidance scale (1 = off)")
    _common(generate)
    generate.set_defaults(handler=run_generate)


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default="demo", help="'demo' (embedded), a model folder, or a hub id")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument(
        "--concept", action="append", default=[], help="load a library concept (mentions <name> load too); repeatable"
    )
    parser.add_argument(
        "--concept-file",
        type=Path,
        action="append",
        default=[],
        help="load a concept state file (.safetensors) directly; repeatable",
    )
    parser.add_argument("--no-server", action="store_true", help="load the model here even when `familiar serve` runs")
    parser.add_argument("--no-gallery", action="store_true", help="do not also keep a drawn picture in the gallery")


def _assistant(args: argparse.Namespace, text: str) -> Assistant:
    """Load the model, then the concepts: files given directly, and library concepts named with
    --concept or mentioned as <name> in the text."""
    from desktop.services.library_concepts import attach_from_library
    from engine.concepts.state import ConceptState
    from engine.inference.assistant import Assistant
    from engine.model.loading import load_model

    loaded = load_model(args.model, device=args.device, progress=progress_bar())
    assistant = Assistant(loaded)
    if assistant.notice:
        hint = " (pass --model FOLDER, a Chameleon-family model folder)" if loaded.is_demo else ""
        print(f"familiar: note: {assistant.notice}{hint}", file=sys.stderr)
    for path in args.concept_file:
        assistant.attach(ConceptState.load(path, loaded.fingerprint))
    wanted = [n for n in [*args.concept, *assistant.prompts.mentions(text)] if n.lower() not in assistant.slots.names()]
    if wanted:
        from store.library import Library

        with Library.open(args.data_dir) as library:
            attach_from_library(library, assistant, wanted)
    return assistant


def _save(picture: GeneratedImage, path: Path, assistant: Assistant, args: argparse.Namespace) -> None:
    """Write the PNG, and keep it in the gallery unless --no-gallery."""
    from desktop.services.drawing import keep_in_gallery, png_bytes
    from engine.errors import EngineError

    try:
        path.write_bytes(png_bytes(picture, assistant.loaded.source))
    except OSError as exc:
        raise EngineError(f"cannot write {path}: {exc.strerror or exc}") from None
    print(f"saved {path} (seed {picture.seed})")
    if not args.no_gallery:
        from store.library import Library

        with Library.open(args.data_dir) as library:
            keep_in_gallery(library, assistant, picture, {"via": f"familiar {args.command}"})


def run_chat(args: argparse.Namespace) -> int:
    from desktop.cli.serve import use_server

    if use_server(args, "chat"):
        return 0
    from engine.inference.generation import Sampling
    from engine.model.images import open_image

    image = open_image(args.image) if args.image else None
    assistant = _assistant(args, args.question)
    sampling = Sampling(temperature=args.temperature, top_p=0.9, seed=args.seed)
    if args.auto and assistant.wants_image(args.question, image):
        picture = assistant.generate(args.question, sampling, progress=progress_bar())
        _save(picture, args.output or Path(f"familiar-{picture.seed}.png"), assistant, args)
        return 0
    for piece in assistant.chat(args.question, image, sampling, max_new_tokens=args.max_tokens):
        print(piece, end="", flush=True)
    print()
    return 0


def run_generate(args: argparse.Namespace) -> int:
    from desktop.cli.serve import use_server

    if use_server(args, "generate"):
        return 0
    from engine.inference.generation import Sampling

    assistant = _assistant(args, args.prompt)
    sampling = Sampling(temperature=args.temperature, top_k=args.top_k, seed=args.seed)
    picture = assistant.generate(args.prompt, sampling, guidance_scale=args.guidance, progress=progress_bar())
    _save(picture, args.output, assistant, args)
    return 0
