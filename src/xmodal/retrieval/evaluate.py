"""Retrieval evaluation of aligned embeddings: Recall@K both ways, MRR and ranks (the ranking
itself lives in `xmodal.similarity.ranking`, below the aligners that select on it)."""

from __future__ import annotations

from collections.abc import Sequence

from xmodal.embeddings import Embedded
from xmodal.similarity.ranking import (
    DEFAULT_KS,
    Scorer,
    image_to_text_ranks,
    retrieval_scores,
    summarize_ranks,
    text_to_image_ranks,
)

__all__ = [
    "DEFAULT_KS",
    "evaluate",
    "image_to_text_ranks",
    "summarize_ranks",
    "text_to_image_ranks",
]


def evaluate(data: Embedded, scorer: Scorer, ks: Sequence[int] = DEFAULT_KS) -> dict[str, float]:
    """Recall@K (percent), MRR, median and mean rank for t2i and i2t, and RSUM (sum of the R@K).

    `scorer(texts, images)` returns len(texts) x len(images) scores (higher = closer).
    """
    return retrieval_scores(data, scorer, ks)
