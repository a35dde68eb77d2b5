"""Exact Recall@K with its query blocks spread over Ray tasks (`pip install 'xmodal[ray]'`).

Each task ranks one block of queries against the whole gallery with the same functions as
`xmodal.similarity.ranking`, so the ranks, and the scores, equal the local ones. The data go to
the object store once and every task reads them from there.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from xmodal.embeddings import Embedded
from xmodal.similarity.ranking import (
    DEFAULT_KS,
    Scorer,
    image_to_text_ranks,
    scores_from_ranks,
    text_to_image_ranks,
)


def _t2i_block(data: Embedded, scorer: Scorer, start: int, stop: int) -> np.ndarray:
    part = Embedded(data.images, data.texts[start:stop], data.caption_image[start:stop])
    return text_to_image_ranks(part, scorer)


def _i2t_block(data: Embedded, scorer: Scorer, start: int, stop: int) -> np.ndarray:
    """Ranks of images start..stop; captions of every other image belong to one extra image
    row (its own rank is dropped), so they stay wrong for every query in the block."""
    stop = min(stop, len(data.images))
    owner = data.caption_image
    inside = (owner >= start) & (owner < stop)
    extra = stop - start
    images = np.concatenate([data.images[start:stop], data.images[:1]])
    part = Embedded(images, data.texts, np.where(inside, owner - start, extra))
    return image_to_text_ranks(part, scorer)[:extra]


def retrieval_scores_on_ray(
    data: Embedded, scorer: Scorer, ks: Sequence[int] = DEFAULT_KS, block: int = 4096
) -> dict[str, Any]:
    """`xmodal.similarity.ranking.retrieval_scores`, with blocks of `block` queries per Ray task
    (Ray must be importable; a running `ray.init()` is used, else one is started)."""
    import ray

    if len(data.texts) == 0 or len(data.images) == 0:
        raise ValueError("cannot evaluate retrieval on an empty split")
    if not ray.is_initialized():
        ray.init(include_dashboard=False, log_to_driver=False)
    ref = ray.put(data)
    t2i, i2t = ray.remote(_t2i_block), ray.remote(_i2t_block)
    t_jobs = [t2i.remote(ref, scorer, s, s + block) for s in range(0, len(data.texts), block)]
    i_jobs = [i2t.remote(ref, scorer, s, s + block) for s in range(0, len(data.images), block)]
    return scores_from_ranks(np.concatenate(ray.get(t_jobs)), np.concatenate(ray.get(i_jobs)), ks)
