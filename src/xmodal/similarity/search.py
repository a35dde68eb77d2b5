"""Exact scores and top-k for the four metrics, fast and with bounded memory.

Cosine and Euclidean are matrix products (BLAS sgemm through numpy); Manhattan and chi-square run
compiled kernels (`kernels.py`). `topk` walks the gallery in blocks and folds every score block
into per-query heaps, so memory is bounded by `block_size` score entries whatever the gallery size.

Euclidean precision: |q|^2 + |g|^2 - 2 q.g cancels catastrophically for near-duplicates (float32
error ~ eps * (|q|^2 + |g|^2), large next to a small distance). `block_scores` recomputes entries
where cancellation is severe exactly; `topk` ranks by the product and then rescores its winners
exactly, so returned scores agree with `reference_scores` to float32 rounding.
"""

from __future__ import annotations

import numpy as np

from xmodal.similarity import kernels
from xmodal.similarity.metrics import Metric, l2_normalize

#: score entries per block (float32: 64 MB); bounds topk's working memory
DEFAULT_BLOCK = 1 << 24
#: query rows per block: enough for sgemm to run near peak, few enough to split big galleries
QUERY_ROWS = 1024
#: Euclidean entries with d^2 < CANCEL * (|q|^2 + |g|^2) are recomputed exactly (relative error of
#: the product form stays below ~1e-5 elsewhere)
CANCEL = 1.0 / 16


def _as_matrix(x: np.ndarray, name: str) -> np.ndarray:
    x = np.ascontiguousarray(x, np.float32)
    if x.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array (n x d), got shape {x.shape}")
    return x


def _check_pair(queries: np.ndarray, gallery: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    q, g = _as_matrix(queries, "queries"), _as_matrix(gallery, "gallery")
    if q.shape[1] != g.shape[1]:
        raise ValueError(f"queries have dimension {q.shape[1]} but gallery has {g.shape[1]}")
    return q, g


def _sq_norms(x: np.ndarray) -> np.ndarray:
    return np.einsum("ij,ij->i", x, x)


def _kernel_scores(metric: Metric, q: np.ndarray, g: np.ndarray, out: np.ndarray) -> None:
    """Manhattan/chi-square scores into `out`, or the raw product q @ g.T for the others."""
    if metric is Metric.MANHATTAN:
        kernels.manhattan_scores(q, g, out)
    elif metric is Metric.CHI_SQUARE:
        kernels.chi_square_scores(q, g, out)
    else:
        np.matmul(q, g.T, out=out)


def _euclidean_scores(q: np.ndarray, g: np.ndarray) -> np.ndarray:
    qq, gg = _sq_norms(q), _sq_norms(g)
    d2 = q @ g.T
    d2 *= -2
    d2 += qq[:, None]
    d2 += gg[None, :]
    # a scalar bound first (a boolean temporary, not a float one), then the exact test on the few
    rows, cols = np.nonzero(d2 < CANCEL * (qq.max(initial=0) + gg.max(initial=0)))
    keep = d2[rows, cols] < CANCEL * (qq[rows] + gg[cols])
    rows, cols = rows[keep], cols[keep]
    d2[rows, cols] = kernels.pair_sq_distances(q, g, rows, cols)
    np.maximum(d2, 0, out=d2)
    return -np.sqrt(d2, out=d2)


def block_scores(queries: np.ndarray, gallery: np.ndarray, metric: Metric | str) -> np.ndarray:
    """nq x ng float32 scores (higher = closer); allocates the whole matrix: call it per block."""
    metric = Metric(metric)
    q, g = _check_pair(queries, gallery)
    if metric is Metric.COSINE:
        return l2_normalize(q) @ l2_normalize(g).T
    if metric is Metric.EUCLIDEAN:
        return _euclidean_scores(q, g)
    out = np.empty((len(q), len(g)), np.float32)
    _kernel_scores(metric, q, g, out)
    return out


def _column_map(metric: Metric, g: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(scale, shift) turning a raw block into ranking scores column by column (see merge_topk)."""
    if metric is Metric.COSINE:
        return 1 / np.maximum(np.sqrt(_sq_norms(g)), np.float32(1e-12)), np.zeros(
            len(g), np.float32
        )
    if metric is Metric.EUCLIDEAN:  # -|q - g|^2 + |q|^2, the same order as -|q - g|
        return np.full(len(g), 2, np.float32), -_sq_norms(g)
    return np.ones(len(g), np.float32), np.zeros(len(g), np.float32)


def _block_shape(nq: int, ng: int, budget: int) -> tuple[int, int]:
    rows = min(nq, QUERY_ROWS)
    cols = min(ng, max(1, budget // max(rows, 1)))
    if cols == ng:  # the whole gallery fits: take more queries per block instead
        rows = min(nq, max(rows, budget // max(ng, 1)))
    return max(rows, 1), max(cols, 1)


def _sorted(v: np.ndarray, i: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows best first; equal scores by ascending gallery index."""
    order = np.lexsort((i, -v), axis=1)
    return np.take_along_axis(v, order, 1), np.take_along_axis(i, order, 1)


def topk(
    queries: np.ndarray,
    gallery: np.ndarray,
    k: int,
    metric: Metric | str,
    block_size: int = DEFAULT_BLOCK,
) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k gallery rows per query: (scores float32, indices int64), nq x min(k, ng).

    Best first; ties go to the lower gallery index. `block_size` caps the score entries held at
    once (working memory ~ 4 * block_size bytes plus one block of gallery norms).
    """
    metric = Metric(metric)
    q, g = _check_pair(queries, gallery)
    if not isinstance(k, int | np.integer) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    if block_size < 1:
        raise ValueError(f"block_size must be positive, got {block_size}")
    k = min(int(k), len(g))
    heap_v = np.full((len(q), k), -np.inf, np.float32)
    heap_i = np.full((len(q), k), -1, np.int64)
    if metric is Metric.COSINE:
        q = l2_normalize(q)
    rows, cols = _block_shape(len(q), len(g), block_size)
    buf = np.empty(rows * cols, np.float32)
    for g0 in range(0, len(g) if k else 0, cols):
        gb = g[g0 : g0 + cols]
        scale, shift = _column_map(metric, gb)
        for q0 in range(0, len(q), rows):
            qb = q[q0 : q0 + rows]
            out = buf[: len(qb) * len(gb)].reshape(len(qb), len(gb))
            _kernel_scores(metric, qb, gb, out)
            kernels.merge_topk(
                out, scale, shift, g0, heap_v[q0 : q0 + rows], heap_i[q0 : q0 + rows]
            )
    if (heap_i < 0).any():
        raise ValueError("non-finite scores: queries or gallery contain NaN or infinity")
    if metric is Metric.EUCLIDEAN:
        rows_of = np.repeat(np.arange(len(q)), k)
        d2 = kernels.pair_sq_distances(q, g, rows_of, heap_i.ravel())
        heap_v = -np.sqrt(d2).astype(np.float32).reshape(heap_i.shape)
    return _sorted(heap_v, heap_i)
