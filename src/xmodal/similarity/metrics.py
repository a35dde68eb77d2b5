"""Metrics: named (dis)similarities, each one registered `MetricDef`.

Every metric gives *scores*: higher means more similar. Distances are negated, so that cosine
similarity and the distances rank the same way everywhere. The built-ins (the paper's four)
live one file each in `xmodal.similarity.measures`; other packages add metrics through the
entry-point group `xmodal.metrics` (see docs/extending.md). Search, evaluation and training look
a metric up here by name; none of them knows the built-ins.

`Metric` names the built-ins (`Metric.COSINE`, ...); `Metric(name)` also accepts the name of any
other registered metric, so configs, aligners and saved files take a plugin's name as they take
a built-in's.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import numpy as np

from xmodal.registry import Registry


@dataclass(frozen=True)
class MetricDef:
    """Everything search, evaluation and training need to use one metric (higher = closer)."""

    #: the plain formula, the ground truth for tests: float64 (nq, 1, d) and (1, ng, d) -> nq x ng
    reference: Callable[[np.ndarray, np.ndarray], np.ndarray]
    #: exact float32 scores of a block: (q nq x d, g ng x d, out nq x ng) fills `out`
    scores: Callable[[np.ndarray, np.ndarray, np.ndarray], None]
    #: differentiable scores for training: (a, b, eps) torch tensors -> len(a) x len(b)
    torch_scores: Callable[..., Any]
    #: scores depend only on directions: both sides are L2-normalised before `scores`
    normalized: bool = False
    #: an exact top-k of its own, faster than scoring blocks into heaps:
    #: (q, g, k, block_size) -> (scores float32, indices int64) nq x k, best first, ties to the
    #: lower index; q and g are checked float32 matrices, 1 <= k <= len(g)
    topk: Callable[..., tuple[np.ndarray, np.ndarray]] | None = None


def _check(name: str, metric: Any) -> MetricDef:
    if not isinstance(metric, MetricDef):
        raise TypeError(
            f"a metric must be an xmodal.similarity.metrics.MetricDef, got {type(metric).__name__}"
        )
    return metric


METRICS: Registry[MetricDef] = Registry(
    "metric", "xmodal.metrics", "xmodal.similarity.measures", _check
)
register_metric = METRICS.register


class Metric(StrEnum):
    COSINE = "cosine"
    EUCLIDEAN = "euclidean"
    MANHATTAN = "manhattan"
    CHI_SQUARE = "chi_square"

    @classmethod
    def _missing_(cls, value: object) -> Metric:
        """A registered metric that is not a built-in: a member-like value of its own."""
        if not isinstance(value, str):
            raise METRICS.unknown(str(value))
        METRICS[value]  # unknown names and broken plugins fail here, with a readable message
        member = str.__new__(cls, value)
        member._name_, member._value_ = value.upper(), value
        return cls._value2member_map_.setdefault(value, member)  # type: ignore[return-value]


def get_metric(metric: Metric | str) -> MetricDef:
    """The registered definition of a metric name (unknown names list the choices)."""
    return METRICS[str(metric)]


def metric_names() -> list[str]:
    """Every metric name a config may use: the built-ins, then installed plugins'."""
    return METRICS.names()


def l2_normalize(x: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), eps)


def reference_scores(queries: np.ndarray, gallery: np.ndarray, metric: Metric | str) -> np.ndarray:
    """Full score matrix by the plain formula (float64 internally): the ground truth for tests.

    Materialises nq x ng x d; only for small inputs.
    """
    q = np.asarray(queries, np.float64)[:, None, :]
    g = np.asarray(gallery, np.float64)[None, :, :]
    return get_metric(metric).reference(q, g)
