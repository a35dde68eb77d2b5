"""Ranks and Recall@K in both directions, the way the field publishes it, without an N x M
score matrix. Lives below `align` so that training can select on validation recall.

Conventions: every caption is a text query with exactly one correct image (text->image); an
image query is a hit at K if any of its captions is among the top K captions (image->text).
The rank of a query is 1 + the number of wrong gallery items scoring at least as high as the
best correct one: ties count against the query, so a degenerate model cannot look good.
Scores are computed block by block; memory is bounded by block x gallery size. A NaN or
infinite score makes the evaluation fail (`NonFiniteScores`): NaN compares false, so it would
otherwise rank as a hit. R@K with K at or above the gallery size is 100 by construction: it is
reported with a warning and left out of RSUM. The same blocks can also keep each query's top-k
gallery items (`TopHits`), ordered the way ranks count ties.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from xmodal.embeddings import Embedded

DEFAULT_KS = (1, 5, 10)

#: scores texts against images: (n_texts x d, n_images x d) -> n_texts x n_images, higher = closer
Scorer = Callable[[np.ndarray, np.ndarray], np.ndarray]


#: score-matrix entries per block (64M float32 = 256 MB), so a million captions still fit
BLOCK_ELEMENTS = 1 << 26
#: vector entries hashed or compared at a time when looking for identical vectors
ROW_BLOCK = 1 << 24


class NonFiniteScores(ValueError):
    """A scorer returned NaN or infinite scores: no rank, hence no Recall@K, can be read."""

    def __init__(self, direction: str, queries: int, total: int) -> None:
        super().__init__(
            f"{direction}: the scorer returned NaN or infinite scores for {queries} of {total} "
            "queries; retrieval cannot be evaluated"
        )
        self.direction, self.queries, self.total = direction, queries, total


def _block(gallery_size: int, cap: int = 4096) -> int:
    return max(1, min(cap, BLOCK_ELEMENTS // max(1, gallery_size)))


def first_identical(x: np.ndarray) -> np.ndarray | None:
    """For each row, the index of the first row bit-identical to it; None when all differ.

    Identical vectors must score identically, but BLAS may round a row's products differently
    by its position in the matrix (and by thread count). Ranking copies each group's scores
    from its first member, so ties between identical vectors (e.g. one caption written for two
    images) are exact, and count against the query, on any machine.
    """
    rows = np.ascontiguousarray(x).reshape(len(x), -1)
    step = max(1, ROW_BLOCK // max(1, rows.shape[1]))
    _, first, inverse = np.unique(_row_hashes(rows, step), return_index=True, return_inverse=True)
    if len(first) == len(x):
        return None
    first = first[inverse.ravel()]
    if all((rows[s : s + step] == rows[first[s : s + step]]).all() for s in range(0, len(x), step)):
        return first
    keys = rows.view(np.dtype((np.void, rows.shape[1] * rows.itemsize))).ravel()  # a collision
    _, first, inverse = np.unique(keys, return_index=True, return_inverse=True)
    return None if len(first) == len(x) else first[inverse.ravel()]


def _row_hashes(rows: np.ndarray, step: int) -> np.ndarray:
    """A 64-bit hash of each row's bytes, in integer arithmetic: equal rows hash equally."""
    words = rows.view(np.uint8).reshape(len(rows), -1)
    if words.shape[1] % 4 == 0:
        words = words.view(np.uint32)
    weights = np.random.default_rng(0).integers(1, 2**63, words.shape[1], np.uint64) | 1
    blocks = [(words[s : s + step] * weights).sum(axis=1) for s in range(0, len(words), step)]
    return np.concatenate(blocks) if blocks else np.zeros(0, np.uint64)


def _check_finite(scores: np.ndarray, direction: str, bad: int) -> int:
    """The running count of queries (rows) with a non-finite score."""
    return bad + int((~np.isfinite(scores)).any(1).sum())


