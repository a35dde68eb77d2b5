"""Trained projection aligners: one head per modality into a shared space, compared with the
aligner's metric (the same metric scores pairs inside the loss and at retrieval).

With the regression loss (`loss="mse"`) there is no shared space to learn jointly (both heads
could collapse to a constant): the text head maps into the (standardised) image space, the image
side is left as is, and `dim` is unused.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from xmodal.align.nets import PairModel, projection_head
from xmodal.align.registry import register
from xmodal.align.training import TorchAligner
from xmodal.similarity.metrics import Metric


class _Projection(TorchAligner):
    depth: int
    hidden: int

    def __init__(
        self,
        metric: Metric | str = Metric.COSINE,
        dim: int = 256,
        dropout: float = 0.0,
        **training: Any,
    ) -> None:
        super().__init__(metric, **training)
        self.dim = dim
        self.dropout = dropout

    def _build(self, d_text: int, d_image: int) -> PairModel:
        def head(d_in: int, d_out: int) -> nn.Module:
            return projection_head(d_in, d_out, self.hidden, self.depth, self.dropout)

        if self.loss == "mse":
            return PairModel(d_text, d_image, head(d_text, d_image), nn.Identity(), self.metric)
        return PairModel(
            d_text, d_image, head(d_text, self.dim), head(d_image, self.dim), self.metric
        )


@register("linear")
class LinearAligner(_Projection):
    """One linear map per modality (input dropout optional)."""

    depth = 0
    hidden = 0


@register("mlp")
class MLPAligner(_Projection):
    """Residual MLP heads: a linear path plus `depth` hidden layers of `hidden` units with
    LayerNorm, GELU and dropout."""

    def __init__(
        self,
        metric: Metric | str = Metric.COSINE,
        dim: int = 256,
        hidden: int = 1024,
        depth: int = 1,
        dropout: float = 0.2,
        **training: Any,
    ) -> None:
        if depth < 1:
            raise ValueError(f"mlp aligner needs depth >= 1 (use 'linear' for 0), got {depth}")
        super().__init__(metric, dim, dropout, **training)
        self.hidden = hidden
        self.depth = depth
