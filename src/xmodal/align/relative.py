"""Relative representations (Moschella et al. 2023) / ASIF (Norelli et al. 2023): each vector
is re-expressed by its cosine similarities to anchors of its own modality, where the i-th text
anchor and the i-th image anchor are one training pair. Both modalities then live in the same
n_anchors-d space without any training; top-k sparsification keeps only the strongest anchors.
"""

from __future__ import annotations

from typing import Self

import numpy as np

from xmodal.align.base import Aligner, FitContext
from xmodal.align.registry import register
from xmodal.embeddings import Embedded
from xmodal.similarity.metrics import Metric, l2_normalize

SIDES = ("text", "image")


@register("relative")
class Relative(Aligner):
    def __init__(
        self,
        metric: Metric | str = Metric.COSINE,
        n_anchors: int = 2048,
        topk: int = 0,
        power: float = 1.0,
        center: bool = True,
    ) -> None:
        """n_anchors: training pairs used as anchors (all when fewer); topk: keep only the k
        largest similarities per vector (0: all); power: sign-preserving exponent on the kept
        similarities (ASIF uses large powers to sharpen); center: subtract each modality's
        train mean before the cosine (removes the gap offset, spreads the similarities). The
        anchors are a sample seeded by the fit context's seed."""
        if n_anchors < 1 or topk < 0:
            raise ValueError(f"relative needs n_anchors >= 1 and topk >= 0: {n_anchors}, {topk}")
        self.metric = Metric(metric)
        self.n_anchors, self.topk, self.power = n_anchors, topk, power
        self.center = center
        self.text_anchors_: np.ndarray | None = None

    def fit(self, train: Embedded, context: FitContext | None = None) -> Self:
        rng = np.random.default_rng((context or FitContext()).seed)
        n = len(train.texts)
        rows = np.sort(rng.choice(n, size=min(self.n_anchors, n), replace=False))
        texts, images = np.asarray(train.texts, np.float32), np.asarray(train.images, np.float32)
        zero_t, zero_i = np.zeros(texts.shape[1], np.float32), np.zeros(images.shape[1], np.float32)
        self.text_mean_ = texts.mean(0) if self.center else zero_t
        self.image_mean_ = images.mean(0) if self.center else zero_i
        self.text_anchors_ = l2_normalize(texts[rows] - self.text_mean_)
        self.image_anchors_ = l2_normalize(images[train.caption_image[rows]] - self.image_mean_)
        return self

    def transform_texts(self, y: np.ndarray) -> np.ndarray:
        return self._relative(y, self._get("text_anchors_"), self.text_mean_)

    def transform_images(self, x: np.ndarray) -> np.ndarray:
        return self._relative(x, self._get("image_anchors_"), self.image_mean_)

    def _get(self, name: str) -> np.ndarray:
        if getattr(self, name, None) is None:
            raise RuntimeError("aligner 'relative' is not fitted; call fit() or load it")
        return getattr(self, name)

    def _relative(self, x: np.ndarray, anchors: np.ndarray, mean: np.ndarray) -> np.ndarray:
        sims = l2_normalize(np.asarray(x, np.float32) - mean) @ anchors.T
        if 0 < self.topk < sims.shape[1]:
            cut = np.argpartition(-sims, self.topk - 1, axis=1)[:, : self.topk]
            kept = np.zeros_like(sims)
            np.put_along_axis(kept, cut, np.take_along_axis(sims, cut, 1), 1)
            sims = kept
        if self.power != 1.0:
            sims = np.sign(sims) * np.abs(sims) ** self.power
        return sims.astype(np.float32)

    def state(self) -> dict[str, np.ndarray]:
        return {
            f"{s}_{part}": self._get(f"{s}_{part}_") for s in SIDES for part in ("anchors", "mean")
        }

    def set_state(self, tensors: dict[str, np.ndarray]) -> None:
        for name, value in tensors.items():
            setattr(self, name + "_", value)