class TopHits:
    """The k best gallery items of each query, from the score blocks ranking computes anyway.

    Best first; equal scores are ordered as ranks count them, against the query: wrong items
    before correct ones, then by gallery row. So the first correct item of a query that ranks
    within k sits at position `rank` of its list. Rows hold gallery rows, scores their scores
    (identical gallery vectors carry the first one's score, as in ranking). A gallery smaller
    than k gives shorter lists.
    """

    def __init__(self, queries: int, k: int, gallery: int):
        if k < 1:
            raise ValueError(f"top-k needs k >= 1, got {k}")
        width = min(k, gallery)
        self.rows = np.zeros((queries, width), np.int64)
        self.scores = np.zeros((queries, width), np.float64)

    def add(self, start: int, scores: np.ndarray, correct: np.ndarray) -> None:
        """Keep the top of queries start.. from their block of scores (queries x gallery) and
        which gallery items are correct for each."""
        k, n = self.rows.shape[1], scores.shape[1]
        if k < n:  # the k largest (selecting at n - k is several times faster than on -scores)
            rows = np.argpartition(scores, n - k, axis=1)[:, n - k :]
        else:
            rows = np.broadcast_to(np.arange(n), scores.shape)
        top = np.take_along_axis(scores, rows, 1)
        order = np.lexsort((rows, np.take_along_axis(correct, rows, 1), -top), axis=-1)
        rows = np.take_along_axis(rows, order, 1)
        # argpartition picks any of the items tied at the k-th score: choose them by the rule
        last = np.take_along_axis(scores, rows[:, -1:], 1)
        for i in np.flatnonzero((scores >= last).sum(1) > k):
            tied = np.flatnonzero(scores[i] >= last[i])
            rows[i] = tied[np.lexsort((tied, correct[i, tied], -scores[i, tied]))][:k]
        self.rows[start : start + len(rows)] = rows
        self.scores[start : start + len(rows)] = np.take_along_axis(scores, rows, 1)


def text_to_image_ranks(data: Embedded, scorer: Scorer, top: TopHits | None = None) -> np.ndarray:
    """1-based rank of each caption's own image among all images (and, into `top`, each
    caption's top-k images)."""
    ranks = np.empty(len(data.texts), np.int64)
    block = _block(len(data.images))
    same = first_identical(data.images)
    bad = 0
    for s in range(0, len(data.texts), block):
        scores = scorer(data.texts[s : s + block], data.images)
        bad = _check_finite(scores, "text->image", bad)
        if same is not None:
            scores = scores[:, same]
        own = data.caption_image[s : s + block]
        correct = scores[np.arange(len(own)), own][:, None]
        ranks[s : s + block] = (scores >= correct).sum(1)  # counts the correct one itself once
        if top is not None:
            top.add(s, scores, own[:, None] == np.arange(scores.shape[1]))
    if bad:
        raise NonFiniteScores("text->image", bad, len(data.texts))
    return ranks


@dataclass(frozen=True)
class ImageToTextRanks:
    """Per image query: `best`, the 1-based rank of its best own caption (the Recall@K rank),
    and `relevant`, n_images x depth booleans: position p + 1 of the ranking holds an own
    caption (the ranking ties against the query: wrong captions first, then own captions in row
    order), for nDCG and AP at a cutoff <= depth. `n_relevant` counts each image's captions."""

    best: np.ndarray
    relevant: np.ndarray
    n_relevant: np.ndarray


def image_to_text_rankings(
    data: Embedded, scorer: Scorer, depth: int = 10, top: TopHits | None = None
) -> ImageToTextRanks:
    """The image->text rankings: best own-caption rank and own-caption positions up to depth
    (and, into `top`, each image's top-k captions)."""
    best = np.empty(len(data.images), np.int64)
    relevant = np.zeros((len(data.images), depth), bool)
    owner = data.caption_image
    block = _block(len(data.texts), cap=1024)
    same = first_identical(data.texts)
    bad = 0
    for s in range(0, len(data.images), block):
        # scorers take (texts, images); learned ones are asymmetric, so transpose, don't swap
        scores = scorer(data.texts, data.images[s : s + block]).T
        bad = _check_finite(scores, "image->text", bad)
        if same is not None:
            scores = scores[:, same]
        rows = np.arange(s, min(s + block, len(data.images)))
        mine = owner[None, :] == rows[:, None]
        own_best = np.where(mine, scores, -np.inf).max(1, keepdims=True)
        best[s : s + block] = 1 + ((scores >= own_best) & ~mine).sum(1)
        for i in np.flatnonzero(best[s : s + block] <= depth):
            relevant[s + i] = _own_positions(scores[i], mine[i], depth)
        if top is not None:
            top.add(s, scores, mine)
    if bad:
        raise NonFiniteScores("image->text", bad, len(data.images))
    n_relevant = np.bincount(owner, minlength=len(data.images))
    return ImageToTextRanks(best, relevant, n_relevant)


