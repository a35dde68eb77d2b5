"""Score fusion: several aligners fitted on the same pairs, their scores standardised and summed.

Members make different errors (a closed-form CCA, a regression, a trained MLP head), so the sum
of their standardised scores ranks better than each alone. Each member's score scale is fixed
at fit time from training pairs, so fused scores do not depend on how queries are blocked.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from xmodal.align.base import Aligner, Scorer
from xmodal.align.registry import accepts, build_aligner, register
from xmodal.embeddings import Embedded
from xmodal.similarity.metrics import Metric

#: training captions used to measure each member's score scale
SCALE_SAMPLE = 512


@register("ensemble")
class Ensemble(Aligner):
    learned_scorer = True  # a sum of several spaces' scores: no single vector index serves it

    def __init__(
        self,
        metric: Metric | str = Metric.COSINE,
        members: list[dict[str, Any]] | None = None,
        seed: int = 0,
        progress: bool = False,
    ) -> None:
        if not members:
            raise ValueError("an ensemble needs `members`: a list of {kind: ..., <params>}")
        self.metric = Metric(metric)
        self.members = [dict(m) for m in members]
        self.seed = seed
        self.progress = progress
        self.members_ = [self._member(spec) for spec in self.members]

    def _member(self, spec: dict[str, Any]) -> Aligner:
        params = {k: v for k, v in spec.items() if k != "kind"}
        if "kind" not in spec or spec["kind"] == "ensemble":
            raise ValueError(f"ensemble member {spec!r}: needs a `kind` other than ensemble")
        for name, value in (("seed", self.seed), ("progress", self.progress)):
            if accepts(spec["kind"], name) and name not in params:
                params[name] = value
        params.setdefault("metric", self.metric)
        return build_aligner(spec["kind"], **params)

    def get_params(self) -> dict[str, Any]:
        return {"members": self.members, "seed": self.seed}

    def fit(self, train: Embedded, val: Embedded | None = None) -> Ensemble:
        rng = np.random.default_rng(self.seed)
        sample = rng.choice(len(train.texts), min(SCALE_SAMPLE, len(train.texts)), replace=False)
        scales, widths = [], []
        for member in self.members_:
            member.fit(train, val)
            t = member.transform(train)
            s = member.scorer()(t.texts[sample], t.images)
            scales.append((float(s.mean()), float(s.std()) or 1.0))
            widths.append((t.texts.shape[1], t.images.shape[1]))
        self.scales_ = np.array(scales, np.float64)
        self.widths_ = np.array(widths, np.int64)  # each member's slice of the fused vectors
        return self

    def transform_images(self, x: np.ndarray) -> np.ndarray:
        return np.concatenate([m.transform_images(x) for m in self.members_], axis=1)

    def transform_texts(self, y: np.ndarray) -> np.ndarray:
        return np.concatenate([m.transform_texts(y) for m in self.members_], axis=1)

    def scorer(self) -> Scorer:
        scorers = [m.scorer() for m in self.members_]
        t_cuts = np.cumsum([0, *self.widths_[:, 0]])
        i_cuts = np.cumsum([0, *self.widths_[:, 1]])

        def fused(texts: np.ndarray, images: np.ndarray) -> np.ndarray:
            total = np.zeros((len(texts), len(images)), np.float64)
            for j, (score, (mean, std)) in enumerate(zip(scorers, self.scales_, strict=True)):
                s = score(texts[:, t_cuts[j] : t_cuts[j + 1]], images[:, i_cuts[j] : i_cuts[j + 1]])
                total += (s - mean) / std
            return (total / len(scorers)).astype(np.float32)

        return fused

    def state(self) -> dict[str, np.ndarray]:
        out = {"scales": self.scales_, "widths": self.widths_}
        for j, member in enumerate(self.members_):
            out |= {f"m{j}.{k}": v for k, v in member.state().items()}
        return out

    def set_state(self, tensors: dict[str, np.ndarray]) -> None:
        self.scales_, self.widths_ = tensors["scales"], tensors["widths"]
        for j, member in enumerate(self.members_):
            prefix = f"m{j}."
            member.set_state(
                {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}
            )
