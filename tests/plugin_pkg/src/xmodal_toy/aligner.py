"""The `toy-lstsq` aligner: a least-squares map from image vectors to text vectors."""

from __future__ import annotations

import numpy as np

from xmodal.align.base import Aligner, FitContext
from xmodal.embeddings import Embedded
from xmodal.similarity.metrics import Metric


class LeastSquares(Aligner):
    trained = True

    def __init__(self, metric: Metric | str = Metric.COSINE) -> None:
        self.metric = Metric(metric)

    def fit(self, train: Embedded, context: FitContext | None = None) -> LeastSquares:
        x = np.hstack([train.images[train.caption_image], np.ones((len(train.texts), 1))])
        self.w_ = np.linalg.lstsq(x, train.texts, rcond=None)[0].astype(np.float32)
        return self

    def transform_images(self, x: np.ndarray) -> np.ndarray:
        return np.hstack([x, np.ones((len(x), 1), np.float32)]) @ self.w_

    def transform_texts(self, y: np.ndarray) -> np.ndarray:
        return np.asarray(y, np.float32)

    def state(self) -> dict[str, np.ndarray]:
        return {"w": self.w_}

    def set_state(self, tensors: dict[str, np.ndarray]) -> None:
        self.w_ = tensors["w"]
