"""Exact scores and top-k for any registered metric, fast and with bounded memory.

`block_scores` hands a block to the metric's `scores`. `topk` walks the gallery in blocks and
folds every score block into per-query heaps (`merge_blocks`), so memory is bounded by
`block_size` score entries whatever the gallery size; a metric with a faster exact top-k of its
own (cosine, Euclidean: matrix products) brings it, built on `product_merge`: one worker thread
per BLAS thread, each running single-threaded BLAS and its own heap merge on its share, so the
merge overlaps the other threads' products instead of waiting at a barrier after each one.
(`product_merge` limits BLAS to one thread per call while it runs; BLAS work in other Python
threads at that moment runs single-threaded too.)
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from threadpoolctl import ThreadpoolController

from xmodal.similarity import kernels
from xmodal.similarity.metrics import Metric, get_metric, l2_normalize

#: score entries per block (float32: 64 MB); bounds topk's working memory
DEFAULT_BLOCK = 1 << 24
#: query rows per block: enough for sgemm to run near peak, few enough to split big galleries
QUERY_ROWS = 1024

#: (query block, prepared gallery block, out) -> fills out with one block of raw scores
BlockScorer = Callable[[np.ndarray, np.ndarray, np.ndarray], None]
#: gallery block -> (the block as BlockScorer takes it, column scale, column shift): the heaps
#: rank raw * scale + shift, so a matrix product can stand for a metric (1 / |g| for cosine)
GalleryPrep = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray, np.ndarray]]


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


def sq_norms(x: np.ndarray, dtype: type | None = None) -> np.ndarray:
    """Row-wise squared norms, accumulated in `dtype` (x's by default) without a cast copy."""
    return np.einsum("ij,ij->i", x, x, dtype=dtype)


def block_scores(queries: np.ndarray, gallery: np.ndarray, metric: Metric | str) -> np.ndarray:
    """nq x ng float32 scores (higher = closer); allocates the whole matrix: call it per block."""
    spec = get_metric(metric)
    q, g = _check_pair(queries, gallery)
    if spec.normalized:
        q, g = l2_normalize(q), l2_normalize(g)
    out = np.empty((len(q), len(g)), np.float32)
    spec.scores(q, g, out)
    return out


def _block_shape(nq: int, ng: int, budget: int) -> tuple[int, int]:
    rows = min(nq, QUERY_ROWS)
    cols = min(ng, max(1, budget // max(rows, 1)))
    if cols == ng:  # the whole gallery fits: take more queries per block instead
        rows = min(nq, max(rows, budget // max(ng, 1)))
    else:  # equal blocks: no small remainder block for a less efficient product
        cols = -(-ng // -(-ng // max(cols, 1)))
    return max(rows, 1), max(cols, 1)


def _as_is(g: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return g, np.ones(len(g), np.float32), np.zeros(len(g), np.float32)


def merge_blocks(
    q: np.ndarray,
    g: np.ndarray,
    size: int,
    block_size: int,
    score: BlockScorer,
    prepare: GalleryPrep = _as_is,
    offset: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """The `size` best (raw * scale + shift, gallery index + offset) per query, unsorted.

    Ties go to the lower index; NaN never enters a heap (its slot keeps index -1). `score` may
    use every core (a parallel numba kernel); the heap merge then runs in parallel too.
    """
    return _merge(q, g, size, block_size, score, prepare, offset, kernels.merge_topk)


def _merge(q, g, size, block_size, score, prepare, offset, merge):
    heap_v = np.full((len(q), size), -np.inf, np.float32)
    heap_i = np.full((len(q), size), -1, np.int64)
    rows, cols = _block_shape(len(q), len(g), block_size)
    buf = np.empty(rows * cols, np.float32)
    for g0 in range(0, len(g) if size else 0, cols):
        gb, scale, shift = prepare(g[g0 : g0 + cols])
        for q0 in range(0, len(q), rows):
            qb = q[q0 : q0 + rows]
            out = buf[: len(qb) * len(gb)].reshape(len(qb), len(gb))
            score(qb, gb, out)
            merge(out, scale, shift, g0 + offset, heap_v[q0 : q0 + rows], heap_i[q0 : q0 + rows])
    return heap_v, heap_i


_blas = ThreadpoolController()
#: below this many multiply-adds one thread beats starting several
THREADED_WORK = 1 << 24
#: score entries per thread's block: its gallery block (centred or scaled) stays in cache
#: between `prepare` and the product, the score block between the product and the merge
THREAD_BLOCK = 1 << 22


def _blas_threads() -> int:
    """The BLAS thread count (OPENBLAS_NUM_THREADS, threadpoolctl limits): the threads to use."""
    return min((t["num_threads"] for t in _blas.select(user_api="blas").info()), default=1)


def product_merge(
    q: np.ndarray,
    g: np.ndarray,
    size: int,
    block_size: int,
    score: BlockScorer,
    prepare: GalleryPrep = _as_is,
) -> tuple[np.ndarray, np.ndarray]:
    """`merge_blocks` for a `score` that is a matrix product (BLAS), on every BLAS thread.

    Each thread scores (one-thread BLAS) and merges its own share, the gallery's when the
    gallery spans several blocks, else the queries': the heap merge of a block runs while the
    other threads multiply, its block still in cache, and no thread waits at a barrier between
    the product and the merge (BLAS threads spinning there cost milliseconds per call).
    """
    threads = _blas_threads()
    if threads == 1 or len(q) * len(g) * q.shape[1] < THREADED_WORK:
        return _merge(q, g, size, block_size, score, prepare, 0, kernels.merge_topk_serial)
    budget = max(1, min(block_size // threads, THREAD_BLOCK))
    split_gallery = len(g) >= threads * _block_shape(len(q), len(g), budget)[1]
    parts = np.array_split(np.arange(len(g) if split_gallery else len(q)), threads)

    def work(part: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        lo, hi = (int(part[0]), int(part[-1]) + 1) if len(part) else (0, 0)
        if split_gallery:
            args = (q, g[lo:hi], size, budget, score, prepare, lo)
        else:
            args = (q[lo:hi], g, size, budget, score, prepare, 0)
        return _merge(*args, kernels.merge_topk_serial)

    with _blas.limit(limits=1, user_api="blas"), ThreadPoolExecutor(threads) as pool:
        heaps = list(pool.map(work, parts))
    heap_v, heap_i = (
        np.concatenate(h, axis=1 if split_gallery else 0) for h in zip(*heaps, strict=True)
    )
    if split_gallery:  # the best `size` of the threads' heaps, row by row
        heap_v, heap_i = (a[:, :size] for a in sort_rows(heap_v, heap_i))
    return heap_v, heap_i


def check_finite(heap_i: np.ndarray) -> None:
    if (heap_i < 0).any():
        raise ValueError("non-finite scores: queries or gallery contain NaN or infinity")


def sort_rows(v: np.ndarray, i: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
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
    once (working memory ~ 4 * block_size bytes plus one block of the gallery).
    """
    spec = get_metric(metric)
    q, g = _check_pair(queries, gallery)
    if not isinstance(k, int | np.integer) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    if block_size < 1:
        raise ValueError(f"block_size must be positive, got {block_size}")
    k = min(int(k), len(g))
    if k == 0 or len(q) == 0:
        return np.zeros((len(q), k), np.float32), np.zeros((len(q), k), np.int64)
    if spec.topk is not None:
        return spec.topk(q, g, k, block_size)
    if spec.normalized:
        q, prepare = l2_normalize(q), lambda gb: _as_is(l2_normalize(gb))
    else:
        prepare = _as_is
    heap_v, heap_i = merge_blocks(q, g, k, block_size, spec.scores, prepare)
    check_finite(heap_i)
    return sort_rows(heap_v, heap_i)
