"""Score fusion: several aligners fitted on the same pairs, their scores standardised and summed,
optionally corrected for hubness (CSLS).

Members make different errors (a closed-form CCA, a regression, a trained MLP head, the image
classifier's own view in `conse`), so the weighted sum of their standardised scores ranks better
than each alone. Each member's score scale is fixed at fit time from training pairs, so fused
scores do not depend on how queries are blocked.

Hubness: in high dimension a few gallery items are near to many queries and crowd every top-k.
CSLS (Conneau et al., "Word translation without parallel data", ICLR 2018) scores
s(t, i) - (r(t) + r(i)) / 2, where r(i) is the mean score of image i with its `csls` nearest
training captions and r(t) that of caption t with its nearest training images. Only training
items serve as neighbours (never the test queries), and r of each item is computed once, when
it is transformed, and carried as one extra column: blocked scoring stays exact.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from xmodal.align.base import Aligner, FitContext, Scorer
from xmodal.align.registry import build_aligner, register
from xmodal.embeddings import Embedded
from xmodal.similarity.metrics import Metric

#: training captions used to measure each member's score scale
SCALE_SAMPLE = 512
#: training items kept as CSLS neighbours (a seeded sample when there are more)
CSLS_BANK = 2048
#: gallery rows scored against the bank at a time (bank x block scores in memory)
CSLS_BLOCK = 4096


@register("ensemble")
class Ensemble(Aligner):
    """Members are fitted with the ensemble's own fit context (same seed, validation pairs,
    encoder specs); the scale sample and the CSLS bank are seeded by it too."""

    learned_scorer = True  # a sum of several spaces' scores: no single vector index serves it
    composite = True

    def __init__(
        self,
        metric: Metric | str = Metric.COSINE,
        members: list[dict[str, Any]] | None = None,
        csls: int = 0,
    ) -> None:
        if not members:
            raise ValueError("an ensemble needs `members`: a list of {kind: ..., <params>}")
        if csls < 0:
            raise ValueError(f"ensemble: csls is a neighbour count (0 = off), got {csls}")
        self.metric = Metric(metric)
        self.members = [dict(m) for m in members]
        self.csls = csls
        self.weights = np.array([self._weight(spec) for spec in self.members], np.float64)
        self.members_ = [self._member(spec) for spec in self.members]

    @staticmethod
    def _weight(spec: dict[str, Any]) -> float:
        weight = spec.get("weight", 1.0)
        if not isinstance(weight, int | float) or weight <= 0:
            raise ValueError(f"ensemble member {spec!r}: weight must be a positive number")
        return float(weight)

    def _member(self, spec: dict[str, Any]) -> Aligner:
        params = {k: v for k, v in spec.items() if k not in ("kind", "weight")}
        if "kind" not in spec or spec["kind"] == "ensemble":
            raise ValueError(f"ensemble member {spec!r}: needs a `kind` other than ensemble")
        params.setdefault("metric", self.metric)
        return build_aligner(spec["kind"], **params)

    def fit(self, train: Embedded, context: FitContext | None = None) -> Ensemble:
        context = context or FitContext()
        rng = np.random.default_rng(context.seed)
        sample = rng.choice(len(train.texts), min(SCALE_SAMPLE, len(train.texts)), replace=False)
        scales, widths = [], []
        for member in self.members_:
            member.fit(train, context)
            t = member.transform(train)
            s = member.scorer()(t.texts[sample], t.images)
            scales.append((float(s.mean()), float(s.std()) or 1.0))
            widths.append((t.texts.shape[1], t.images.shape[1]))
        self.scales_ = np.array(scales, np.float64)
        self.widths_ = np.array(widths, np.int64)  # each member's slice of the fused vectors
        if self.csls:
            self.bank_texts_ = self._fused_texts(_sample(train.texts, rng))
            self.bank_images_ = self._fused_images(_sample(train.images, rng))
        return self

    # the fused space: members' vectors side by side, plus the CSLS column when on ------------
    def _fused_images(self, x: np.ndarray) -> np.ndarray:
        return np.concatenate([m.transform_images(x) for m in self.members_], axis=1)

    def _fused_texts(self, y: np.ndarray) -> np.ndarray:
        return np.concatenate([m.transform_texts(y) for m in self.members_], axis=1)

    def transform_images(self, x: np.ndarray) -> np.ndarray:
        return self._with_csls(self._fused_images(x), images=True)

    def transform_texts(self, y: np.ndarray) -> np.ndarray:
        return self._with_csls(self._fused_texts(y), images=False)

    def _with_csls(self, fused: np.ndarray, images: bool) -> np.ndarray:
        """With CSLS on, each row gains r: its mean fused score with its `csls` nearest
        training items of the other modality."""
        if not self.csls:
            return fused
        score, k = self._fused_scorer(), self.csls
        if images:
            r = _blocked(lambda g: _top_mean(score(self.bank_texts_, g), k, axis=0), fused)
        else:
            r = _blocked(lambda q: _top_mean(score(q, self.bank_images_), k, axis=1), fused)
        return np.concatenate([fused, r[:, None]], axis=1)

    def _fused_scorer(self) -> Scorer:
        scorers = [m.scorer() for m in self.members_]
        t_cuts = np.cumsum([0, *self.widths_[:, 0]])
        i_cuts = np.cumsum([0, *self.widths_[:, 1]])
        weights = self.weights / self.weights.sum()

        def fused(texts: np.ndarray, images: np.ndarray) -> np.ndarray:
            total = np.zeros((len(texts), len(images)), np.float64)
            for j, (score, (mean, std)) in enumerate(zip(scorers, self.scales_, strict=True)):
                s = score(texts[:, t_cuts[j] : t_cuts[j + 1]], images[:, i_cuts[j] : i_cuts[j + 1]])
                total += weights[j] * (s - mean) / std
            return total.astype(np.float32)

        return fused

    def scorer(self) -> Scorer:
        fused = self._fused_scorer()
        if not self.csls:
            return fused

        def corrected(texts: np.ndarray, images: np.ndarray) -> np.ndarray:
            s = fused(texts[:, :-1], images[:, :-1])
            return s - 0.5 * (texts[:, -1:] + images[:, -1][None, :])

        return corrected

    def state(self) -> dict[str, np.ndarray]:
        out = {"scales": self.scales_, "widths": self.widths_}
        if self.csls:
            out |= {"bank_texts": self.bank_texts_, "bank_images": self.bank_images_}
        for j, member in enumerate(self.members_):
            out |= {f"m{j}.{k}": v for k, v in member.state().items()}
        return out

    def fitted_info(self) -> dict[str, Any]:
        return {
            f"m{j}.{k}": v for j, m in enumerate(self.members_) for k, v in m.fitted_info().items()
        }

    def set_fitted_info(self, info: dict[str, Any]) -> None:
        for j, member in enumerate(self.members_):
            member.set_fitted_info({name: info[f"m{j}.{name}"] for name in member.fitted_attrs})

    def set_state(self, tensors: dict[str, np.ndarray]) -> None:
        self.scales_, self.widths_ = tensors["scales"], tensors["widths"]
        if self.csls:
            self.bank_texts_, self.bank_images_ = tensors["bank_texts"], tensors["bank_images"]
        for j, member in enumerate(self.members_):
            prefix = f"m{j}."
            member.set_state(
                {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}
            )


def _sample(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    if len(x) <= CSLS_BANK:
        return x
    return x[np.sort(rng.choice(len(x), CSLS_BANK, replace=False))]


def _top_mean(scores: np.ndarray, k: int, axis: int) -> np.ndarray:
    """Mean of the k largest scores along `axis` (all of them when there are fewer)."""
    n = scores.shape[axis]
    if k >= n:
        return scores.mean(axis=axis)
    return np.partition(scores, n - k, axis=axis).take(range(n - k, n), axis=axis).mean(axis=axis)


def _blocked(fn, rows: np.ndarray) -> np.ndarray:
    """fn over blocks of rows, so that bank x rows scores never exist at once."""
    parts = [fn(rows[s : s + CSLS_BLOCK]) for s in range(0, len(rows), CSLS_BLOCK)]
    return np.concatenate(parts).astype(np.float32) if parts else np.zeros(0, np.float32)
