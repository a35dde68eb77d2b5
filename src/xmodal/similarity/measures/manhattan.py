"""Manhattan (L1) distance, negated: -sum_i |x_i - y_i|."""

from __future__ import annotations

import numpy as np

from xmodal.similarity import kernels
from xmodal.similarity.metrics import MetricDef, register_metric


def _reference(q: np.ndarray, g: np.ndarray) -> np.ndarray:
    return -np.abs(q - g).sum(2)


def _torch(a, b, eps: float = 1e-8):
    import torch

    return -torch.cdist(a, b, p=1)


register_metric("manhattan", MetricDef(_reference, kernels.manhattan_scores, _torch))
