"""The aligner shape: fit on training pairs, map each modality into a space where a metric
(or a learned scorer) compares them; saved as safetensors + a JSON header.

Conventions (scikit-learn): hyper-parameters only in __init__, learned state in attributes
ending in "_", fit returns self.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Self

import numpy as np
from safetensors.numpy import load_file, save_file

from xmodal.embeddings import Embedded
from xmodal.similarity.metrics import Metric
from xmodal.similarity.ranking import Scorer


@dataclass(frozen=True)
class FitContext:
    """What a fit may use besides the training pairs and the hyper-parameters: not saved with
    the model, and never part of `get_params`."""

    seed: int = 0
    progress: bool = False
    #: torch device for trained aligners (None: cuda when present, else cpu)
    device: str | None = None
    #: validation pairs, for early stopping and model selection only
    val: Embedded | None = None
    #: Recall@K cut-offs of the run, and the score that early stopping and selection maximise
    ks: tuple[int, ...] = (1, 5, 10)
    primary: str = "rsum"
    #: specs of the encoders that made the vectors, for aligners that use the models themselves
    image_encoder: str | None = None
    text_encoder: str | None = None


class Aligner(ABC):
    """Maps image and text vectors into one comparable space."""

    #: the registry name used in configs and saved files
    kind: str
    metric: Metric = Metric.COSINE
    #: True when `scorer()` is a learned network rather than `metric` (no vector index serves it)
    learned_scorer: ClassVar[bool] = False

    def fit(self, train: Embedded, val: Embedded | None = None) -> Self:
        """Learn from the training pairs; `val` is only for model selection/early stopping."""
        return self

    @abstractmethod
    def transform_images(self, x: np.ndarray) -> np.ndarray: ...

    @abstractmethod
    def transform_texts(self, y: np.ndarray) -> np.ndarray: ...

    def scorer(self) -> Scorer:
        """How transformed texts and images are compared (the metric; learned scorers override)."""
        from xmodal.similarity import block_scores

        metric = self.metric
        return lambda q, g: block_scores(q, g, metric)

    def transform(self, data: Embedded) -> Embedded:
        return Embedded(
            self.transform_images(data.images), self.transform_texts(data.texts), data.caption_image
        )

    # persistence: hyper-parameters in the JSON header, learned arrays as tensors
    def get_params(self) -> dict[str, Any]:
        return {}

    def state(self) -> dict[str, np.ndarray]:
        return {}

    def set_state(self, tensors: dict[str, np.ndarray]) -> None:  # noqa: B027 (stateless default)
        """Restore what `state` returned; aligners without learned arrays have nothing to do."""

    def save(self, path: str | Path) -> None:
        meta = {"kind": self.kind, "metric": str(self.metric), "params": self.get_params()}
        tensors = {k: np.ascontiguousarray(v) for k, v in self.state().items()}
        path = Path(path)
        tmp = path.with_suffix(path.suffix + ".tmp")
        save_file(tensors, str(tmp), metadata={"xmodal": json.dumps(meta)})
        tmp.replace(path)


def load_aligner(path: str | Path) -> Aligner:
    """Rebuild a saved aligner (no pickle: hyper-parameters are JSON, arrays are safetensors)."""
    from safetensors import safe_open

    from xmodal.align.registry import build_aligner

    with safe_open(str(path), framework="numpy") as f:
        meta = json.loads(f.metadata()["xmodal"])
    aligner = build_aligner(meta["kind"], metric=meta["metric"], **meta["params"])
    aligner.set_state(load_file(str(path)))
    return aligner
