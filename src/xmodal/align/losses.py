"""Training losses for aligners, one small class each.

Score losses take a texts x images score matrix over a batch (higher = closer, from a metric or
a learned scorer) and a boolean mask of positive pairs of the same shape. Several captions of
one image are all positives: they are never pushed apart as negatives. Every score loss is
symmetric: it ranks images for each text (rows) and texts for each image (columns).

`relevance` (optional, same shape, higher = more relevant) grades the non-positive items for
the listwise losses; without it relevance is the positive mask (binary).
"""

from __future__ import annotations

import inspect
import math
from typing import Any

import torch
from torch import nn

Tensor = torch.Tensor


class ScoreLoss(nn.Module):
    """A loss on a texts x images score matrix and its positive mask."""

    #: whether the loss wants graded relevance (see module docstring)
    graded: bool = False

    def forward(self, scores: Tensor, positives: Tensor, relevance: Tensor | None = None) -> Tensor:
        return 0.5 * (
            self.rows(scores, positives, relevance)
            + self.rows(scores.T, positives.T, None if relevance is None else relevance.T)
        )

    def rows(self, scores: Tensor, positives: Tensor, relevance: Tensor | None) -> Tensor:
        """Mean loss of ranking the columns for each row."""
        raise NotImplementedError


class Temperature(nn.Module):
    """Scores -> logits by a (learnable, log-parametrised) inverse temperature, clamped so the
    logits cannot blow up."""

    def __init__(self, temperature: float, learnable: bool, max_scale: float) -> None:
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        init = torch.tensor(math.log(1.0 / temperature))
        self.log_scale = nn.Parameter(init, requires_grad=learnable)
        self.max_log_scale = math.log(max_scale)

    def forward(self, scores: Tensor) -> Tensor:
        return scores * self.log_scale.clamp(max=self.max_log_scale).exp()

    @property
    def value(self) -> float:
        """The current temperature."""
        return float(torch.exp(-self.log_scale.detach().clamp(max=self.max_log_scale)))


def _positive_nll(logits: Tensor, positives: Tensor) -> Tensor:
    """Per row: mean over positives p of -log(e^p / (e^p + sum of e^negatives)); other positives
    are left out of the denominator. Rows without positives are skipped."""
    low = torch.finfo(logits.dtype).min / 4  # finite, so rows without negatives stay NaN-free
    neg_lse = logits.masked_fill(positives, low).logsumexp(1, keepdim=True)
    nll = torch.logaddexp(logits, neg_lse) - logits
    count = positives.sum(1)
    per_row = (nll * positives).sum(1) / count.clamp_min(1)
    return per_row[count > 0].mean()


class InfoNCE(ScoreLoss):
    """Symmetric InfoNCE (CLIP's loss) with a learnable temperature; multi-positive aware."""

    def __init__(
        self, temperature: float = 0.05, learn_temperature: bool = True, max_scale: float = 100.0
    ) -> None:
        super().__init__()
        self.temperature = Temperature(temperature, learn_temperature, max_scale)

    def rows(self, scores: Tensor, positives: Tensor, relevance: Tensor | None) -> Tensor:
        return _positive_nll(self.temperature(scores), positives)


class HingeRanking(ScoreLoss):
    """VSE++ triplet ranking loss: for each positive pair, hinge violations margin - s(pos) +
    s(neg) against the hardest in-batch negative (`hardest`) or summed over all negatives;
    averaged over positive pairs. The margin is in score units of the chosen metric."""

    def __init__(self, margin: float = 0.2, hardest: bool = True) -> None:
        super().__init__()
        self.margin = margin
        self.hardest = hardest

    def rows(self, scores: Tensor, positives: Tensor, relevance: Tensor | None) -> Tensor:
        r, c = positives.nonzero(as_tuple=True)
        pos = scores[r, c][:, None]
        cost = (self.margin - pos + scores[r]).clamp_min(0) * ~positives[r]
        per_pair = cost.max(1).values if self.hardest else cost.sum(1)
        return per_pair.mean()


