"""`familiar chat` and `familiar generate`: talk about concepts and draw them from the command line."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from desktop.cli.answer import print_answer
from desktop.cli.progress import progress_bar

if TYPE_CHECKING:
    from engine.concepts.state import ConceptState
    from engine.inference.assistant import Assistant, GeneratedImage


def register(sub: argparse._SubParsersAction) -> None:
    chat = sub.add_parser("chat", help="ask a question, optionally about a photo and your concepts")
    chat.add_argument("question", help="the question; mention concepts as <name>")
    chat.add_argument("--image", type=Path, help="a photo to ask about")
    chat.add_argument(
        "--auto",
        action="store_true",
        help='draw requests to draw ("Draw <bo> at the beach"); otherwise let the model decide whether to draw',
    )
    chat.add_argument(
        "-o",
        "--output",
        type=Path,
        help="where --auto saves a picture: .png, .jpg, .jpeg or .webp (default: familiar-SEED.png)",
    )
    chat.add_argument("--max-tokens", type=int, default=200, help="longest answer, in tokens")
    chat.add_argument("--temperature", type=float, default=0.7, help="sampling temperature")
    _common(chat)
    chat.set_defaults(handler=run_chat)

    generate = sub.add_parser("generate", help="draw a picture; mention concepts as <name>")
    generate.add_argument("prompt", help="what to draw; mention concepts as <name>")
    generate.add_argument(
        "-o", "--output", type=Path, required=True, help="picture to write: .png, .jpg, .jpeg or .webp"
    )
    generate.add_argument("--temperature", type=float, default=1.0, help="sampling temperature")
    generate.add_argument(
        "--top-k", type=int, default=None, help="sample only among the k likeliest image tokens (default: all)"
    )
    generate.add_argument("--guidance", type=float, default=1.0, help="classifier-free guidance scale (1 = off)")
    _common(generate)
    generate.set_defaults(handler=run_generate)


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default="demo", help="'demo' (embedded), a model folder, or a hub id")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    parser.add_argument("--seed", type=int, default=None, help="random seed, to repeat a result (default: a new one)")
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


def _check_before_loading(args: argparse.Namespace, text: str, output: Path | None) -> list[ConceptState]:
    """What can be checked without the model, so that a mistake fails at once rather than after loading it:
    the picture's file name, the concept files (read here) and the library concepts named or mentioned."""
    from desktop.services.drawing import picture_format
    from desktop.services.library_concepts import check_in_library
    from engine.concepts.prompts import MENTION
    from engine.concepts.state import ConceptState
    from engine.errors import EngineError

    if output is not None:
        picture_format(output)
        if not output.parent.is_dir():
            raise EngineError(f"cannot write {output}: the folder {output.parent} does not exist")
    states = [ConceptState.load(path) for path in args.concept_file]
    given = {state.name.lower() for state in states}
    mentioned = [match.group(1) for match in MENTION.finditer(text)]
    wanted = [n for n in dict.fromkeys(n.lower() for n in [*args.concept, *mentioned]) if n not in given]
    if wanted:
        from store.library import Library

        with Library.open(args.data_dir) as library:
            check_in_library(library, wanted)
    return states


def _assistant(args: argparse.Namespace, text: str, files: list[ConceptState]) -> Assistant:
    """Load the model, then the concepts: files given directly (`files`, read from --concept-file), and library
    concepts named with --concept or mentioned as <name> in the text."""
    from desktop.services.library_concepts import attach_from_library
    from engine.concepts.state import ConceptState
    from engine.inference.assistant import Assistant
    from engine.model.loading import load_model

    loaded = load_model(args.model, device=args.device, progress=progress_bar())
    assistant = Assistant(loaded)
    if assistant.notice:
        hint = " (pass --model FOLDER, a Chameleon-family model folder)" if loaded.is_demo else ""
        print(f"familiar: note: {assistant.notice}{hint}", file=sys.stderr)
    for path, state in zip(args.concept_file, files, strict=True):
        if state.base_fingerprint != loaded.fingerprint:
            ConceptState.load(path, loaded.fingerprint)  # raises, saying which model the file was made for
        assistant.attach(state)
    wanted = [n for n in [*args.concept, *assistant.prompts.mentions(text)] if n.lower() not in assistant.slots.names()]
    if wanted:
        from store.library import Library

        with Library.open(args.data_dir) as library:
            attach_from_library(library, assistant, wanted)
    return assistant


def _save(picture: GeneratedImage, path: Path, assistant: Assistant, args: argparse.Namespace) -> None:
    """Write the picture, and keep it in the gallery unless --no-gallery."""
    from desktop.services.drawing import keep_in_gallery, picture_bytes, picture_format
    from engine.errors import EngineError

    try:
        path.write_bytes(picture_bytes(picture, assistant.loaded.source, picture_format(path)))
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

    files = _check_before_loading(args, args.question, args.output if args.auto else None)
    image = open_image(args.image) if args.image else None
    assistant = _assistant(args, args.question, files)
    sampling = Sampling(temperature=args.temperature, top_p=0.9, seed=args.seed)
    drawn = assistant.drawing_for(args.question, image) if args.auto else None
    if drawn is not None:
        picture = assistant.generate(drawn, sampling, progress=progress_bar())
        _save(picture, args.output or Path(f"familiar-{picture.seed}.png"), assistant, args)
        return 0
    print_answer(assistant.chat(args.question, image, sampling, max_new_tokens=args.max_tokens))
    return 0


def run_generate(args: argparse.Namespace) -> int:
    from desktop.cli.serve import use_server

    if use_server(args, "generate"):
        return 0
    from engine.inference.generation import Sampling

    files = _check_before_loading(args, args.prompt, args.output)
    assistant = _assistant(args, args.prompt, files)
    sampling = Sampling(temperature=args.temperature, top_k=args.top_k, seed=args.seed)
    picture = assistant.generate(args.prompt, sampling, guidance_scale=args.guidance, progress=progress_bar())
    _save(picture, args.output, assistant, args)
    return 0
