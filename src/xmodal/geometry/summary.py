"""One call for every applicable modality-gap measure, with bounded cost and stated sample sizes.

`gap_measures` returns a flat dict of floats (a results-table row). Measures that need one shared
space are left out when the two modalities differ in dimension; `skipped_measures` names each
left-out measure and why, from the same rules, so a report can say so.
"""

from __future__ import annotations

import numpy as np

from xmodal.embeddings import Embedded
from xmodal.geometry import measures as m
from xmodal.geometry import wasserstein as w
from xmodal.similarity import l2_normalize

SAME_SPACE = (
    "gap",
    "pair_distances",
    "wasserstein_exact",
    "wasserstein_sinkhorn",
    "wasserstein_sliced",
    "wasserstein_gaussian",
    "separability",
)
ANY_SPACE = ("gromov_wasserstein", "cka", "mutual_knn")
MIN_SEPARABILITY_POINTS = 10  # per modality: fewer leaves a held-out set of one or two rows


def measured_space(metric: str, learned_scorer: bool = False) -> tuple[bool | None, str]:
    """The vectors a metric ranks, as (normalize, description) for `gap_measures`: cosine ranks
    directions (L2-normalised vectors), the distances rank the aligned vectors as they are. A
    learned scorer ranks no vector space: (None, the reason to skip)."""
    if learned_scorer:
        return None, "a learned scorer ranks pairs, not vectors in one space: not measured"
    if metric == "cosine":
        return True, "L2-normalised aligned vectors (the space cosine ranks)"
    return False, f"aligned vectors as they are (the space {metric} ranks)"


def skipped_measures(
    images: np.ndarray, texts: np.ndarray, caption_image: np.ndarray, *, knn_k: int = 10
) -> dict[str, str]:
    """Measure group -> reason, for every group `gap_measures` leaves out on these inputs."""
    data = _validated(images, texts, caption_image)
    d_i, d_t = data.images.shape[1], data.texts.shape[1]
    out: dict[str, str] = {}
    if d_i != d_t:
        reason = f"needs one shared space: images are {d_i}-d, texts {d_t}-d"
        out.update(dict.fromkeys(SAME_SPACE, reason))
    elif min(len(data.images), len(data.texts)) < MIN_SEPARABILITY_POINTS:
        out["separability"] = f"needs at least {MIN_SEPARABILITY_POINTS} vectors per modality"
    n_pairs = len(np.unique(data.caption_image))
    if n_pairs <= knn_k:
        out["mutual_knn"] = f"needs more than k={knn_k} captioned images, got {n_pairs}"
    return out


def gap_measures(
    images: np.ndarray,
    texts: np.ndarray,
    caption_image: np.ndarray,
    *,
    seed: int = 0,
    max_points: int = 5000,
    ot_points: int = w.EXACT_POINTS,
    normalize: bool = True,
    knn_k: int = 10,
) -> dict[str, float]:
    """Every applicable measure of the gap between the image and the text embeddings.

    normalize: L2-normalise both modalities first (the geometry cosine retrieval sees); the
    centroid gap always does. Cheap measures (pair distances, sliced W, separability, CKA,
    mutual kNN) use at most `max_points` rows per side, optimal transport (exact, Sinkhorn,
    Gromov-Wasserstein) at most min(ot_points, max_points); the Gaussian W and the centroid gap
    use every row. Subsamples are seeded; the sizes used are in the "*_n*" keys. With the
    defaults, 5000 images / 25000 captions take ~22 s on 2 cores at 512-d and ~15 s across
    dimensions (1280-d / 384-d); the cost stops growing with the input beyond max_points.
    CKA (debiased: ~0 for unrelated data) and mutual kNN compare each captioned image with
    its first caption. The Sinkhorn W2 comes with its regularisation, iterations, marginal
    error and a converged flag (1.0 when certified within SINKHORN_TOLERANCE of the exact W2).
    Measures that do not apply are absent; `skipped_measures` says why.
    """
    data = _validated(images, texts, caption_image)
    skipped = skipped_measures(images, texts, caption_image, knn_k=knn_k)
    x, y = data.images.astype(np.float64), data.texts.astype(np.float64)
    if normalize:
        x, y = l2_normalize(x), l2_normalize(y)
    out: dict[str, float] = {
        "n_images": len(x),
        "n_texts": len(y),
        "dim_images": x.shape[1],
        "dim_texts": y.shape[1],
    }
    if "gap" not in skipped:
        out.update(_same_space(x, y, data.caption_image, seed, max_points, ot_points))
    if "separability" not in skipped:
        acc, n = m.separability(x, y, max_points=max_points, seed=seed)
        out.update(separability=acc, separability_n=n)
    ot_n = min(ot_points, max_points)
    out["gromov_wasserstein"] = w.gromov_wasserstein(x, y, max_points=ot_n, seed=seed)
    out.update(_sizes("gromov_wasserstein", x, y, ot_n))
    px, py = _pairs(x, y, data.caption_image, max_points, seed)
    out.update(cka=m.linear_cka(px, py), cka_n=len(px))
    if "mutual_knn" not in skipped:
        out.update(mutual_knn=m.mutual_knn(px, py, knn_k), mutual_knn_n=len(px), mutual_knn_k=knn_k)
    return out


