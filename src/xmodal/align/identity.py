"""Zero-shot: compare the encoders' vectors as they are (models that share one space)."""

from __future__ import annotations

import numpy as np

from xmodal.align.base import Aligner, FitContext
from xmodal.align.registry import register
from xmodal.embeddings import Embedded
from xmodal.similarity.metrics import Metric


@register("identity")
class Identity(Aligner):
    def __init__(self, metric: Metric | str = Metric.COSINE) -> None:
        self.metric = Metric(metric)

    def fit(self, train: Embedded, context: FitContext | None = None) -> Identity:
        if train.images.shape[1] != train.texts.shape[1]:
            raise ValueError(
                f"identity alignment needs one shared space, but images are "
                f"{train.images.shape[1]}-d and texts {train.texts.shape[1]}-d; "
                "use a trained aligner (e.g. linear) for separately trained encoders"
            )
        return self

    def transform_images(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(x, np.float32)

    def transform_texts(self, y: np.ndarray) -> np.ndarray:
        return np.asarray(y, np.float32)
