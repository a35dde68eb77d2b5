"""A searchable collection: a dataset's images and captions, embedded, aligned and indexed.

Saved as a folder: `collection.json` (encoders, metric, index kind), `aligner.safetensors`,
`items.npz` (image ids and paths, caption texts and their image rows), and two indexes,
`images/` (what caption queries search) and `captions/` (what image queries search).
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from xmodal.align.base import Aligner, load_aligner
from xmodal.data.dataset import Dataset
from xmodal.encoders.registry import build_image_encoder, build_text_encoder
from xmodal.retrieval.index import Index, build_index, load_index


@dataclass(frozen=True)
class Hit:
    score: float
    image_id: str
    path: str
    caption: str | None = None  # set for image -> text hits


def _indexable(aligner: Aligner) -> None:
    if aligner.learned_scorer:
        raise ValueError(
            f"a {aligner.kind!r} aligner scores pairs with a learned network, which no vector "
            "index can search; use an aligner compared by a metric (e.g. linear, mlp, ridge)"
        )


def build_collection(
    dataset: Dataset,
    images: np.ndarray,
    texts: np.ndarray,
    image_spec: str,
    text_spec: str,
    aligner_path: str | Path,
    out: str | Path,
    kind: str = "hnsw",
    **index_params: Any,
) -> Path:
    """Index the aligned vectors of every image and caption of `dataset` into folder `out`.

    The encoder specs are those that made `images` and `texts`; queries are embedded with them.
    """
    aligner = load_aligner(aligner_path)
    _indexable(aligner)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    for name, vectors in (
        ("images", aligner.transform_images(images)),
        ("captions", aligner.transform_texts(texts)),
    ):
        index = build_index(kind, vectors.shape[1], aligner.metric, **index_params)
        index.add(vectors)
        index.save(out / name)
    shutil.copyfile(aligner_path, out / "aligner.safetensors")
    np.savez(
        out / "items.npz",
        image_ids=np.array([im.id for im in dataset.images]),
        image_paths=np.array([str(im.path) for im in dataset.images]),
        captions=np.array([c.text for c in dataset.captions]),
        caption_image=dataset.caption_image,
    )
    meta = {
        "image_encoder": image_spec,
        "text_encoder": text_spec,
        "metric": str(aligner.metric),
        "kind": kind,
        "dataset": dataset.name,
        "images": len(dataset.images),
        "captions": len(dataset.captions),
    }
    (out / "collection.json").write_text(json.dumps(meta, indent=2))
    return out


class Collection:
    """A saved collection, ready for text and image queries."""

    def __init__(self, folder: str | Path, device: str | None = None) -> None:
        folder = Path(folder)
        try:
            self.meta = json.loads((folder / "collection.json").read_text())
        except FileNotFoundError:
            raise FileNotFoundError(
                f"{folder}: not a collection (no collection.json); build one with "
                "`xmodal index build`"
            ) from None
        self.aligner = load_aligner(folder / "aligner.safetensors")
        self.image_index: Index = load_index(folder / "images")
        self.caption_index: Index = load_index(folder / "captions")
        with np.load(folder / "items.npz", allow_pickle=False) as z:
            self.items = {k: z[k] for k in z.files}
        self._device = device

    def search_text(self, query: str, k: int = 5) -> list[Hit]:
        """The k images closest to a caption."""
        vec = build_text_encoder(self.meta["text_encoder"], self._device).encode_texts([query])
        scores, rows = self.image_index.search(self.aligner.transform_texts(vec), k)
        return [self._image_hit(s, r) for s, r in zip(scores[0], rows[0], strict=True) if r >= 0]

    def search_image(self, path: str | Path, k: int = 5) -> list[Hit]:
        """The k captions closest to an image file."""
        vec = build_image_encoder(self.meta["image_encoder"], self._device).encode_images([path])
        scores, rows = self.caption_index.search(self.aligner.transform_images(vec), k)
        hits = []
        for s, r in zip(scores[0], rows[0], strict=True):
            if r >= 0:
                hit = self._image_hit(s, self.items["caption_image"][r])
                hits.append(Hit(hit.score, hit.image_id, hit.path, str(self.items["captions"][r])))
        return hits

    def _image_hit(self, score: float, row: int) -> Hit:
        return Hit(
            float(score), str(self.items["image_ids"][row]), str(self.items["image_paths"][row])
        )
