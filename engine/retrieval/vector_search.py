"""Exact top-k inner-product search over a float16 matrix of unit vectors (usually memory-mapped).

Two backends stream over the rows in blocks, so memory stays bounded whatever the matrix size:
- ``numpy``: each block is converted to float32 and multiplied; top-k by ``argpartition``.
- ``faiss``: each block's float16 bytes are handed as-is to a ``faiss.IndexScalarQuantizer`` with ``QT_fp16``
  codes and inner-product metric. Decoding float16 is lossless, so this is the same exact search as a float32
  ``IndexFlatIP`` over the stored values, with half the memory and no conversion pass.
Results are ordered by score (highest first), ties by row. ``auto`` picks numpy below ``FAISS_FROM`` rows or when
faiss is not installed.
"""

from __future__ import annotations

import importlib.util
from typing import Literal

import numpy as np

from engine.errors import EngineError

Backend = Literal["auto", "numpy", "faiss"]
FAISS_FROM = 1_000_000
"""Row count from which ``auto`` uses faiss (when installed)."""
NUMPY_BLOCK_BYTES = 64 * 2**20
"""Float32 bytes of one numpy block."""
FAISS_BLOCK_BYTES = 256 * 2**20
"""Float16 bytes of one faiss block."""


def faiss_available() -> bool:
    return importlib.util.find_spec("faiss") is not None


def choose_backend(rows: int, backend: Backend = "auto") -> Literal["numpy", "faiss"]:
    """The backend ``backend`` resolves to for a matrix of ``rows`` rows."""
    if backend == "numpy":
        return "numpy"
    if backend == "faiss":
        if not faiss_available():
            raise EngineError("the faiss backend was asked for but faiss is not installed (pip install faiss-cpu)")
        return "faiss"
    if backend != "auto":
        raise EngineError(f"unknown search backend {backend!r}; use auto, numpy or faiss")
    return "faiss" if rows >= FAISS_FROM and faiss_available() else "numpy"


def _merge(
    best: tuple[np.ndarray, np.ndarray], scores: np.ndarray, rows: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """Keep the k best of two candidate sets per query, ordered by score descending, then row ascending."""
    all_scores = np.concatenate([best[0], scores], axis=1)
    all_rows = np.concatenate([best[1], rows], axis=1)
    order = np.lexsort((all_rows, -all_scores), axis=1)[:, :k]
    return np.take_along_axis(all_scores, order, axis=1), np.take_along_axis(all_rows, order, axis=1)


def _block_rows(dim: int, block_bytes: int, element: int) -> int:
    return max(1024, block_bytes // (dim * element))


def _search_numpy(matrix: np.ndarray, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    step = _block_rows(matrix.shape[1], NUMPY_BLOCK_BYTES, 4)
    best = (np.empty((len(queries), 0), np.float32), np.empty((len(queries), 0), np.int64))
    buffer = np.empty((min(step, len(matrix)), matrix.shape[1]), dtype=np.float32)
    for start in range(0, len(matrix), step):
        block = buffer[: min(step, len(matrix) - start)]
        np.copyto(block, matrix[start : start + len(block)])
        scores = queries @ block.T
        keep = min(k, len(block))
        top = np.argpartition(scores, len(block) - keep, axis=1)[:, len(block) - keep :]
        best = _merge(best, np.take_along_axis(scores, top, axis=1), top + start, k)
    return best


def _search_faiss(matrix: np.ndarray, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    import faiss

    dim = matrix.shape[1]
    step = _block_rows(dim, FAISS_BLOCK_BYTES, 2)
    best = (np.empty((len(queries), 0), np.float32), np.empty((len(queries), 0), np.int64))
    for start in range(0, len(matrix), step):
        block = np.ascontiguousarray(matrix[start : start + step], dtype=np.float16)
        index = faiss.IndexScalarQuantizer(dim, faiss.ScalarQuantizer.QT_fp16, faiss.METRIC_INNER_PRODUCT)
        index.add_sa_codes(block.view(np.uint8).reshape(len(block), dim * 2))
        scores, rows = index.search(queries, min(k, len(block)))
        best = _merge(best, scores, rows.astype(np.int64) + start, k)
    return best


def exact_search(
    matrix: np.ndarray, queries: np.ndarray, k: int, backend: Backend = "auto"
) -> tuple[np.ndarray, np.ndarray]:
    """Top-``k`` rows of ``matrix`` [N, d] (float16) by inner product with each query of ``queries`` [Q, d].

    Returns ``(scores, rows)``: float32 and int64 arrays [Q, min(k, N)], best first.
    """
    if matrix.ndim != 2 or matrix.dtype != np.float16:
        raise EngineError(f"expected a 2-D float16 matrix, got {matrix.dtype} of shape {matrix.shape}")
    queries = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)
    if queries.ndim != 2 or queries.shape[1] != matrix.shape[1]:
        raise EngineError(f"queries of shape {list(queries.shape)} do not match vectors of dimension {matrix.shape[1]}")
    if not np.isfinite(queries).all():
        raise EngineError("queries contain NaN or infinite values")
    if k < 1:
        raise EngineError(f"k must be at least 1, not {k}")
    if len(matrix) == 0:
        return np.empty((len(queries), 0), np.float32), np.empty((len(queries), 0), np.int64)
    if choose_backend(len(matrix), backend) == "faiss":
        return _search_faiss(matrix, queries, k)
    return _search_numpy(matrix, queries, k)
