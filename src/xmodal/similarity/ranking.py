"""Ranks and Recall@K in both directions, the way the field publishes it, without an N x M
score matrix. Lives below `align` so that training can select on validation recall.

Conventions: every caption is a text query with exactly one correct image (text->image); an
image query is a hit at K if any of its captions is among the top K captions (image->text).
The rank of a query is 1 + the number of wrong gallery items scoring at least as high as the
best correct one: ties count against the query, so a degenerate model cannot look good.
Scores are computed block by block; memory is bounded by block x gallery size.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from xmodal.embeddings import Embedded

DEFAULT_KS = (1, 5, 10)

#: scores texts against images: (n_texts x d, n_images x d) -> n_texts x n_images, higher = closer
Scorer = Callable[[np.ndarray, np.ndarray], np.ndarray]


#: score-matrix entries per block (64M float32 = 256 MB), so a million captions still fit
BLOCK_ELEMENTS = 1 << 26
#: vector entries hashed or compared at a time when looking for identical vectors
ROW_BLOCK = 1 << 24


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


def text_to_image_ranks(data: Embedded, scorer: Scorer) -> np.ndarray:
    """1-based rank of each caption's own image among all images."""
    ranks = np.empty(len(data.texts), np.int64)
    block = _block(len(data.images))
    same = first_identical(data.images)
    for s in range(0, len(data.texts), block):
        scores = scorer(data.texts[s : s + block], data.images)
        if same is not None:
            scores = scores[:, same]
        own = data.caption_image[s : s + block]
        correct = scores[np.arange(len(own)), own][:, None]
        ranks[s : s + block] = (scores >= correct).sum(1)  # counts the correct one itself once
    return ranks


def image_to_text_ranks(data: Embedded, scorer: Scorer) -> np.ndarray:
    """1-based rank of the best-ranked own caption of each image among all captions."""
    ranks = np.empty(len(data.images), np.int64)
    owner = data.caption_image
    block = _block(len(data.texts), cap=1024)
    same = first_identical(data.texts)
    for s in range(0, len(data.images), block):
        # scorers take (texts, images); learned ones are asymmetric, so transpose, don't swap
        scores = scorer(data.texts, data.images[s : s + block]).T
        if same is not None:
            scores = scores[:, same]
        rows = np.arange(s, min(s + block, len(data.images)))
        mine = owner[None, :] == rows[:, None]
        best = np.where(mine, scores, -np.inf).max(1, keepdims=True)
        ranks[s : s + block] = 1 + ((scores >= best) & ~mine).sum(1)
    return ranks


def summarize_ranks(ranks: np.ndarray, ks: Sequence[int], prefix: str) -> dict[str, float]:
    """R@K (percent), MRR (percent, like R@K), median and mean rank of one direction."""
    out = {f"{prefix}_R@{k}": 100.0 * float(np.mean(ranks <= k)) for k in ks}
    out[f"{prefix}_MRR"] = 100.0 * float(np.mean(1.0 / ranks))
    out[f"{prefix}_medr"] = float(np.median(ranks))
    out[f"{prefix}_meanr"] = float(np.mean(ranks))
    return out


def retrieval_scores(
    data: Embedded, scorer: Scorer, ks: Sequence[int] = DEFAULT_KS
) -> dict[str, float]:
    """Recall@K (percent), MRR, median and mean rank for t2i and i2t, and RSUM (sum of the R@K).

    `scorer(texts, images)` returns len(texts) x len(images) scores (higher = closer).
    """
    if len(data.texts) == 0 or len(data.images) == 0:
        raise ValueError("cannot evaluate retrieval on an empty split")
    t2i = summarize_ranks(text_to_image_ranks(data, scorer), ks, "t2i")
    i2t = summarize_ranks(image_to_text_ranks(data, scorer), ks, "i2t")
    rsum = sum(t2i[f"t2i_R@{k}"] + i2t[f"i2t_R@{k}"] for k in ks)
    return {**t2i, **i2t, "rsum": rsum, "n_images": len(data.images), "n_captions": len(data.texts)}
