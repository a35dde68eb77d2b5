"""Modality-gap measures that are not optimal transport: centroid gap, matched-vs-random pair
distances, linear separability, and representation similarity (linear CKA, mutual kNN).

Inputs are image vectors (n x d_i), text vectors (m x d_t) and, where pairs matter, the int
array `caption_image` giving each text row's image row (as in `xmodal.embeddings.Embedded`).
Work is done in float64; every function states its cost, and none subsamples on its own except
where a `max_*` argument says so (seeded, so a call is reproducible).
"""

from __future__ import annotations

import numpy as np

from xmodal.similarity import l2_normalize

PAIR_METRICS = ("euclidean", "cosine")
QUANTILES = (0.1, 0.5, 0.9)


def subsample(x: np.ndarray, max_points: int, seed: int = 0) -> np.ndarray:
    """At most `max_points` rows of `x`, drawn without replacement (seeded), in original order.

    The draw depends only on (len(x), max_points, seed): two clouds of one size drawn with one
    seed keep the same rows, so identical inputs stay identical after subsampling.
    """
    if max_points < 1:
        raise ValueError(f"max_points must be >= 1, got {max_points}")
    if len(x) <= max_points:
        return x
    rows = np.random.default_rng(seed).choice(len(x), max_points, replace=False)
    return x[np.sort(rows)]


def require_same_dim(images: np.ndarray, texts: np.ndarray, what: str) -> None:
    if images.shape[1] != texts.shape[1]:
        raise ValueError(
            f"{what} needs one shared space: images are {images.shape[1]}-d, "
            f"texts {texts.shape[1]}-d"
        )


def gap_vector(images: np.ndarray, texts: np.ndarray) -> np.ndarray:
    """Liang et al. 2022 ("Mind the Gap"): centroid of the L2-normalised image vectors minus the
    centroid of the L2-normalised text vectors. Same dimension only; O((n + m) d)."""
    require_same_dim(images, texts, "the centroid gap")
    x = l2_normalize(np.asarray(images, np.float64))
    y = l2_normalize(np.asarray(texts, np.float64))
    return x.mean(0) - y.mean(0)


def modality_gap(images: np.ndarray, texts: np.ndarray) -> float:
    """Euclidean norm of `gap_vector`: 0 when both normalised clouds share a centroid, at most 2."""
    return float(np.linalg.norm(gap_vector(images, texts)))


