"""Learned metrics: aligners whose scorer is a neural network on the pair, trained with the
score losses (InfoNCE, hinge, listwise) on in-batch score matrices. Each modality is first
projected to `dim` (linear map, or a residual MLP when head_depth > 0); `metric` is unused.

Gallery scoring is exact and blocked (xmodal.align.nets.blocked_pair_scores): memory is bounded
by a fixed per-block budget, never n_texts x n_images x dim.
"""

from __future__ import annotations

from typing import Any

from xmodal.align.nets import BilinearScorer, MLPPairScorer, PairModel, projection_head
from xmodal.align.registry import register
from xmodal.align.training import TorchAligner
from xmodal.similarity.metrics import Metric


class _LearnedMetric(TorchAligner):
    supports_mse = False
    learned_scorer = True

    def __init__(
        self,
        metric: Metric | str = Metric.COSINE,
        dim: int = 128,
        head_depth: int = 0,
        head_hidden: int = 512,
        dropout: float = 0.1,
        **training: Any,
    ) -> None:
        super().__init__(metric, **training)
        self.dim, self.head_depth, self.head_hidden = dim, head_depth, head_hidden
        self.dropout = dropout

    def _heads(self, d_text: int, d_image: int):
        args = (self.dim, self.head_hidden, self.head_depth, self.dropout)
        return projection_head(d_text, *args), projection_head(d_image, *args)


@register("mlp_scorer")
class MLPScorerAligner(_LearnedMetric):
    """Score = MLP([u, v, u*v, |u-v|]) with `depth` hidden layers of `hidden` units."""

    def __init__(
        self, metric: Metric | str = Metric.COSINE, hidden: int = 256, depth: int = 2, **kw: Any
    ):
        super().__init__(metric, **kw)
        self.hidden, self.depth = hidden, depth

    def _build(self, d_text: int, d_image: int) -> PairModel:
        pair = MLPPairScorer(self.dim, self.hidden, self.depth, self.dropout)
        return PairModel(d_text, d_image, *self._heads(d_text, d_image), self.metric, pair)


@register("bilinear")
class BilinearAligner(_LearnedMetric):
    """Score = u^T (diag(d) + L R^T) v on unit vectors, with L, R of rank `rank`."""

    def __init__(self, metric: Metric | str = Metric.COSINE, rank: int = 32, **kw: Any):
        super().__init__(metric, **kw)
        self.rank = rank

    def _build(self, d_text: int, d_image: int) -> PairModel:
        pair = BilinearScorer(self.dim, self.rank)
        return PairModel(d_text, d_image, *self._heads(d_text, d_image), self.metric, pair)
