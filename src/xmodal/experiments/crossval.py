"""k-fold cross-validation on the training images, for model selection (`selection: {folds: k}`).

On a small validation split (95 images on Tux Paint) one image query moves a recall by about a
point; cross-validation scores each configuration on every training image instead. The
training images are split into k folds by image (all captions of an image in its fold), from
a permutation of the sorted image ids seeded by the split seed. Each configuration (aligner
entry x metric) is fitted k times, on k-1 folds, and scored with the run's `primary` score on
the held-out fold; the summary gets `cv_<primary>` and `cv_<primary>_std` (mean and sample
std over the fold scores; with several split seeds, over the folds of every split).

Choices made here:
- one aligner seed per configuration, its entry's first: the spread over seeds is already
  measured by the test fits, and k fold fits per configuration (not k per seed) bound the
  cost; each fold fit repeats the first seed's fit on fewer images;
- aligners that stop early or select on validation pairs are given the run's validation
  split, as the fits on the whole training split are: never the held-out fold, and the k-1
  folds keep every image for fitting;
- a fold fit that fails (diverges, or gives non-finite scores) makes its configuration's CV
  score NaN (`cv_failed` counts the failed folds): it is not averaged as a number, and that
  configuration is not selected by CV.
The test split is never read.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from xmodal.embeddings import Embedded
from xmodal.experiments.config import ConfigError
from xmodal.experiments.tables import GROUP


def cv_column(primary: str) -> str:
    """The summary column of a configuration's CV score."""
    return f"cv_{primary}"


def fold_assignment(image_ids: Sequence[str], k: int, seed: int) -> np.ndarray:
    """The fold (0..k-1) of each image, in the order given: the sorted ids, permuted by
    `numpy.random.default_rng(seed)`, cut into k consecutive runs as `numpy.array_split` cuts
    (sizes differ by at most one); so the folds do not depend on the order of the images."""
    n = len(image_ids)
    if len(set(image_ids)) != n:
        raise ValueError("image ids must be distinct to be split into folds")
    if not 2 <= k <= n:
        raise ValueError(f"{k} folds of {n} images: k must be between 2 and the number of images")
    by_sorted = np.empty(n, dtype=np.int64)
    for fold, members in enumerate(np.array_split(np.random.default_rng(seed).permutation(n), k)):
        by_sorted[members] = fold
    out = np.empty(n, dtype=np.int64)
    out[np.argsort(np.asarray(image_ids, dtype=str), kind="stable")] = by_sorted
    return out


def fold_split(train: Embedded, assignment: np.ndarray, fold: int) -> tuple[Embedded, Embedded]:
    """(the other folds, the held-out fold) of the training pairs; each caption goes with its
    image."""
    if len(assignment) != len(train.images):
        raise ValueError(f"{len(assignment)} fold labels for {len(train.images)} train images")
    held_out = assignment == fold
    return _images_subset(train, ~held_out), _images_subset(train, held_out)


def _images_subset(data: Embedded, keep: np.ndarray) -> Embedded:
    """The images where `keep` is true and their captions, caption links renumbered."""
    row = np.cumsum(keep) - 1
    captions = keep[data.caption_image]
    return Embedded(data.images[keep], data.texts[captions], row[data.caption_image[captions]])


def check_folds(k: int, n_images: int, where: str) -> None:
    """A clear error when the training split of `where` cannot be cut into k folds."""
    if k > n_images:
        raise ConfigError(
            f"selection.folds: {k} folds, but the train split of {where} holds {n_images} "
            f"images (at most one fold per image): lower selection.folds"
        )


def fold_warnings(assignment: np.ndarray, ks: Sequence[int], where: str) -> list[str]:
    """Warn of a K at or above the smallest held-out fold: its recall is 100 by construction
    there, and left out of that fold's RSUM."""
    smallest = int(np.bincount(assignment).min())
    big = [k for k in ks if k >= smallest]
    if not big:
        return []
    return [
        f"{where}: the smallest held-out fold holds {smallest} images: R@{big} is 100 by "
        "construction there, left out of its RSUM"
    ]


def cv_scores(fold_rows: Sequence[Mapping[str, Any]], primary: str) -> dict[tuple, dict]:
    """Per configuration: `cv_<primary>` (mean over its fold scores; NaN when a fold failed),
    `cv_<primary>_std` (sample std over them), `cv_folds` (k) and `cv_failed` (failed folds)."""
    groups: dict[tuple, list[Mapping[str, Any]]] = defaultdict(list)
    for row in fold_rows:
        groups[tuple(row[c] for c in GROUP)].append(row)
    col = cv_column(primary)
    out = {}
    for key, rows in groups.items():
        values = np.array([r[primary] if r["status"] == "ok" else np.nan for r in rows], float)
        failed = int(np.isnan(values).sum())
        mean, std = (np.nan, np.nan) if failed else (values.mean(), values.std(ddof=1))
        out[key] = {
            col: float(mean),
            f"{col}_std": float(std),
            "cv_folds": int(rows[0]["folds"]),
            "cv_failed": failed,
        }
    return out


def with_cv(
    summary: list[dict[str, Any]], fold_rows: Sequence[Mapping[str, Any]], primary: str
) -> list[dict[str, Any]]:
    """The summary with each configuration's CV columns (those without fold fits unchanged)."""
    found = cv_scores(fold_rows, primary)
    return [row | found.get(tuple(row[c] for c in GROUP), {}) for row in summary]


def has_cv(row: Mapping[str, Any], primary: str) -> bool:
    """Whether a configuration was cross-validated (its score may still be NaN: a fold failed)."""
    return cv_column(primary) in row


def cv_finite(row: Mapping[str, Any], primary: str) -> bool:
    value = row.get(cv_column(primary))
    return isinstance(value, int | float) and math.isfinite(value)


def cv_text(row: Mapping[str, Any], primary: str, label: str) -> str:
    """ "cv RSUM 123.4 ± 5.6" (mean ± std over the held-out folds)."""
    col = cv_column(primary)
    return f"cv {label} {row[col]:.1f} ± {row[f'{col}_std']:.1f}"
