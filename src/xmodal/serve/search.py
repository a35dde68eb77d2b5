"""One batch of queries against one collection: encode together, align, search together."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

from xmodal.serve.collections import Encoders, ServedCollection

Target = Literal["image", "text"]


@dataclass(frozen=True, eq=False)
class Query:
    """Exactly one of `text` (a caption), `pixels` (a preprocessed image) or `vector` (an
    aligned image vector: that of the image row `like`, itself left out of its results)."""

    k: int
    target: Target
    text: str | None = None
    pixels: torch.Tensor | None = None
    vector: np.ndarray | None = None
    like: int | None = None


#: (row, score) pairs, best first: image rows for target "image", caption rows for "text"
Hits = list[tuple[int, float]]


def search_batch(
    collection: ServedCollection, encoders: Encoders, queries: Sequence[Query]
) -> list[Hits]:
    """Each query's hits; model calls and index searches are shared by the whole batch."""
    vectors = _aligned(collection, encoders, queries)
    out: list[Hits] = [[] for _ in queries]
    for target, index in (("image", collection.images), ("text", collection.captions)):
        rows = [i for i, q in enumerate(queries) if q.target == target]
        if not rows:
            continue
        k = max(queries[i].k + (queries[i].like is not None) for i in rows)
        scores, ids = index.search(np.concatenate([vectors[i] for i in rows]), k)
        for j, i in enumerate(rows):
            q = queries[i]
            drop = q.like if target == "image" else None
            hits = [
                (int(r), float(s))
                for r, s in zip(ids[j], scores[j], strict=True)
                if r >= 0 and r != drop
            ]
            out[i] = hits[: q.k]
    return out


def _aligned(
    collection: ServedCollection, encoders: Encoders, queries: Sequence[Query]
) -> list[np.ndarray]:
    vectors: list[np.ndarray] = [np.empty(0)] * len(queries)
    texts = [i for i, q in enumerate(queries) if q.text is not None]
    if texts:
        raw = encoders.text(collection.text_encoder).encode_texts([queries[i].text for i in texts])
        for i, v in zip(texts, collection.aligner.transform_texts(raw), strict=True):
            vectors[i] = v[None, :]
    pixels = [(i, q.pixels) for i, q in enumerate(queries) if q.pixels is not None]
    if pixels:
        encoder = encoders.image(collection.image_encoder)
        raw = encoder.embed_batch(torch.stack([p for _, p in pixels]))
        rows = [i for i, _ in pixels]
        for i, v in zip(rows, collection.aligner.transform_images(raw), strict=True):
            vectors[i] = v[None, :]
    for i, q in enumerate(queries):
        if q.vector is not None:
            vectors[i] = q.vector
    return [np.asarray(v, np.float32) for v in vectors]
