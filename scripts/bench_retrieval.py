"""Retrieval benchmark: index build throughput on CPU, and exact search latency and memory, numpy vs faiss.

- build: `familiar index build` over the DreamBooth photos with a ViT-B-32-sized embedder (random weights,
  loaded from a temporary safetensors file through the normal path), images per second;
- embed: ViT-L-14-sized image tower (random weights), images per second, for the default embedder's cost;
- search: synthetic unit vectors (dim 768) in an index folder; one query and a batch of 16, k = 1100 (the
  plan's top 1000 plus 100 hard negatives); median of 5 timed runs after a warm-up, each size and backend in
  its own process so that peak resident memory is its own (it includes the memory-mapped index pages read).

Usage: python scripts/bench_retrieval.py [--sizes 100000 1000000] [--skip-build] [--out docs/results/retrieval.json]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DREAMBOOTH = ROOT.parent / "shared" / "data" / "dreambooth"
DIM = 768
K = 1100
RUNS = 5


def _reset_peak_rss() -> None:
    """Linux: restart the peak-RSS count here (a child starts with its parent's high-water mark)."""
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")


def _peak_rss_mib() -> float:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def bench_build(workdir: Path) -> dict:
    import logging

    import open_clip
    import torch
    from safetensors.torch import save_file

    from engine.retrieval.embedder import load_embedder
    from engine.retrieval.index import build_index

    logging.disable(logging.WARNING)  # open_clip's "initialized randomly" is the point here
    torch.manual_seed(0)
    model = open_clip.create_model("ViT-B-32", pretrained=None)
    weights = workdir / "vit-b-32-random.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items() if k.startswith("visual.")}, weights)
    del model
    embedder = load_embedder("ViT-B-32", weights, tag="openai")
    photos = sorted(DREAMBOOTH.rglob("*.jpg"))
    started = time.perf_counter()
    report = build_index(DREAMBOOTH, workdir / "b32-index", embedder, chunk_size=64, batch_size=32)
    seconds = time.perf_counter() - started
    assert report.added == len(photos), report

    large = open_clip.create_model("ViT-L-14", pretrained=None).visual.eval()
    pixels = torch.randn(16, 3, 224, 224)
    with torch.no_grad():
        large(pixels[:2])
        started = time.perf_counter()
        large(pixels)
        large_seconds = time.perf_counter() - started
    return {
        "images": report.added,
        "embedder": "ViT-B-32 (random weights), batch 32",
        "seconds": round(seconds, 2),
        "images_per_second": round(report.added / seconds, 1),
        "vit_l_14_images_per_second": round(16 / large_seconds, 2),
        "torch_threads": torch.get_num_threads(),
    }


def make_synthetic_index(path: Path, rows: int) -> None:
    from engine.retrieval.embedder_info import EmbedderInfo
    from engine.retrieval.index import IndexRecord, IndexWriter

    writer = IndexWriter(path, EmbedderInfo("synthetic", None, DIM, untrained=True, weights_file=None))
    rng = np.random.default_rng(0)
    step = 100_000
    for start in range(0, rows, step):
        count = min(step, rows - start)
        vectors = rng.standard_normal((count, DIM), dtype=np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        records = [IndexRecord(f"synthetic/{start + i}.jpg", "", f"{start + i:064x}") for i in range(count)]
        writer.append(vectors, records)


def child_search(path: Path, backend: str) -> dict:
    """Runs in a fresh process: open the index, time searches, report peak memory."""
    import psutil

    from engine.retrieval.index import EmbeddingIndex

    _reset_peak_rss()
    index = EmbeddingIndex(path)
    rng = np.random.default_rng(1)
    queries = rng.standard_normal((16, DIM), dtype=np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    rss_before = psutil.Process().memory_info().rss / 2**20
    result = {
        "vectors": index.count,
        "dim": DIM,
        "backend": backend,
        "k": K,
        "index_mib": round(index.embeddings.nbytes / 2**20, 1),
    }
    for label, batch in (("one_query", queries[:1]), ("16_queries", queries)):
        index.search(batch, K, backend)
        times = []
        for _ in range(RUNS):
            started = time.perf_counter()
            index.search(batch, K, backend)
            times.append(time.perf_counter() - started)
        result[f"{label}_median_s"] = round(statistics.median(times), 4)
        result[f"{label}_min_s"] = round(min(times), 4)
    result["rss_before_search_mib"] = round(rss_before, 1)
    result["peak_rss_mib"] = round(_peak_rss_mib(), 1)
    result["peak_rss_over_start_mib"] = round(result["peak_rss_mib"] - rss_before, 1)
    return result


def bench_search(workdir: Path, sizes: list[int]) -> list[dict]:
    from engine.retrieval.vector_search import faiss_available

    backends = ["numpy", "faiss"] if faiss_available() else ["numpy"]
    results = []
    for rows in sizes:
        path = workdir / f"synthetic-{rows}"
        started = time.perf_counter()
        make_synthetic_index(path, rows)
        print(f"wrote {rows} synthetic vectors in {time.perf_counter() - started:.1f} s", flush=True)
        for backend in backends:
            out = subprocess.run(
                [sys.executable, __file__, "--child", str(path), backend], capture_output=True, text=True, check=True
            )
            result = json.loads(out.stdout.strip().splitlines()[-1])
            print(json.dumps(result), flush=True)
            results.append(result)
        for file in path.iterdir():
            file.unlink()
        path.rmdir()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--skip-build", action="store_true")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "results" / "retrieval.json")
    parser.add_argument("--child", nargs=2, metavar=("INDEX", "BACKEND"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child_search(Path(args.child[0]), args.child[1])))
        return

    import faiss
    import torch

    results: dict = {
        "command": "python " + " ".join([Path(__file__).relative_to(ROOT).as_posix(), *sys.argv[1:]]),
        "machine": {
            "cpus": os.cpu_count(),
            "processor": platform.processor() or platform.machine(),
            "python": platform.python_version(),
            "numpy": np.__version__,
            "torch": torch.__version__,
            "faiss": faiss.__version__,
        },
    }
    with tempfile.TemporaryDirectory(prefix="bench-retrieval-") as tmp:
        if not args.skip_build:
            results["build"] = bench_build(Path(tmp))
            print(json.dumps(results["build"]), flush=True)
        results["search"] = bench_search(Path(tmp), args.sizes)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"saved {args.out}")


if __name__ == "__main__":
    main()
