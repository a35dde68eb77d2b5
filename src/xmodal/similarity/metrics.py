"""The four (dis)similarities of the paper behind one interface.

Every function returns *scores*: higher means more similar. Distances are negated, so that
cosine similarity and the three distances rank the same way everywhere.

Chi-square on real-valued embeddings: the textbook chi-square distance
    chi2(x, y) = 1/2 * sum_i (x_i - y_i)^2 / (x_i + y_i)
assumes non-negative coordinates (histograms). Embeddings have negative coordinates, where the
denominator can vanish or change sign. xmodal uses the symmetric form
    chi2(x, y) = 1/2 * sum_i (x_i - y_i)^2 / (|x_i| + |y_i|),   with 0/0 := 0,
which equals the textbook distance on non-negative inputs, is non-negative, symmetric, zero
only for x == y, and defined for every real vector.
"""

from __future__ import annotations

from enum import StrEnum

import numpy as np


class Metric(StrEnum):
    COSINE = "cosine"
    EUCLIDEAN = "euclidean"
    MANHATTAN = "manhattan"
    CHI_SQUARE = "chi_square"


def l2_normalize(x: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), eps)


def reference_scores(queries: np.ndarray, gallery: np.ndarray, metric: Metric | str) -> np.ndarray:
    """Full score matrix by the plain formula (float64 internally): the ground truth for tests.

    Materialises nq x ng x d; only for small inputs.
    """
    q = np.asarray(queries, np.float64)[:, None, :]
    g = np.asarray(gallery, np.float64)[None, :, :]
    match Metric(metric):
        case Metric.COSINE:
            qn = q / np.maximum(np.linalg.norm(q, axis=2, keepdims=True), 1e-12)
            gn = g / np.maximum(np.linalg.norm(g, axis=2, keepdims=True), 1e-12)
            return (qn * gn).sum(2)
        case Metric.EUCLIDEAN:
            return -np.sqrt(((q - g) ** 2).sum(2))
        case Metric.MANHATTAN:
            return -np.abs(q - g).sum(2)
        case Metric.CHI_SQUARE:
            den = np.abs(q) + np.abs(g)
            num = (q - g) ** 2
            return -0.5 * np.divide(num, den, out=np.zeros_like(num), where=den > 0).sum(2)
