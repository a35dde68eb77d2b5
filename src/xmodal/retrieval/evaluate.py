"""Retrieval evaluation of aligned embeddings, both directions: Recall@K, MRR, nDCG@10, mAP@10,
median and mean rank, each with a 95% bootstrap confidence interval over the test queries (the
ranking itself lives in `xmodal.similarity.ranking`, below the aligners that select on it).

Relevance: a caption's one relevant image is its own (text->image); every caption of an image
is relevant to it (image->text). nDCG@10 and mAP@10 follow trec_eval's ndcg_cut_10 and
map_cut_10 (binary gains, AP divided by the number of relevant items); they, MRR and R@K are
percentages. CIs are percentile bootstraps: captions are resampled for text->image, images for
image->text, and images with all their captions for RSUM.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, overload

import numpy as np

from xmodal.embeddings import Embedded
from xmodal.similarity.ranking import (
    DEFAULT_KS,
    ImageToTextRanks,
    NonFiniteScores,
    Scorer,
    TopHits,
    image_to_text_rankings,
    image_to_text_ranks,
    scores_from_ranks,
    summarize_ranks,
    text_to_image_ranks,
    trivial_ks,
)

__all__ = [
    "DEFAULT_KS",
    "NonFiniteScores",
    "PerQuery",
    "evaluate",
    "image_to_text_ranks",
    "summarize_ranks",
    "text_to_image_ranks",
    "text_to_image_scores",
]

CUTOFF = 10  # nDCG@10 and mAP@10
BOOTSTRAP = 1000
LEVEL = 0.95
#: below this many image queries a test split is small: the warnings say how wide the CIs are
MIN_QUERIES = 100
#: resampled values held at once (resamples x queries x measures)
BOOT_ELEMENTS = 1 << 24


@dataclass(frozen=True)
class PerQuery:
    """Per-query ranks of one evaluation: what a paired comparison of two fits needs (saved),
    and, when asked for, each query's top-k gallery items (not saved here: see
    `xmodal.retrieval.predictions`)."""

    t2i: np.ndarray  # per caption, rank of its image
    i2t: np.ndarray  # per image, rank of its best caption
    caption_image: np.ndarray
    t2i_top: TopHits | None = None  # per caption, its top-k images
    i2t_top: TopHits | None = None  # per image, its top-k captions

    def save(self, path: str | Path) -> None:
        from xmodal.files import atomic_path

        with atomic_path(path) as tmp, open(tmp, "wb") as f:
            np.savez(f, t2i=self.t2i, i2t=self.i2t, caption_image=self.caption_image)

    @classmethod
    def load(cls, path: str | Path) -> PerQuery:
        with np.load(path) as z:
            return cls(z["t2i"], z["i2t"], z["caption_image"])


@overload
def evaluate(
    data: Embedded,
    scorer: Scorer,
    ks: Sequence[int] = ...,
    *,
    bootstrap: int = ...,
    seed: int = ...,
    return_ranks: Literal[False] = ...,
    top_k: int = ...,
) -> dict[str, Any]: ...


@overload
def evaluate(
    data: Embedded,
    scorer: Scorer,
    ks: Sequence[int] = ...,
    *,
    bootstrap: int = ...,
    seed: int = ...,
    return_ranks: Literal[True],
    top_k: int = ...,
) -> tuple[dict[str, Any], PerQuery]: ...


def evaluate(
    data: Embedded,
    scorer: Scorer,
    ks: Sequence[int] = DEFAULT_KS,
    *,
    bootstrap: int = BOOTSTRAP,
    seed: int = 0,
    return_ranks: bool = False,
    top_k: int = 0,
) -> dict[str, Any] | tuple[dict[str, Any], PerQuery]:
    """Every retrieval score of `retrieval_scores`, plus nDCG@10 and mAP@10 both ways and, when
    `bootstrap` > 0, `<score>_ci_lo` / `<score>_ci_hi` (95%, `bootstrap` resamples, seeded)
    for R@K, MRR, nDCG, mAP and RSUM. `warnings` lists trivial R@K and small splits.

    `scorer(texts, images)` returns len(texts) x len(images) scores (higher = closer); NaN or
    infinite scores raise `NonFiniteScores`. With `return_ranks`, also the `PerQuery` ranks,
    and with `top_k` > 0 each query's top-k gallery items, kept from the same score blocks.
    """
    if len(data.texts) == 0 or len(data.images) == 0:
        raise ValueError("cannot evaluate retrieval on an empty split")
    t2i_top = TopHits(len(data.texts), top_k, len(data.images)) if top_k > 0 else None
    i2t_top = TopHits(len(data.images), top_k, len(data.texts)) if top_k > 0 else None
    t2i = text_to_image_ranks(data, scorer, t2i_top)
    i2t = image_to_text_rankings(data, scorer, CUTOFF, i2t_top)
    out = scores_from_ranks(t2i, i2t.best, ks)
    t_values, t_names = _t2i_values(t2i, ks)
    i_values, i_names = _i2t_values(i2t, ks)
    out |= dict(zip(t_names[len(ks) :], 100 * t_values[:, len(ks) :].mean(0), strict=True))
    out |= dict(zip(i_names[len(ks) :], 100 * i_values[:, len(ks) :].mean(0), strict=True))
    if bootstrap > 0:
        rng = np.random.default_rng(seed)
        out |= _intervals(t_names, _resampled_means(t_values, bootstrap, rng))
        out |= _intervals(i_names, _resampled_means(i_values, bootstrap, rng))
        rsum = _resampled_rsum(t2i, i2t.best, data.caption_image, ks, bootstrap, rng)
        out |= _intervals(["rsum"], rsum[:, None] / 100)
    out["warnings"] = out["warnings"] + _small_split(out, min(ks), len(data.images))
    if return_ranks:
        caption_image = np.asarray(data.caption_image)
        return out, PerQuery(t2i, i2t.best, caption_image, t2i_top, i2t_top)
    return out


def text_to_image_scores(
    ranks: np.ndarray, ks: Sequence[int] = DEFAULT_KS, *, bootstrap: int = BOOTSTRAP, seed: int = 0
) -> dict[str, float]:
    """The text->image scores of `evaluate` (R@K, MRR, nDCG@10, mAP@10) from per-caption ranks
    of any subset of the queries (e.g. the captions of one language), with 95% bootstrap CIs
    over those captions when `bootstrap` > 0."""
    ranks = np.asarray(ranks)
    if not len(ranks):
        raise ValueError("no text->image ranks to score")
    values, names = _t2i_values(ranks, ks)
    out = dict(zip(names, (100 * values.mean(0)).tolist(), strict=True))
    if bootstrap > 0:
        rng = np.random.default_rng(seed)
        out |= _intervals(names, _resampled_means(values, bootstrap, rng))
    return out


def _t2i_values(ranks: np.ndarray, ks: Sequence[int]) -> tuple[np.ndarray, list[str]]:
    """Per caption: R@K hits, reciprocal rank, nDCG@10 and AP@10 (one relevant image)."""
    top = ranks <= CUTOFF
    columns: list[np.ndarray] = [ranks <= k for k in ks]
    columns += [1.0 / ranks, np.where(top, 1.0 / np.log2(ranks + 1), 0.0)]
    columns.append(np.where(top, 1.0 / ranks, 0.0))
    names = [f"t2i_R@{k}" for k in ks] + ["t2i_MRR", f"t2i_nDCG@{CUTOFF}", f"t2i_mAP@{CUTOFF}"]
    return np.column_stack(columns).astype(np.float64), names


def _i2t_values(r: ImageToTextRanks, ks: Sequence[int]) -> tuple[np.ndarray, list[str]]:
    """Per image: R@K hits, reciprocal rank, nDCG@10 and AP@10 over all its captions."""
    positions = np.arange(1, CUTOFF + 1)
    discount = 1.0 / np.log2(positions + 1)
    ideal = np.cumsum(discount)[np.clip(r.n_relevant, 1, CUTOFF) - 1]
    ndcg = (r.relevant * discount).sum(1) / ideal
    precision = np.cumsum(r.relevant, 1) / positions
    ap = (precision * r.relevant).sum(1) / np.maximum(r.n_relevant, 1)
    columns = [r.best <= k for k in ks] + [1.0 / r.best, ndcg, ap]
    names = [f"i2t_R@{k}" for k in ks] + ["i2t_MRR", f"i2t_nDCG@{CUTOFF}", f"i2t_mAP@{CUTOFF}"]
    return np.column_stack(columns).astype(np.float64), names


def _resampled_means(values: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """n x measures: the column means of `n` resamples (with replacement) of the rows."""
    rows = len(values)
    chunk = max(1, BOOT_ELEMENTS // (rows * values.shape[1]))
    out = [
        values[rng.integers(0, rows, (min(chunk, n - s), rows))].mean(1) for s in range(0, n, chunk)
    ]
    return np.concatenate(out)


def _resampled_rsum(
    t2i: np.ndarray,
    i2t: np.ndarray,
    caption_image: np.ndarray,
    ks: Sequence[int],
    n: int,
    rng: np.random.Generator,
) -> np.ndarray:
    """RSUM of `n` resamples of the images, each image carrying all its captions."""
    n_img = len(i2t)
    t_ks = [k for k in ks if k not in trivial_ks(ks, n_img)]
    i_ks = [k for k in ks if k not in trivial_ks(ks, len(t2i))]
    t_hits = np.bincount(caption_image, sum((t2i <= k for k in t_ks), 0 * t2i), minlength=n_img)
    i_hits = sum((i2t <= k for k in i_ks), 0 * i2t)
    captions = np.bincount(caption_image, minlength=n_img)
    units = np.column_stack([t_hits, captions, i_hits]).astype(np.float64)
    sums = _resampled_means(units, n, rng) * n_img
    return 100 * (sums[:, 0] / np.maximum(sums[:, 1], 1) + sums[:, 2] / n_img)


def _intervals(names: list[str], means: np.ndarray) -> dict[str, float]:
    tail = 100 * (1 - LEVEL) / 2
    lo, hi = np.percentile(100 * means, [tail, 100 - tail], axis=0)
    out = {}
    for name, a, b in zip(names, lo, hi, strict=True):
        out[f"{name}_ci_lo"], out[f"{name}_ci_hi"] = float(a), float(b)
    return out


def _small_split(scores: dict[str, Any], k: int, n_images: int) -> list[str]:
    if n_images >= MIN_QUERIES:
        return []
    span = ""
    if f"i2t_R@{k}_ci_lo" in scores:
        lo, hi = scores[f"i2t_R@{k}_ci_lo"], scores[f"i2t_R@{k}_ci_hi"]
        span = f": the 95% CI of i2t_R@{k} spans {lo:.1f} to {hi:.1f}"
    return [f"small test split ({n_images} images < {MIN_QUERIES}){span}"]