def _own_positions(scores: np.ndarray, mine: np.ndarray, depth: int) -> np.ndarray:
    """Booleans over positions 1..depth: where the query's own captions sit (ties against it)."""
    own = np.flatnonzero(mine)
    own = own[np.argsort(-scores[own], kind="stable")]  # best first; equal scores in row order
    wrong = scores[~mine]
    positions = (wrong[None, :] >= scores[own][:, None]).sum(1) + np.arange(len(own))
    out = np.zeros(depth, bool)
    out[positions[positions < depth]] = True
    return out


def image_to_text_ranks(data: Embedded, scorer: Scorer) -> np.ndarray:
    """1-based rank of the best-ranked own caption of each image among all captions."""
    return image_to_text_rankings(data, scorer, depth=0).best


def summarize_ranks(ranks: np.ndarray, ks: Sequence[int], prefix: str) -> dict[str, float]:
    """R@K (percent), MRR (percent, like R@K), median and mean rank of one direction."""
    out = {f"{prefix}_R@{k}": 100.0 * float(np.mean(ranks <= k)) for k in ks}
    out[f"{prefix}_MRR"] = 100.0 * float(np.mean(1.0 / ranks))
    out[f"{prefix}_medr"] = float(np.median(ranks))
    out[f"{prefix}_meanr"] = float(np.mean(ranks))
    return out


def trivial_ks(ks: Sequence[int], gallery: int) -> list[int]:
    """The K at or above the gallery size: R@K is 100 whatever the model."""
    return [k for k in ks if k >= gallery]


def recall_sum(
    scores: dict[str, Any], ks: Sequence[int], n_images: int, n_captions: int
) -> tuple[float, list[str]]:
    """RSUM over the K that can tell models apart, and a warning per R@K left out of it."""
    total, warnings = 0.0, []
    for prefix, gallery, what in (("t2i", n_images, "images"), ("i2t", n_captions, "captions")):
        trivial = trivial_ks(ks, gallery)
        total += sum(scores[f"{prefix}_R@{k}"] for k in ks if k not in trivial)
        warnings += [
            f"{prefix}_R@{k}: K >= gallery size ({gallery} {what}), 100 by construction; "
            "left out of RSUM"
            for k in trivial
        ]
    return total, warnings


def retrieval_scores(
    data: Embedded, scorer: Scorer, ks: Sequence[int] = DEFAULT_KS
) -> dict[str, Any]:
    """Recall@K and MRR (percent), median and mean rank for t2i and i2t, RSUM (sum of the R@K
    with K below the gallery size) and `warnings` (a list of strings, empty when none).

    `scorer(texts, images)` returns len(texts) x len(images) scores (higher = closer); a
    non-finite score raises `NonFiniteScores`.
    """
    if len(data.texts) == 0 or len(data.images) == 0:
        raise ValueError("cannot evaluate retrieval on an empty split")
    return scores_from_ranks(
        text_to_image_ranks(data, scorer), image_to_text_ranks(data, scorer), ks
    )


def scores_from_ranks(t2i: np.ndarray, i2t: np.ndarray, ks: Sequence[int]) -> dict[str, Any]:
    """`retrieval_scores` from the per-query ranks of both directions."""
    out: dict[str, Any] = {**summarize_ranks(t2i, ks, "t2i"), **summarize_ranks(i2t, ks, "i2t")}
    out["rsum"], out["warnings"] = recall_sum(out, ks, len(i2t), len(t2i))
    return {**out, "n_images": len(i2t), "n_captions": len(t2i)}