def _validated(images: np.ndarray, texts: np.ndarray, caption_image: np.ndarray) -> Embedded:
    images, texts = np.asarray(images), np.asarray(texts)
    for name, a in (("images", images), ("texts", texts)):
        if a.ndim != 2 or len(a) < 2:
            raise ValueError(f"{name}: expected a 2-D array with at least 2 rows, got {a.shape}")
        if not np.isfinite(a).all():
            raise ValueError(f"{name}: contains NaN or infinite values")
    return Embedded(images, texts, np.asarray(caption_image, np.int64))


def _same_space(
    x: np.ndarray, y: np.ndarray, caption_image: np.ndarray, seed: int, cap: int, ot_cap: int
) -> dict[str, float]:
    out = {"gap": m.modality_gap(x, y)}
    for metric in m.PAIR_METRICS:
        matched, random = m.pair_distances(x, y, caption_image, metric, max_pairs=cap, seed=seed)
        out.update(m.pair_statistics(matched, random, metric))
    out["pairs_n"] = min(len(y), cap)
    ot_n = min(ot_cap, cap)
    out["wasserstein_exact"] = w.wasserstein_exact(x, y, max_points=ot_n, seed=seed)
    out.update(_sizes("wasserstein_exact", x, y, ot_n))
    sink = w.wasserstein_sinkhorn(x, y, max_points=ot_n, seed=seed)
    out.update(
        wasserstein_sinkhorn=sink.value,
        wasserstein_sinkhorn_reg=sink.reg,
        wasserstein_sinkhorn_iterations=sink.iterations,
        wasserstein_sinkhorn_marginal_error=sink.marginal_error,
        wasserstein_sinkhorn_converged=float(sink.converged),
    )
    out.update(_sizes("wasserstein_sinkhorn", x, y, ot_n))
    out["wasserstein_sliced"] = w.wasserstein_sliced(x, y, max_points=cap, seed=seed)
    out.update(_sizes("wasserstein_sliced", x, y, cap))
    out["wasserstein_sliced_projections"] = w.SLICED_PROJECTIONS
    out["wasserstein_gaussian"] = w.wasserstein_gaussian(x, y)
    return out


def _sizes(name: str, x: np.ndarray, y: np.ndarray, cap: int) -> dict[str, float]:
    return {f"{name}_n_images": min(len(x), cap), f"{name}_n_texts": min(len(y), cap)}


def _pairs(
    x: np.ndarray, y: np.ndarray, caption_image: np.ndarray, cap: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    px, py = m.first_caption_pairs(x, y, caption_image)
    rows = m.subsample(np.arange(len(px)), cap, seed)
    return px[rows], py[rows]
