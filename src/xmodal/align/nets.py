"""Torch building blocks of the trained aligners: input standardisation, projection heads,
learned pair scorers, and the model that ties them together."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from xmodal.similarity.differentiable import torch_scores
from xmodal.similarity.metrics import Metric

Tensor = torch.Tensor


class Standardize(nn.Module):
    """Per-feature (x - mean) / std with statistics fitted on the training split (buffers, so
    they are saved with the model). Unfitted it is the identity."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("std", torch.ones(dim))

    def fit(self, x: Tensor) -> None:
        self.mean.copy_(x.mean(0))
        # constant features would divide by ~0: give them unit scale
        std = x.std(0)
        self.std.copy_(torch.where(std > 1e-6 * std.max().clamp_min(1e-12), std, 1.0))

    def forward(self, x: Tensor) -> Tensor:
        return (x - self.mean) / self.std


class ResidualMLP(nn.Module):
    """A linear map plus an MLP correction: x W + mlp(x). The linear path keeps the head at least
    as good as a linear projection; LayerNorm and dropout keep the deep path tame on small data."""

    def __init__(self, d_in: int, d_out: int, hidden: int, depth: int, dropout: float) -> None:
        super().__init__()
        self.skip = nn.Linear(d_in, d_out)
        layers: list[nn.Module] = []
        width = d_in
        for _ in range(depth):
            layers += [
                nn.Linear(width, hidden),
                nn.LayerNorm(hidden),
                nn.GELU(),
                nn.Dropout(dropout),
            ]
            width = hidden
        layers.append(nn.Linear(width, d_out))
        self.mlp = nn.Sequential(*layers)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        x = self.drop(x)
        return self.skip(x) + self.mlp(x)


def projection_head(d_in: int, d_out: int, hidden: int, depth: int, dropout: float) -> nn.Module:
    """depth 0: (input dropout +) one linear map; depth >= 1: a residual MLP."""
    if depth == 0:
        return nn.Sequential(nn.Dropout(dropout), nn.Linear(d_in, d_out))
    return ResidualMLP(d_in, d_out, hidden, depth, dropout)


class MLPPairScorer(nn.Module):
    """Learned metric: an MLP on [u, v, u*v, |u-v|] -> one score per pair.

    The first layer is applied to the four parts separately (the u and v parts once per vector,
    only the product and difference per pair), which is the same function as a linear layer on
    the concatenation but never builds the concatenated n_u x n_v x 4d tensor.
    """

    def __init__(self, dim: int, hidden: int, depth: int, dropout: float) -> None:
        super().__init__()
        if depth < 1:
            raise ValueError(f"mlp_scorer needs depth >= 1 hidden layers, got {depth}")
        self.first = nn.Linear(4 * dim, hidden)
        rest: list[nn.Module] = [nn.GELU(), nn.Dropout(dropout)]
        for _ in range(depth - 1):
            rest += [nn.Linear(hidden, hidden), nn.GELU(), nn.Dropout(dropout)]
        rest.append(nn.Linear(hidden, 1))
        self.rest = nn.Sequential(*rest)

    def forward(self, u: Tensor, v: Tensor) -> Tensor:
        wu, wv, wp, wa = self.first.weight.split(u.shape[1], dim=1)
        h = (u @ wu.T + self.first.bias)[:, None, :] + (v @ wv.T)[None, :, :]
        h = h + (u[:, None, :] * v[None, :, :]) @ wp.T
        h = h + (u[:, None, :] - v[None, :, :]).abs() @ wa.T
        return self.rest(h).squeeze(-1)

    def pair_width(self) -> int:
        """Elements per pair of the largest per-pair tensor (sizes the scoring blocks)."""
        return max(self.first.in_features // 4, self.first.out_features)


class BilinearScorer(nn.Module):
    """Learned bilinear similarity on unit vectors: s(u, v) = u^T (diag(d) + L R^T) v.

    Unlike a projection followed by cosine, the form acts after normalisation, may be asymmetric
    and indefinite (d can turn negative), so it reweights and couples directions of the shared
    space per pair. Computed with matrix products only.
    """

    def __init__(self, dim: int, rank: int) -> None:
        super().__init__()
        self.diag = nn.Parameter(torch.ones(dim))
        self.left = nn.Parameter(torch.randn(dim, rank) / dim)
        self.right = nn.Parameter(torch.randn(dim, rank) / dim)

    def forward(self, u: Tensor, v: Tensor) -> Tensor:
        u = nn.functional.normalize(u, dim=1)
        v = nn.functional.normalize(v, dim=1)
        return (u * self.diag) @ v.T + (u @ self.left) @ (v @ self.right).T

    def pair_width(self) -> int:
        """Only matrix products: one score per pair."""
        return 1


class PairModel(nn.Module):
    """Standardise -> project each modality -> score pairs with a metric or a learned scorer."""

    def __init__(
        self,
        d_text: int,
        d_image: int,
        text_head: nn.Module,
        image_head: nn.Module,
        metric: Metric,
        pair: nn.Module | None = None,
    ) -> None:
        super().__init__()
        self.std_text = Standardize(d_text)
        self.std_image = Standardize(d_image)
        self.text_head = text_head
        self.image_head = image_head
        self.metric = metric
        self.pair = pair

    def texts(self, x: Tensor) -> Tensor:
        return self.text_head(self.std_text(x))

    def images(self, x: Tensor) -> Tensor:
        return self.image_head(self.std_image(x))

    def score(self, u: Tensor, v: Tensor) -> Tensor:
        if self.pair is not None:
            return self.pair(u, v)
        return torch_scores(u, v, self.metric)


#: per-pair tensor elements allowed in one block of learned scoring (16M float32 = 64 MB)
PAIR_BUDGET = 1 << 24


def blocked_pair_scores(
    pair: nn.Module, texts: np.ndarray, images: np.ndarray, device: str, budget: int = PAIR_BUDGET
) -> np.ndarray:
    """Exact n_texts x n_images scores of a learned scorer, in blocks of texts x images sized
    so that no per-pair tensor exceeds `budget` elements."""
    out = np.empty((len(texts), len(images)), np.float32)
    width = pair.pair_width()
    cols = max(1, min(len(images), budget // width))
    rows = max(1, budget // (width * cols))
    g = torch.from_numpy(np.ascontiguousarray(images, np.float32)).to(device)
    with torch.inference_mode():
        for s in range(0, len(texts), rows):
            q = torch.from_numpy(np.ascontiguousarray(texts[s : s + rows], np.float32)).to(device)
            for c in range(0, len(images), cols):
                out[s : s + rows, c : c + cols] = pair(q, g[c : c + cols]).float().cpu().numpy()
    return out
