"""The offline index: building over real photos, search, incremental and resumable builds, VQ tokens."""

from __future__ import annotations

import hashlib
import json
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from engine.errors import EngineError
from engine.model.images import open_image
from engine.model.loading import LoadedModel
from engine.retrieval import vector_search
from engine.retrieval.embedder import Embedder, load_embedder
from engine.retrieval.embedder_info import EmbedderInfo
from engine.retrieval.index import (
    EMBEDDINGS,
    MANIFEST,
    METADATA,
    EmbeddingIndex,
    ImageTokenSource,
    IndexRecord,
    IndexWriter,
    build_index,
)
from engine.retrieval.vector_search import FAISS_FROM, choose_backend, exact_search


@pytest.fixture(scope="module")
def embedder() -> Embedder:
    return load_embedder("demo")


@pytest.fixture(scope="module")
def dreambooth_index(dreambooth: Path, embedder: Embedder, tmp_path_factory: pytest.TempPathFactory) -> EmbeddingIndex:
    path = tmp_path_factory.mktemp("index") / "dreambooth"
    report = build_index(dreambooth, path, embedder, chunk_size=64, batch_size=32)
    assert report.failed == [] and report.added == report.count
    return EmbeddingIndex(path)


def _write_images(folder: Path, count: int, start: int = 0) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(start, start + count):
        rng = np.random.default_rng(i)
        path = folder / f"img{i:03d}.png"
        Image.fromarray(rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)).save(path)
        paths.append(path)
    return paths


def test_index_over_dreambooth_has_one_row_per_photo(dreambooth: Path, dreambooth_index: EmbeddingIndex) -> None:
    photos = sorted(dreambooth.rglob("*.jpg"))
    index = dreambooth_index
    assert index.count == len(photos) > 100
    assert isinstance(index.embeddings, np.memmap) and index.embeddings.dtype == np.float16
    np.testing.assert_allclose(np.linalg.norm(index.embeddings.astype(np.float32), axis=1), 1.0, atol=2e-3)
    records = list(index.iter_records())
    assert [r.source for r in records] == [str(p.resolve()) for p in photos]
    assert records[7].sha256 == hashlib.sha256(photos[7].read_bytes()).hexdigest()
    assert index.records([7]) == [records[7]]
    manifest = json.loads((index.path / MANIFEST).read_text())
    assert manifest["format"] == "familiar-embedding-index" and manifest["version"] == 1
    assert manifest["count"] == len(photos) and manifest["vq"] is None
    assert manifest["embedder"] == {"name": "demo", "tag": None, "dim": 64, "untrained": True, "weights_file": None}


def test_a_photo_in_the_index_finds_itself_first(
    dreambooth: Path, dreambooth_index: EmbeddingIndex, embedder: Embedder
) -> None:
    photos = sorted(dreambooth.rglob("*.jpg"))[::13]
    queries = embedder.embed([open_image(p) for p in photos])
    for backend in ("numpy", "faiss") if vector_search.faiss_available() else ("numpy",):
        scores, rows = dreambooth_index.search(queries, 5, backend)
        found = [r.source for r in dreambooth_index.records(rows[:, 0])]
        assert found == [str(p.resolve()) for p in photos]
        assert np.all(scores[:, 0] > 0.999) and np.all(scores[:, 0] > scores[:, 1])
    neighbours = dreambooth_index.neighbours(queries[0], 3)
    assert neighbours.items[0].source == str(photos[0].resolve()) and neighbours.items[0].row == rows[0, 0]
    np.testing.assert_allclose(neighbours.embeddings[0], queries[0], atol=2e-3)


def test_rerun_is_incremental(tmp_path: Path, embedder: Embedder) -> None:
    source = tmp_path / "photos"
    _write_images(source, 5)
    first = build_index(source, tmp_path / "idx", embedder)
    assert (first.added, first.already_indexed, first.count) == (5, 0, 5)
    again = build_index(source, tmp_path / "idx", embedder)
    assert (again.added, again.already_indexed, again.count) == (0, 5, 5)
    _write_images(source / "more", 2, start=5)
    (source / "copy.png").write_bytes((source / "img000.png").read_bytes())
    third = build_index(source, tmp_path / "idx", embedder)
    assert (third.added, third.already_indexed, third.count) == (2, 6, 7)
    assert len({r.sha256 for r in EmbeddingIndex(tmp_path / "idx").iter_records()}) == 7


