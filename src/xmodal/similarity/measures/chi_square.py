"""Chi-square distance, negated, in a form defined for every real vector.

The textbook chi-square distance
    chi2(x, y) = 1/2 * sum_i (x_i - y_i)^2 / (x_i + y_i)
assumes non-negative coordinates (histograms). Embeddings have negative coordinates, where the
denominator can vanish or change sign. xmodal uses the symmetric form
    chi2(x, y) = 1/2 * sum_i (x_i - y_i)^2 / (|x_i| + |y_i|),   with 0/0 := 0,
which equals the textbook distance on non-negative inputs, is non-negative, symmetric, zero
only for x == y, and defined for every real vector.
"""

from __future__ import annotations

import numpy as np

from xmodal.similarity import kernels
from xmodal.similarity.metrics import MetricDef, register_metric


def _reference(q: np.ndarray, g: np.ndarray) -> np.ndarray:
    den = np.abs(q) + np.abs(g)
    num = (q - g) ** 2
    return -0.5 * np.divide(num, den, out=np.zeros_like(num), where=den > 0).sum(2)


def _torch(a, b, eps: float = 1e-8):
    from xmodal.similarity.differentiable import chi_square_sums  # torch only when training

    return -0.5 * chi_square_sums(a, b, eps)


register_metric("chi_square", MetricDef(_reference, kernels.chi_square_scores, _torch))
