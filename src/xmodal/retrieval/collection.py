"""A searchable collection: a dataset's images and captions, embedded, aligned and indexed.

Saved as a folder: `collection.json` (encoders, metric, index kind, the SHA-256 of the files
beside it) with its checksum `collection.json.sha256`, `aligner.safetensors`, `items.npz` (image
ids and absolute paths, caption texts and their image rows), and two indexes, `images/` (what
caption queries search) and `captions/` (what image queries search). Opening one verifies every
file and that every stored id points at an item, so damage is an IntegrityError naming the file.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from xmodal.align.base import Aligner, load_aligner
from xmodal.data.dataset import Dataset
from xmodal.encoders.registry import build_image_encoder, build_text_encoder
from xmodal.files import CHECKSUM_SUFFIX, IntegrityError, atomic_path, sha256_file
from xmodal.retrieval.index import Index, build_index, load_index, read_manifest, write_manifest

META = "collection.json"


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
    with atomic_path(out / "aligner.safetensors") as tmp:
        shutil.copyfile(aligner_path, tmp)
    if Path(f"{aligner_path}{CHECKSUM_SUFFIX}").is_file():  # the aligner's own checksum
        shutil.copyfile(
            f"{aligner_path}{CHECKSUM_SUFFIX}", out / f"aligner.safetensors{CHECKSUM_SUFFIX}"
        )
    with atomic_path(out / "items.npz") as tmp, open(tmp, "wb") as f:
        np.savez(
            f,
            image_ids=np.array([im.id for im in dataset.images]),
            # absolute: a search prints paths that open from any working directory
            image_paths=np.array([str(Path(im.path).resolve()) for im in dataset.images]),
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
        "sha256": {name: sha256_file(out / name) for name in ("aligner.safetensors", "items.npz")},
    }
    write_manifest(out / META, meta)
    return out


class Collection:
    """A saved collection, ready for text and image queries."""

    def __init__(self, folder: str | Path, device: str | None = None) -> None:
        folder = Path(folder)
        if not (folder / META).is_file():
            raise FileNotFoundError(
                f"{folder}: not a collection (no {META}); build one with `xmodal index build`"
            )
        self.meta = read_manifest(folder / META)
        self.aligner = load_aligner(folder / "aligner.safetensors")
        self.image_index: Index = load_index(folder / "images")
        self.caption_index: Index = load_index(folder / "captions")
        try:
            with np.load(folder / "items.npz", allow_pickle=False) as z:
                self.items = {k: z[k] for k in z.files}
        except (OSError, ValueError, KeyError) as e:
            raise IntegrityError(folder / "items.npz", f"unreadable ({e})") from None
        self._check_rows(folder)
        self._device = device

    def _check_rows(self, folder: Path) -> None:
        """Every id an index returns, and every caption's image, must be a row of items.npz."""
        n_images, n_captions = len(self.items["image_ids"]), len(self.items["captions"])
        for name, ids, n in (
            ("images", self.image_index.ids_, n_images),
            ("captions", self.caption_index.ids_, n_captions),
            ("items.npz", self.items["caption_image"], n_images),
        ):
            if len(ids) and (ids.min() < 0 or ids.max() >= n):
                raise IntegrityError(folder / name, f"ids outside 0..{n - 1}")
        if (n_images, n_captions) != (self.meta["images"], self.meta["captions"]):
            raise IntegrityError(folder / "items.npz", f"item counts differ from {META}")

    def search_text(self, query: str, k: int = 5) -> list[Hit]:
        """The k images closest to a caption."""
        if not query.strip():
            raise ValueError("empty query: give a caption to search for")
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
