"""(Dis)similarities between embeddings: scores (higher = closer) and exact top-k in blocks."""

from xmodal.similarity.metrics import (
    METRICS,
    Metric,
    MetricDef,
    get_metric,
    l2_normalize,
    metric_names,
    reference_scores,
    register_metric,
)
from xmodal.similarity.search import block_scores, topk

__all__ = [
    "METRICS",
    "Metric",
    "MetricDef",
    "block_scores",
    "get_metric",
    "l2_normalize",
    "metric_names",
    "reference_scores",
    "register_metric",
    "topk",
]
# differentiable (torch) scores for training: xmodal.similarity.differentiable.torch_scores
