"""Training-free aligners solved in closed form on the training pairs: each maps a modality by
an affine map (x - mean) @ projection, fitted on train only.

- center: subtract each modality's mean (removes the modality-gap offset; same dims needed)
- ridge: ridge regression from one modality into the other
- procrustes: PCA (optionally whitened) per side to k dims, then an orthogonal rotation
- cca: canonical correlation analysis, regularised, solved by an SVD of the whitened
  cross-covariance
"""

from __future__ import annotations

from typing import Literal, Self

import numpy as np
import scipy.linalg

from xmodal.align.base import Aligner, FitContext, IncompatibleParams
from xmodal.align.registry import register
from xmodal.embeddings import Embedded
from xmodal.similarity.metrics import Metric

SIDES = ("text", "image")


class AffineAligner(Aligner):
    """Per modality: (x - mean) @ projection (no projection: only centring). Learned arrays are
    text_mean_, text_proj_, image_mean_, image_proj_ (float64 while fitting, float32 out)."""

    text_mean_: np.ndarray | None = None
    text_proj_: np.ndarray | None = None
    image_mean_: np.ndarray | None = None
    image_proj_: np.ndarray | None = None

    def transform_texts(self, y: np.ndarray) -> np.ndarray:
        return self._apply("text", y)

    def transform_images(self, x: np.ndarray) -> np.ndarray:
        return self._apply("image", x)

    def _apply(self, side: str, x: np.ndarray) -> np.ndarray:
        mean, proj = getattr(self, f"{side}_mean_"), getattr(self, f"{side}_proj_")
        if mean is None:
            raise RuntimeError(f"aligner {self.kind!r} is not fitted; call fit() or load it")
        out = np.asarray(x, np.float32) - mean.astype(np.float32)
        return out if proj is None else out @ proj.astype(np.float32)

    def state(self) -> dict[str, np.ndarray]:
        names = [f"{s}_{part}" for s in SIDES for part in ("mean", "proj")]
        arrays = {n: getattr(self, n + "_") for n in names}
        return {n: a.astype(np.float32) for n, a in arrays.items() if a is not None}

    def set_state(self, tensors: dict[str, np.ndarray]) -> None:
        for side in SIDES:
            setattr(self, f"{side}_mean_", tensors[f"{side}_mean"])
            setattr(self, f"{side}_proj_", tensors.get(f"{side}_proj"))


def _pairs(train: Embedded) -> tuple[np.ndarray, np.ndarray]:
    """Caption vectors and their own images' vectors: the training pairs, as float64."""
    if len(train.texts) < 2:
        raise ValueError(f"closed-form aligners need >= 2 training pairs, got {len(train.texts)}")
    return np.asarray(train.texts, np.float64), np.asarray(train.paired_images, np.float64)


def _covariance(x: np.ndarray, reg: float) -> np.ndarray:
    """x^T x / n plus reg times the mean variance on the diagonal (scale-free shrinkage)."""
    cov = x.T @ x / len(x)
    return cov + reg * np.trace(cov) / len(cov) * np.eye(len(cov))


def _check_dim(kind: str, dim: int, train: Embedded) -> int:
    limit = min(train.texts.shape[1], train.images.shape[1], len(train.texts))
    if not 1 <= dim <= limit:
        raise IncompatibleParams(
            f"{kind}: dim must be in 1..{limit} (min of text dim, image dim, number of pairs), "
            f"got {dim}"
        )
    return dim


@register("center")
class Center(AffineAligner):
    """Mean-centring per modality: the cheapest fix of the gap offset (same dims required)."""

    def __init__(self, metric: Metric | str = Metric.COSINE) -> None:
        self.metric = Metric(metric)

    def fit(self, train: Embedded, context: FitContext | None = None) -> Self:
        if train.images.shape[1] != train.texts.shape[1]:
            raise ValueError(
                f"center needs one shared space, but images are {train.images.shape[1]}-d and "
                f"texts {train.texts.shape[1]}-d; use ridge, procrustes, cca or a trained aligner"
            )
        self.text_mean_ = np.asarray(train.texts, np.float64).mean(0)
        self.image_mean_ = np.asarray(train.images, np.float64).mean(0)
        return self


