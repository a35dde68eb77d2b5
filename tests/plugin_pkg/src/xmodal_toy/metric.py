"""The `chebyshev` metric: the L-infinity distance, negated (-max_i |x_i - y_i|)."""

from __future__ import annotations

import numpy as np

from xmodal.similarity.metrics import MetricDef


def _reference(q: np.ndarray, g: np.ndarray) -> np.ndarray:
    return -np.abs(q - g).max(2)


def _scores(q: np.ndarray, g: np.ndarray, out: np.ndarray) -> None:
    for i in range(len(q)):  # one query at a time: memory stays at one ng x d difference
        out[i] = -np.abs(g - q[i]).max(1)


def _torch(a, b, eps: float = 1e-8):
    import torch

    return -torch.cdist(a, b, p=float("inf"))


CHEBYSHEV = MetricDef(_reference, _scores, _torch)