def test_unreadable_files_are_reported_and_skipped(tmp_path: Path, embedder: Embedder) -> None:
    source = tmp_path / "photos"
    good = _write_images(source, 2)
    (good[0].with_suffix(".txt")).write_text("a red square\n")
    (source / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    (source / "notes.png").write_text("this is text")
    (source / "readme.md").write_text("ignored: not an image suffix")
    hidden = source / ".thumbnails"
    _write_images(hidden, 1, start=50)
    report = build_index(source, tmp_path / "idx", embedder)
    assert report.added == 2
    assert sorted(Path(path).name for path, _ in report.failed) == ["broken.jpg", "notes.png"]
    assert all("image" in reason or "corrupt" in reason for _, reason in report.failed)
    records = list(EmbeddingIndex(tmp_path / "idx").iter_records())
    assert [r.caption for r in records] == ["a red square", ""]


def test_index_inside_the_source_folder_is_not_indexed(tmp_path: Path, embedder: Embedder) -> None:
    _write_images(tmp_path, 2)
    build_index(tmp_path, tmp_path / "idx", embedder)
    (tmp_path / "idx" / "stray.png").write_bytes((tmp_path / "img000.png").read_bytes())
    _write_images(tmp_path, 1, start=9)
    assert build_index(tmp_path, tmp_path / "idx", embedder).count == 3


KILLED_BUILD = textwrap.dedent(
    """
    import os, signal, sys
    from engine.retrieval import index
    from engine.retrieval.embedder import load_embedder

    commits = 0
    real_replace = os.replace

    def replace(src, dst):
        global commits
        if str(dst).endswith("manifest.json"):
            commits += 1
            if commits == 4:  # creation, chunk 1, chunk 2; die with chunk 3 written but not committed
                os.kill(os.getpid(), signal.SIGKILL)
        real_replace(src, dst)

    os.replace = replace
    index.build_index(sys.argv[1], sys.argv[2], load_embedder("demo"), chunk_size=4, batch_size=4)
    """
)


def test_a_killed_build_leaves_a_valid_index_and_resumes(tmp_path: Path, embedder: Embedder) -> None:
    source = tmp_path / "photos"
    _write_images(source, 14)
    killed = tmp_path / "killed"
    child = subprocess.run(
        [sys.executable, "-c", KILLED_BUILD, str(source), str(killed)], capture_output=True, text=True, timeout=120
    )
    assert child.returncode == -signal.SIGKILL, child.stderr

    partial = EmbeddingIndex(killed)
    assert partial.count == 8
    assert len((killed / METADATA).read_bytes().splitlines()) == 12  # chunk 3's rows, written, not committed
    assert (killed / EMBEDDINGS).stat().st_size > 128 + 12 * 64 * 2 - 1
    assert len(list(partial.iter_records())) == 8
    assert partial.search(partial.embeddings[3].astype(np.float32), 1)[1][0, 0] == 3
    del partial

    resumed = build_index(source, killed, embedder, chunk_size=4, batch_size=4)
    assert (resumed.added, resumed.already_indexed, resumed.count) == (6, 8, 14)
    fresh = tmp_path / "fresh"
    build_index(source, fresh, embedder, chunk_size=4, batch_size=4)
    a, b = EmbeddingIndex(killed), EmbeddingIndex(fresh)
    np.testing.assert_array_equal(a.embeddings, b.embeddings)
    assert list(a.iter_records()) == list(b.iter_records())
    assert (killed / METADATA).read_bytes() == (fresh / METADATA).read_bytes()


def test_vq_tokens_match_the_image_tokenizer(
    dreambooth: Path, demo: LoadedModel, embedder: Embedder, tmp_path: Path
) -> None:
    source = ImageTokenSource(demo.image_tokenizer, demo.fingerprint, "demo")
    build_index(dreambooth / "dog", tmp_path / "idx", embedder, image_tokens=source, batch_size=2)
    index = EmbeddingIndex(tmp_path / "idx")
    assert index.vq is not None and index.vq.model_fingerprint == demo.fingerprint
    assert index.vq_tokens is not None and index.vq_tokens.dtype == np.int32
    assert index.vq_tokens.shape == (index.count, demo.image_tokenizer.tokens_per_image)
    images = [open_image(Path(r.source)) for r in index.iter_records()]
    expected = demo.image_tokenizer.encode(images).numpy()
    np.testing.assert_array_equal(index.vq_tokens, expected)
    with pytest.raises(EngineError, match="holds VQ tokens of model demo, but this build asks for none"):
        build_index(dreambooth / "dog", tmp_path / "idx", embedder)


def test_an_index_only_takes_embeddings_from_its_embedder(tmp_path: Path, embedder: Embedder) -> None:
    _write_images(tmp_path / "photos", 1)
    build_index(tmp_path / "photos", tmp_path / "idx", embedder)
    other = EmbedderInfo("ViT-B-32", "openai", 512, untrained=False, weights_file="b32.safetensors")
    with pytest.raises(EngineError, match="cannot be compared"):
        IndexWriter(tmp_path / "idx", other)


def test_writer_checks_what_it_appends(tmp_path: Path) -> None:
    info = EmbedderInfo("demo", None, 4, untrained=True, weights_file=None)
    writer = IndexWriter(tmp_path / "idx", info)
    record = IndexRecord("a.png", "", "0" * 64)
    with pytest.raises(EngineError, match="L2-normalised"):
        writer.append(np.ones((1, 4)), [record])
    with pytest.raises(EngineError, match=r"expected embeddings \[1, 4\]"):
        writer.append(np.ones((1, 3)) / np.sqrt(3), [record])
    with pytest.raises(EngineError, match="VQ tokens must be given exactly"):
        writer.append(np.eye(4)[:1], [record], vq_tokens=np.zeros((1, 8)))
    writer.append(np.eye(4)[:1], [record])
    assert EmbeddingIndex(tmp_path / "idx").records([0]) == [record]


def test_folders_that_are_not_indexes_are_refused(tmp_path: Path) -> None:
    info = EmbedderInfo("demo", None, 4, untrained=True, weights_file=None)
    (tmp_path / "holiday.jpg").write_bytes(b"")
    with pytest.raises(EngineError, match="not empty and is not an index"):
        IndexWriter(tmp_path, info)
    with pytest.raises(EngineError, match="not an embedding index"):
        EmbeddingIndex(tmp_path)
    (tmp_path / MANIFEST).write_text('{"format": "something-else"}')
    with pytest.raises(EngineError, match="not a valid index manifest"):
        EmbeddingIndex(tmp_path)


def test_reading_never_unpickles(tmp_path: Path) -> None:
    writer = IndexWriter(tmp_path / "idx", EmbedderInfo("demo", None, 4, untrained=True, weights_file=None))
    writer.append(np.eye(4)[:2], [IndexRecord("a", "", "a" * 64), IndexRecord("b", "", "b" * 64)])
    np.save(tmp_path / "idx" / EMBEDDINGS, np.array([[{"x": 1}] * 4] * 2, dtype=object), allow_pickle=True)
    with pytest.raises(EngineError, match="cannot read"):
        EmbeddingIndex(tmp_path / "idx")


def _unit(rows: int, dim: int, seed: int) -> np.ndarray:
    vectors = np.random.default_rng(seed).standard_normal((rows, dim)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def test_numpy_search_is_exact_across_blocks(monkeypatch: pytest.MonkeyPatch) -> None:
    matrix = _unit(5000, 32, 0).astype(np.float16)
    queries = _unit(6, 32, 1)
    monkeypatch.setattr(vector_search, "NUMPY_BLOCK_BYTES", 1024 * 32 * 4)  # 5 blocks of 1024 rows
    scores, rows = exact_search(matrix, queries, 50, "numpy")
    reference = queries @ matrix.astype(np.float32).T
    expected = np.argsort(-reference, axis=1, kind="stable")[:, :50]
    np.testing.assert_array_equal(rows, expected)
    np.testing.assert_allclose(scores, np.take_along_axis(reference, expected, axis=1), atol=1e-6)
    assert exact_search(matrix[:7], queries, 50, "numpy")[1].shape == (6, 7)
    assert exact_search(matrix[:0], queries, 5, "numpy")[1].shape == (6, 0)


def test_numpy_and_faiss_give_the_same_answers(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("faiss", reason="faiss-cpu is not installed (pip install faiss-cpu==1.15.1)")
    matrix = _unit(20000, 48, 2).astype(np.float16)
    queries = _unit(8, 48, 3)
    monkeypatch.setattr(vector_search, "FAISS_BLOCK_BYTES", 4096 * 48 * 2)  # 5 blocks
    monkeypatch.setattr(vector_search, "NUMPY_BLOCK_BYTES", 3000 * 48 * 4)  # 7 blocks
    np_scores, np_rows = exact_search(matrix, queries, 100, "numpy")
    fa_scores, fa_rows = exact_search(matrix, queries, 100, "faiss")
    np.testing.assert_array_equal(np_rows, fa_rows)
    np.testing.assert_allclose(np_scores, fa_scores, atol=1e-6)


def test_the_backend_is_chosen_by_size(monkeypatch: pytest.MonkeyPatch) -> None:
    assert choose_backend(10) == "numpy"
    assert choose_backend(FAISS_FROM) == ("faiss" if vector_search.faiss_available() else "numpy")
    monkeypatch.setattr(vector_search, "faiss_available", lambda: False)
    assert choose_backend(FAISS_FROM) == "numpy"
    with pytest.raises(EngineError, match="faiss is not installed"):
        choose_backend(10, "faiss")
    with pytest.raises(EngineError, match="do not match vectors of dimension 4"):
        exact_search(np.zeros((3, 4), np.float16), np.zeros((1, 5), np.float32), 1)