def pair_distances(
    images: np.ndarray,
    texts: np.ndarray,
    caption_image: np.ndarray,
    metric: str = "cosine",
    *,
    max_pairs: int = 10_000,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Distances of matched (caption, own image) pairs and of as many random non-matched pairs.

    Up to `max_pairs` captions are drawn (seeded); each gets its own image and one image drawn
    uniformly among the others. metric "euclidean" is ||t - x||, "cosine" is 1 - cos(t, x).
    Same dimension only; O(max_pairs * d). Returns (matched, random), float64.
    """
    require_same_dim(images, texts, "pair distances")
    if len(images) < 2:
        raise ValueError("random non-matched pairs need at least 2 images")
    caption_image = np.asarray(caption_image)
    rows = subsample(np.arange(len(texts)), max_pairs, seed)
    own = caption_image[rows]
    rng = np.random.default_rng([seed, 1])
    other = rng.integers(0, len(images) - 1, len(rows))
    other += other >= own  # skip the caption's own image: uniform over the rest
    t = np.asarray(texts[rows], np.float64)
    return _distances(t, images[own], metric), _distances(t, images[other], metric)


def _distances(a: np.ndarray, b: np.ndarray, metric: str) -> np.ndarray:
    b = np.asarray(b, np.float64)
    match metric:
        case "euclidean":
            return np.linalg.norm(a - b, axis=1)
        case "cosine":
            return 1.0 - (l2_normalize(a) * l2_normalize(b)).sum(1)
    raise ValueError(f"unknown pair metric {metric!r}; expected one of {PAIR_METRICS}")


def separation_auc(matched: np.ndarray, random: np.ndarray) -> float:
    """ROC AUC of telling matched from random pairs by distance: P(d_random > d_matched), ties
    counting one half. 1 = every matched pair is closer than every random one; 0.5 = no signal.
    Counted exactly against the sorted random distances."""
    matched, random = np.asarray(matched, np.float64), np.sort(np.asarray(random, np.float64))
    if not (len(matched) and len(random)):
        raise ValueError("separation AUC needs matched and random distances (one side is empty)")
    if not (np.isfinite(matched).all() and np.isfinite(random).all()):
        raise ValueError("separation AUC: the distances contain NaN or inf")
    closer = np.searchsorted(random, matched, side="left")  # random pairs closer than each one
    not_farther = np.searchsorted(random, matched, side="right")
    farther = len(random) - not_farther + 0.5 * (not_farther - closer)  # a tie counts one half
    return float(farther.sum() / (len(matched) * len(random)))


def pair_statistics(matched: np.ndarray, random: np.ndarray, prefix: str) -> dict[str, float]:
    """Mean and quantiles (q10, q50, q90) of both distributions and their separation AUC."""
    out: dict[str, float] = {}
    for name, d in (("matched", matched), ("random", random)):
        out[f"{prefix}_{name}_mean"] = float(np.mean(d))
        for q, v in zip(QUANTILES, np.quantile(d, QUANTILES), strict=True):
            out[f"{prefix}_{name}_q{round(100 * q):02d}"] = float(v)
    out[f"{prefix}_auc"] = separation_auc(matched, random)
    return out


def separability(
    images: np.ndarray,
    texts: np.ndarray,
    *,
    max_points: int = 5000,
    test_size: float = 0.3,
    seed: int = 0,
) -> tuple[float, int]:
    """Held-out accuracy of a logistic-regression classifier telling image from text vectors.

    Both modalities are subsampled (seeded) to the same n = min(n_images, n_texts, max_points),
    so chance is 0.5 whatever the caption/image ratio; the split is stratified and seeded.
    Same dimension only; about O(n d * iterations). Returns (accuracy, n per modality).
    """
    # sklearn (and the pandas it pulls in) loads for this measure only, not with the module
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import train_test_split
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    require_same_dim(images, texts, "modality separability")
    n = min(len(images), len(texts), max_points)
    x = np.r_[subsample(images, n, seed), subsample(texts, n, seed)].astype(np.float64)
    y = np.r_[np.zeros(n), np.ones(n)]
    xtr, xte, ytr, yte = train_test_split(x, y, test_size=test_size, stratify=y, random_state=seed)
    clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
    return float(clf.fit(xtr, ytr).score(xte, yte)), n


def first_caption_pairs(
    images: np.ndarray, texts: np.ndarray, caption_image: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """One (image, caption) pair per captioned image: the image's first caption in row order.

    Representation-similarity measures need one row per concept; repeating an image once per
    caption would make its copies each other's nearest neighbours.
    """
    img_rows, first = np.unique(np.asarray(caption_image), return_index=True)
    return images[img_rows], texts[first]


CKA_ESTIMATORS = ("debiased", "biased")


def linear_cka(x: np.ndarray, y: np.ndarray, estimator: str = "debiased") -> float:
    """Linear CKA (Kornblith et al. 2019) between row-matched x (n x d1) and y (n x d2):
    HSIC(K, L) / sqrt(HSIC(K, K) HSIC(L, L)) with linear Gram matrices K = X X^T, L = Y Y^T.

    "debiased" (default) uses the unbiased HSIC estimator (Song et al. 2012; Nguyen et al.
    2021): about 0 for unrelated data at any n and dimension (it can dip below 0), 1 for
    identical data. "biased" is Kornblith's plug-in ||Yc^T Xc||_F^2 / (||Xc^T Xc||_F
    ||Yc^T Yc||_F), in [0, 1] but inflated by dimension over n: unrelated 128-d clouds of
    190 rows read ~0.4, so it only compares at equal n and dimensions. Both are invariant to
    orthogonal maps and isotropic scaling; O(n (d1 + d2)^2), no n x n matrix."""
    if len(x) != len(y):
        raise ValueError(f"CKA needs matched rows: {len(x)} vs {len(y)}")
    if estimator not in CKA_ESTIMATORS:
        raise ValueError(f"unknown CKA estimator {estimator!r}; expected one of {CKA_ESTIMATORS}")
    xc = np.asarray(x, np.float64) - np.mean(x, 0, dtype=np.float64)
    yc = np.asarray(y, np.float64) - np.mean(y, 0, dtype=np.float64)
    if estimator == "biased":
        cross = np.linalg.norm(yc.T @ xc) ** 2
        return float(cross / (np.linalg.norm(xc.T @ xc) * np.linalg.norm(yc.T @ yc)))
    if len(x) < 4:
        raise ValueError(f"debiased CKA needs at least 4 rows, got {len(x)}")
    return float(_hsic_u(xc, yc) / np.sqrt(_hsic_u(xc, xc) * _hsic_u(yc, yc)))


def _hsic_u(x: np.ndarray, y: np.ndarray) -> float:
    """Unbiased HSIC of linear kernels with zeroed diagonals, from d x d products only:
    [tr(K~L~) + 1'K~1 1'L~1 / ((n-1)(n-2)) - 2/(n-2) 1'K~L~1] / (n (n-3))."""
    n = len(x)
    dk, dl = (x * x).sum(1), (y * y).sum(1)  # diag(K), diag(L)
    k1, l1 = x @ x.sum(0) - dk, y @ y.sum(0) - dl  # K~ 1, L~ 1
    trace = np.linalg.norm(x.T @ y) ** 2 - dk @ dl
    return (trace + k1.sum() * l1.sum() / ((n - 1) * (n - 2)) - 2 / (n - 2) * (k1 @ l1)) / (
        n * (n - 3)
    )


def knn_sets(x: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k nearest other rows of each row by cosine similarity (n x k).

    O(n^2 d) time and n^2 memory: callers cap n (a few thousand rows)."""
    if not 1 <= k < len(x):
        raise ValueError(f"k must be in [1, {len(x) - 1}] for {len(x)} rows, got {k}")
    xn = l2_normalize(np.asarray(x, np.float64))
    sim = xn @ xn.T
    np.fill_diagonal(sim, -np.inf)
    return np.argpartition(-sim, k - 1, axis=1)[:, :k]


def mutual_knn(x: np.ndarray, y: np.ndarray, k: int = 10) -> float:
    """Mutual k-nearest-neighbour alignment (Huh et al. 2024, "Platonic representation"):
    mean over rows i of |kNN_x(i) & kNN_y(i)| / k, with cosine neighbours within each space.
    1 = both spaces have the same neighbourhoods; about k / n for unrelated spaces."""
    if len(x) != len(y):
        raise ValueError(f"mutual kNN needs matched rows: {len(x)} vs {len(y)}")
    nx, ny = knn_sets(x, k), knn_sets(y, k)
    hits = (nx[:, :, None] == ny[:, None, :]).any(2).sum(1)
    return float(np.mean(hits) / k)
