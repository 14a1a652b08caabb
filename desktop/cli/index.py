"""`familiar index build|info|search`: the offline embedding index used to find soft positives and negatives."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from desktop.cli.progress import progress_bar


def register(sub: argparse._SubParsersAction) -> None:
    index = sub.add_parser("index", help="build and query an offline image-embedding index")
    commands = index.add_subparsers(dest="index_command", metavar="ACTION", required=True)

    build = commands.add_parser("build", help="embed every image under a folder into an index (incremental)")
    build.add_argument("folder", type=Path, metavar="DIR", help="folder of images, searched recursively")
    build.add_argument("-o", "--output", type=Path, required=True, metavar="INDEX", help="index folder")
    build.add_argument(
        "--embedder",
        help="open_clip model name, 'microworld-reader' (the micro-world's attribute reader), or 'demo' for an "
        "untrained test model (default: demo with --model demo, else ViT-L-14)",
    )
    build.add_argument("--weights", type=Path, help="local weights file for the embedder (never downloaded)")
    build.add_argument(
        "--tag",
        default="openai",
        help="open_clip release the weights come from, for preprocessing (default openai; 'none')",
    )
    build.add_argument("--vq", action="store_true", help="also store each image's VQ tokens for --model")
    build.add_argument(
        "--model",
        help="base model for --vq: 'demo' or a model folder (default: demo); 'demo' also picks the demo embedder",
    )
    build.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    build.add_argument("--batch-size", type=int, default=32, help="images embedded at once")
    build.add_argument("--chunk-size", type=int, default=256, help="images per committed chunk")
    build.set_defaults(handler=run_build)

    info = commands.add_parser("info", help="describe an index")
    info.add_argument("index", type=Path, metavar="INDEX", help="index folder")
    info.set_defaults(handler=run_info)

    search = commands.add_parser("search", help="find the images nearest to the mean of some photos")
    search.add_argument("index", type=Path, metavar="INDEX", help="index folder")
    search.add_argument("photos", type=Path, nargs="+", metavar="PHOTO", help="photos of the concept")
    search.add_argument("-k", type=int, default=10, help="number of results")
    search.add_argument("--weights", type=Path, help="the index's embedder weights file (not needed for demo)")
    search.add_argument(
        "--backend", choices=("auto", "numpy", "faiss"), default="auto", help="search code (auto: faiss when installed)"
    )
    search.add_argument("--json", action="store_true", help="print the results as JSON")
    search.set_defaults(handler=run_search)


def run_build(args: argparse.Namespace) -> int:
    from engine.errors import EngineError
    from engine.model.loading import DEMO_NAME
    from engine.retrieval.embedder import DEFAULT_EMBEDDER, DEMO_EMBEDDER, load_embedder
    from engine.retrieval.index import ImageTokenSource, build_index

    if args.batch_size < 1 or args.chunk_size < 1:
        raise EngineError("--batch-size and --chunk-size must be positive")
    if not args.folder.is_dir():
        raise EngineError(f"{args.folder} is not a folder")
    tag = None if args.tag.lower() == "none" else args.tag
    demo = args.model == DEMO_NAME and args.weights is None
    name = args.embedder or (DEMO_EMBEDDER if demo else DEFAULT_EMBEDDER)
    embedder = load_embedder(name, args.weights, tag, device=args.device)
    if embedder.info.untrained:
        print(f"familiar: note: embedder {embedder.info.describe()}", file=sys.stderr)
    tokens = None
    if args.vq:
        from engine.model.loading import load_model

        loaded = load_model(args.model or DEMO_NAME, device=args.device, progress=progress_bar())
        tokens = ImageTokenSource(loaded.image_tokenizer, loaded.fingerprint, loaded.source)
    report = build_index(
        args.folder,
        args.output,
        embedder,
        tokens,
        chunk_size=args.chunk_size,
        batch_size=args.batch_size,
        progress=progress_bar(lines_when_piped=True),
    )
    for path, reason in report.failed:
        print(f"familiar: skipped {path}: {reason}", file=sys.stderr)
    print(
        f"indexed {report.added} new images ({report.already_indexed} already indexed, "
        f"{len(report.failed)} unreadable); {args.output} holds {report.count}"
    )
    return 0


def run_info(args: argparse.Namespace) -> int:
    from engine.retrieval.index import FORMAT_NAME, FORMAT_VERSION, EmbeddingIndex

    index = EmbeddingIndex(args.index)
    vq = index.vq
    print(f"index:     {index.path}")
    print(f"format:    {FORMAT_NAME} v{FORMAT_VERSION}")
    print(f"images:    {index.count}")
    print(f"embedder:  {index.embedder.describe()}")
    if vq is None:
        print("vq tokens: none")
    else:
        print(f"vq tokens: {vq.tokens_per_image} per image, model {vq.model} (fingerprint {vq.model_fingerprint[:16]})")
    on_disk = sum(path.stat().st_size for path in index.path.iterdir() if path.is_file())
    print(f"size:      {_size(index.embeddings.nbytes)} of embeddings, {_size(on_disk)} on disk")
    return 0


def _size(count: int) -> str:
    if count < 1024:
        return f"{count} bytes"
    value = count / 1024
    for unit in ("KiB", "MiB"):
        if value < 1024:
            return f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GiB"


def run_search(args: argparse.Namespace) -> int:
    from engine.errors import EngineError
    from engine.retrieval.embedder import load_embedder_for
    from engine.retrieval.index import EmbeddingIndex
    from engine.retrieval.plan import concept_query, read_concept_photos

    if args.k < 1:
        raise EngineError("-k must be at least 1")
    index = EmbeddingIndex(args.index)
    embedder = load_embedder_for(index.embedder, args.weights)
    if embedder.info.untrained:
        print(f"familiar: note: embedder {embedder.info.describe()}", file=sys.stderr)
    _, embeddings = read_concept_photos(args.photos, embedder)
    neighbours = index.neighbours(concept_query(embeddings), args.k, args.backend)
    if args.json:
        results = [
            {
                "rank": rank,
                "similarity": round(item.similarity, 6),
                "source": item.source,
                "caption": item.caption,
                "sha256": item.sha256,
                "row": item.row,
            }
            for rank, item in enumerate(neighbours.items, start=1)
        ]
        print(
            json.dumps(
                {"index": str(index.path), "photos": [str(p) for p in args.photos], "results": results}, indent=1
            )
        )
        return 0
    for rank, item in enumerate(neighbours.items, start=1):
        caption = f"  {item.caption[:60]}" if item.caption else ""
        print(f"{rank:4d}  {item.similarity:.4f}  {item.source}{caption}")
    return 0
