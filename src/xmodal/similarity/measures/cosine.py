"""Cosine similarity: the dot product of L2-normalised vectors."""

from __future__ import annotations

import numpy as np

from xmodal.similarity.metrics import MetricDef, l2_normalize, register_metric
from xmodal.similarity.search import check_finite, merge_blocks, sort_rows, sq_norms


def _reference(q: np.ndarray, g: np.ndarray) -> np.ndarray:
    qn = q / np.maximum(np.linalg.norm(q, axis=2, keepdims=True), 1e-12)
    gn = g / np.maximum(np.linalg.norm(g, axis=2, keepdims=True), 1e-12)
    return (qn * gn).sum(2)


def _scores(q: np.ndarray, g: np.ndarray, out: np.ndarray) -> None:
    np.matmul(q, g.T, out=out)  # both sides arrive normalised


def _inverse_norms(gb: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return (
        gb,
        1 / np.maximum(np.sqrt(sq_norms(gb)), np.float32(1e-12)),
        np.zeros(len(gb), np.float32),
    )


def _topk(q: np.ndarray, g: np.ndarray, k: int, block_size: int):
    """Normalised queries against the raw gallery, each column scaled by 1 / |g| in the heap
    merge: no normalised copy of the gallery."""
    heap_v, heap_i = merge_blocks(l2_normalize(q), g, k, block_size, _scores, _inverse_norms)
    check_finite(heap_i)
    return sort_rows(heap_v, heap_i)


def _torch(a, b, eps: float = 1e-8):
    from torch.nn.functional import normalize

    return normalize(a, dim=1) @ normalize(b, dim=1).T


register_metric("cosine", MetricDef(_reference, _scores, _torch, normalized=True, topk=_topk))
