"""Is one fit better than another on the same test queries? A paired comparison of a score
(RSUM, R@K, MRR) from the per-query ranks of both.

Every such score is a sum over the test images of a per-image contribution: the image's own
image->text hit (or reciprocal rank) over the number of images, plus its captions'
text->image hits over the number of captions. The difference of two fits is then a sum of
per-image differences, which is resampled (bootstrap CI) and sign-flipped (permutation p) with
each image keeping its captions. Several seeds of one configuration are averaged per image.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from xmodal.retrieval.evaluate import PerQuery
from xmodal.similarity.ranking import trivial_ks

RESAMPLES = 2000
LEVEL = 0.95


def contributions(per: PerQuery, column: str, ks: Sequence[int]) -> np.ndarray:
    """Per test image, its share of `column` (the shares sum to the score of `per`)."""
    n_img, n_cap = len(per.i2t), len(per.t2i)
    owner = per.caption_image

    def t2i(values: np.ndarray) -> np.ndarray:
        return 100 * np.bincount(owner, values.astype(np.float64), n_img) / n_cap

    def i2t(values: np.ndarray) -> np.ndarray:
        return 100 * values.astype(np.float64) / n_img

    if column == "rsum":
        out = np.zeros(n_img)
        for k in ks:
            out += 0 if k in trivial_ks(ks, n_img) else t2i(per.t2i <= k)
            out += 0 if k in trivial_ks(ks, n_cap) else i2t(per.i2t <= k)
        return out
    direction, _, name = column.partition("_")
    ranks, share = {"t2i": (per.t2i, t2i), "i2t": (per.i2t, i2t)}.get(direction, (None, None))
    if ranks is not None and share is not None:
        if name == "MRR":
            return share(1.0 / ranks)
        if name.startswith("R@") and name[2:].isdigit():
            return share(ranks <= int(name[2:]))
    raise ValueError(f"no paired comparison for {column!r}: use rsum, <t2i|i2t>_R@K or _MRR")


def paired_difference(
    a: Sequence[PerQuery],
    b: Sequence[PerQuery],
    column: str,
    ks: Sequence[int],
    *,
    resamples: int = RESAMPLES,
    seed: int = 0,
) -> dict[str, float]:
    """`column` of fits a minus fits b (each averaged over its seeds) on the same test queries:
    {"difference", "ci_lo", "ci_hi" (95% bootstrap over images), "p_value" (two-sided
    sign-flip permutation), "n_images"}."""
    if not a or not b:
        raise ValueError("a paired comparison needs per-query ranks of both sides")
    first = a[0].caption_image
    if any(not np.array_equal(p.caption_image, first) for p in [*a, *b]):
        raise ValueError("a paired comparison needs the same test queries on both sides")
    d = np.mean([contributions(p, column, ks) for p in a], 0)
    d -= np.mean([contributions(p, column, ks) for p in b], 0)
    rng = np.random.default_rng(seed)
    n = len(d)
    boot = np.array([d[rng.integers(0, n, n)].sum() for _ in range(resamples)])
    tail = 100 * (1 - LEVEL) / 2
    lo, hi = np.percentile(boot, [tail, 100 - tail])
    flips = np.array([(rng.choice((-1.0, 1.0), n) * d).sum() for _ in range(resamples)])
    observed = float(d.sum())
    p = (1 + np.sum(np.abs(flips) >= abs(observed) - 1e-9)) / (1 + resamples)
    return {
        "difference": observed,
        "ci_lo": float(lo),
        "ci_hi": float(hi),
        "p_value": float(p),
        "n_images": n,
    }