@register("ridge")
class Ridge(AffineAligner):
    """Ridge regression of one modality onto the other (both centred), then the metric.

    `alpha` is relative to the mean feature variance, so one value suits any encoder scale.
    """

    def __init__(
        self,
        metric: Metric | str = Metric.COSINE,
        alpha: float = 1.0,
        direction: Literal["text_to_image", "image_to_text"] = "text_to_image",
    ) -> None:
        if direction not in ("text_to_image", "image_to_text"):
            raise ValueError(
                f"ridge direction must be text_to_image or image_to_text: {direction!r}"
            )
        if alpha < 0:
            raise ValueError(f"ridge alpha must be >= 0, got {alpha}")
        self.metric = Metric(metric)
        self.alpha = alpha
        self.direction = direction

    def fit(self, train: Embedded, context: FitContext | None = None) -> Self:
        texts, images = _pairs(train)
        self.text_mean_, self.image_mean_ = texts.mean(0), images.mean(0)
        t, i = texts - self.text_mean_, images - self.image_mean_
        src, dst = (t, i) if self.direction == "text_to_image" else (i, t)
        proj = scipy.linalg.solve(
            _covariance(src, self.alpha) * len(src), src.T @ dst, assume_a="pos"
        )
        if self.direction == "text_to_image":
            self.text_proj_ = proj
        else:
            self.image_proj_ = proj
        return self


def _pca(x: np.ndarray, dim: int, whiten: bool) -> np.ndarray:
    """d x dim projection onto the top principal directions (scaled to unit variance if whiten)."""
    values, vectors = np.linalg.eigh(x.T @ x / len(x))
    top = np.argsort(values)[::-1][:dim]
    proj = vectors[:, top]
    return proj / np.sqrt(np.maximum(values[top], 1e-12)) if whiten else proj


@register("procrustes")
class Procrustes(AffineAligner):
    """PCA each side to `dim` (whitened by default), then the orthogonal rotation of the text
    side that best matches the paired image side (orthogonal Procrustes, via one SVD)."""

    def __init__(
        self, metric: Metric | str = Metric.COSINE, dim: int = 128, whiten: bool = True
    ) -> None:
        self.metric = Metric(metric)
        self.dim = dim
        self.whiten = whiten

    def fit(self, train: Embedded, context: FitContext | None = None) -> Self:
        dim = _check_dim("procrustes", self.dim, train)
        texts, images = _pairs(train)
        self.text_mean_, self.image_mean_ = texts.mean(0), images.mean(0)
        t, i = texts - self.text_mean_, images - self.image_mean_
        pt, pi = _pca(t, dim, self.whiten), _pca(i, dim, self.whiten)
        u, _, vt = np.linalg.svd((t @ pt).T @ (i @ pi))
        self.text_proj_, self.image_proj_ = pt @ u @ vt, pi
        return self


def _inverse_sqrt(cov: np.ndarray) -> np.ndarray:
    values, vectors = np.linalg.eigh(cov)
    return (vectors / np.sqrt(np.maximum(values, 1e-12))) @ vectors.T


@register("cca")
class CCA(AffineAligner):
    """Regularised CCA in closed form: whiten each side (covariance + reg * mean variance),
    SVD of the whitened cross-covariance, keep `dim` canonical directions, each scaled by its
    canonical correlation ** power (power 0: plain CCA; > 0 stresses the reliable directions)."""

    def __init__(
        self,
        metric: Metric | str = Metric.COSINE,
        dim: int = 128,
        reg: float = 0.1,
        power: float = 1.0,
    ) -> None:
        if reg < 0:
            raise ValueError(f"cca reg must be >= 0, got {reg}")
        self.metric = Metric(metric)
        self.dim = dim
        self.reg = reg
        self.power = power

    def fit(self, train: Embedded, context: FitContext | None = None) -> Self:
        dim = _check_dim("cca", self.dim, train)
        texts, images = _pairs(train)
        self.text_mean_, self.image_mean_ = texts.mean(0), images.mean(0)
        t, i = texts - self.text_mean_, images - self.image_mean_
        wt = _inverse_sqrt(_covariance(t, self.reg))
        wi = _inverse_sqrt(_covariance(i, self.reg))
        u, corr, vt = np.linalg.svd(wt @ (t.T @ i / len(t)) @ wi)
        scale = np.maximum(corr[:dim], 0) ** self.power
        self.text_proj_ = wt @ u[:, :dim] * scale
        self.image_proj_ = wi @ vt[:dim].T * scale
        self.correlations_ = corr[:dim]
        return self