class ListNet(ScoreLoss):
    """ListNet (top-one probabilities): cross-entropy between the softmax of the target relevance
    and the softmax of the logits. Binary relevance: uniform over the positives. Graded: softmax
    of relevance / target_temperature (e.g. image-image similarity as relevance)."""

    def __init__(
        self,
        temperature: float = 0.05,
        learn_temperature: bool = True,
        max_scale: float = 100.0,
        graded: bool = False,
        target_temperature: float = 0.1,
    ) -> None:
        super().__init__()
        self.temperature = Temperature(temperature, learn_temperature, max_scale)
        self.graded = graded
        self.target_temperature = target_temperature

    def rows(self, scores: Tensor, positives: Tensor, relevance: Tensor | None) -> Tensor:
        if self.graded and relevance is not None:
            target = torch.softmax(relevance / self.target_temperature, 1)
        else:
            target = positives / positives.sum(1, keepdim=True).clamp_min(1)
        keep = positives.any(1)
        ce = -(target * torch.log_softmax(self.temperature(scores), 1)).sum(1)
        return ce[keep].mean()


class ListMLE(ScoreLoss):
    """ListMLE: Plackett-Luce likelihood of the target order, truncated at the top. Binary
    relevance: the positives first (ties by current score), truncated after them. Graded: the
    top `top_k` items by relevance."""

    def __init__(
        self,
        temperature: float = 0.05,
        learn_temperature: bool = True,
        max_scale: float = 100.0,
        graded: bool = False,
        top_k: int = 5,
    ) -> None:
        super().__init__()
        self.temperature = Temperature(temperature, learn_temperature, max_scale)
        self.graded = graded
        self.top_k = top_k

    def rows(self, scores: Tensor, positives: Tensor, relevance: Tensor | None) -> Tensor:
        logits = self.temperature(scores)
        graded = self.graded and relevance is not None
        rel = relevance if graded else positives.to(logits.dtype)
        # target order: by relevance, ties by the current score (two stable sorts)
        by_score = torch.argsort(logits.detach(), dim=1, descending=True, stable=True)
        by_rel = torch.argsort(rel.gather(1, by_score), dim=1, descending=True, stable=True)
        order = by_score.gather(1, by_rel)
        z = logits.gather(1, order)
        remaining = z.flip(1).logcumsumexp(1).flip(1)  # log-sum-exp of items i.. end
        depth = torch.full_like(positives.sum(1), self.top_k) if graded else positives.sum(1)
        inside = torch.arange(z.shape[1], device=z.device)[None, :] < depth[:, None]
        per_row = ((remaining - z) * inside).sum(1)
        return per_row[depth > 0].mean()


class MSE(nn.Module):
    """Regression baseline: mean squared error between mapped text vectors and their targets
    (the paired image vectors); it needs no score matrix."""

    def forward(self, predicted: Tensor, target: Tensor) -> Tensor:
        return ((predicted - target) ** 2).mean()


LOSSES: dict[str, type[nn.Module]] = {
    "infonce": InfoNCE,
    "hinge": HingeRanking,
    "listnet": ListNet,
    "listmle": ListMLE,
    "mse": MSE,
}


def build_loss(name: str, **params: Any) -> nn.Module:
    """A loss by name with its hyper-parameters; unknown names/parameters raise ValueError."""
    if name not in LOSSES:
        raise ValueError(f"unknown loss {name!r}; known: {sorted(LOSSES)}")
    cls = LOSSES[name]
    accepted = set(inspect.signature(cls.__init__).parameters) - {"self"}
    unknown = set(params) - accepted
    if unknown:
        raise ValueError(
            f"loss {name!r} got unknown parameter(s) {sorted(unknown)}; "
            f"accepted: {sorted(accepted)}"
        )
    return cls(**params)
