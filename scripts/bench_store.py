"""Benchmark the concept library at scale: 1,000 concepts with 10,000 photos.

    python scripts/bench_store.py                 # full size; writes docs/results/store.json
    python scripts/bench_store.py --concepts 50   # a quick look

The photos are small generated images (64x64 JPEG noise, the smallest size the library accepts) so the
library builds in a few minutes on a 2-core machine; listing, opening, export and import cost depends on
row and file counts far more than on pixel counts. Every concept also gets one learned-token version
(hidden size 64). Times are medians over repeated runs, in milliseconds, on a library that lives in a
temporary folder (or --data-dir).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import random
import sqlite3
import statistics
import struct
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from store.library import Library  # noqa: E402

SIDE = 64
HIDDEN = 64


def photo_bytes(seed: int) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (SIDE, SIDE, 3), dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, "JPEG", quality=90)
    return out.getvalue()


def state_bytes(seed: int, name: str) -> bytes:
    """A concept state file in the engine's layout (written by hand: the store and this script need no torch)."""
    rows = np.random.default_rng(seed).standard_normal((2, 33, HIDDEN)).astype("<f4")
    size = rows[0].nbytes
    header = {
        "__metadata__": {
            "format": "familiar.concept/1",
            "base_fingerprint": "ab" * 32,
            "name": name,
            "hidden_size": str(HIDDEN),
            "n_generation": "16",
            "n_understanding": "16",
        },
        "embed": {"dtype": "F32", "shape": [33, HIDDEN], "data_offsets": [0, size]},
        "head": {"dtype": "F32", "shape": [33, HIDDEN], "data_offsets": [size, 2 * size]},
    }
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    return struct.pack("<Q", len(raw)) + raw + rows.tobytes()


def median_ms(action: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        action()
        times.append((time.perf_counter() - started) * 1000)
    return round(statistics.median(times), 2)


def build(library: Library, work: Path, concepts: int, per_concept: int) -> float:
    """Fill the library; returns seconds taken."""
    started = time.perf_counter()
    for c in range(concepts):
        paths = []
        for p in range(per_concept):
            path = work / f"{p}.jpg"
            path.write_bytes(photo_bytes(c * per_concept + p))
            paths.append(path)
        name = f"concept{c:05d}"
        library.concepts.add(name, paths, kind=("pet", "person", "object", "place")[c % 4], facts=f"facts about {c}")
        library.tokens.add(name, state_bytes(c, name), kind="instant", metrics={"recognition": 0.5})
        if (c + 1) % 100 == 0:
            rate = (c + 1) / (time.perf_counter() - started)
            print(f"  built {c + 1}/{concepts} concepts ({rate:.1f}/s)", flush=True)
    return time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--concepts", type=int, default=1000)
    parser.add_argument("--photos-per-concept", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--data-dir", type=Path, help="build the library here (default: a temporary folder)")
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "results" / "store.json")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="familiar-bench-") as scratch:
        root = args.data_dir or Path(scratch) / "library"
        work = Path(scratch) / "work"
        work.mkdir()
        print(f"building {args.concepts} concepts x {args.photos_per_concept} photos in {root}", flush=True)
        with Library.open(root) as library:
            build_s = build(library, work, args.concepts, args.photos_per_concept)
            names = [c.name for c in library.concepts.list()]
            rng = random.Random(0)

            def open_concept() -> None:
                name = rng.choice(names)
                with library.reading():
                    library.concepts.get(name)
                    library.concepts.photos(name)
                    library.tokens.versions(name)

            archive = work / "one.familiar"

            def export_one() -> None:
                library.export_concept(rng.choice(names), archive, overwrite=True)

            # Export, remove and import back the same concepts, so that removal deletes files and
            # import writes them (an import of files the library already holds would be cheaper).
            victims = iter(rng.sample(names, args.repeats))
            removed: list[str] = []

            def remove_one() -> None:
                name = next(victims)
                library.export_concept(name, work / f"{name}.familiar")
                started = time.perf_counter()
                library.concepts.purge(name)  # deleted for good, past the trash: the work a removal does
                timings["remove"].append((time.perf_counter() - started) * 1000)
                removed.append(name)

            def import_one() -> None:
                library.import_concept(work / f"{removed.pop()}.familiar")

            timings: dict[str, list[float]] = {"remove": []}
            results = {
                "open_library_ms": median_ms(lambda: Library.open(root).close(), args.repeats),
                "list_concepts_ms": median_ms(library.concepts.list, args.repeats),
                "open_concept_ms": median_ms(open_concept, args.repeats * 5),
                "export_concept_ms": median_ms(export_one, args.repeats),
            }
            for _ in range(args.repeats):
                remove_one()
            results["remove_concept_ms"] = round(statistics.median(timings["remove"]), 2)
            results["import_concept_ms"] = median_ms(import_one, args.repeats)
            results["collect_garbage_ms"] = median_ms(library.collect_garbage, 3)
            fresh_times = []
            for i in range(args.repeats):
                with Library.open(Path(scratch) / f"fresh{i}") as fresh:
                    started = time.perf_counter()
                    fresh.import_concept(archive)
                    fresh_times.append((time.perf_counter() - started) * 1000)
            results["import_into_empty_library_ms"] = round(statistics.median(fresh_times), 2)
            photos = library.db.execute("SELECT COUNT(*) FROM photos").fetchone()[0]
        size_mb = sum(f.stat().st_size for f in root.rglob("*") if f.is_file()) / 2**20

    report = {
        "command": "python " + " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]]),
        "concepts": args.concepts,
        "photos": photos,
        "photo_size": f"{SIDE}x{SIDE} JPEG",
        "build_s": round(build_s, 1),
        "library_mb": round(size_mb, 1),
        **results,
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "sqlite": sqlite3.sqlite_version,
            "platform": platform.platform(),
            "library_folder": str(root.parent),
        },
    }
    print(json.dumps(report, indent=2))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"saved {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
