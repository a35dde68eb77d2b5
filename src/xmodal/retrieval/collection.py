"""A searchable collection: a dataset's images and captions, embedded, aligned and indexed.

Saved as a folder: `collection.json` (encoders, metric, index kind, the SHA-256 of the files
beside it) with its checksum `collection.json.sha256`, `aligner.safetensors`, `items.npz` (image
ids and absolute paths, caption texts and their image rows), and two indexes, `images/` (what
caption queries search) and `captions/` (what image queries search). Opening one verifies every
file and that every stored id points at an item, so damage is an IntegrityError naming the file.
"""

from __future__ import annotations

import json
import shutil
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from xmodal.align.base import Aligner, load_aligner
from xmodal.data.dataset import Dataset
from xmodal.encoders.registry import build_image_encoder, build_text_encoder
from xmodal.files import CHECKSUM_SUFFIX, IntegrityError, atomic_path
from xmodal.retrieval.index import (
    HEADER,
    Index,
    build_index,
    load_index,
    read_manifest,
    write_manifest,
)

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
    }
    write_manifest(out / META, meta, [out / "aligner.safetensors", out / "items.npz"])
    return out


def open_collection(folder: str | Path, device: str | None = None) -> Searchable:
    """The saved collection in `folder`: one built from a config (`Collection`) or from an
    embedding folder (`ShardedCollection`), as its header says."""
    from xmodal.retrieval.sharded_index import LAYOUT, ShardedCollection

    header = Path(folder) / META
    if not header.is_file():
        raise FileNotFoundError(
            f"{folder}: not a collection (no {META}); build one with `xmodal index build`"
        )
    try:
        layout = json.loads(header.read_text(encoding="utf-8")).get("layout")
    except (OSError, ValueError, AttributeError) as e:
        raise IntegrityError(header, f"unreadable ({e})") from None
    return (ShardedCollection if layout == LAYOUT else Collection)(folder, device)


def verify_collection(folder: str | Path) -> list[Path]:
    """Read every file of a saved collection whole and check its SHA-256 (opening one checks
    large files by size and sampled blocks only); returns the files checked."""
    folder = Path(folder)
    checked = []
    for header in (folder / META, folder / "images" / HEADER, folder / "captions" / HEADER):
        listed = read_manifest(header, full=True).get("sha256", {})
        checked += [header, *(header.parent / name for name in listed)]
    return checked


class Searchable(ABC):
    """A saved index folder that answers text and image queries: the encoders that made its
    vectors (`meta`), its aligner, an index of images and one of captions, and a way to name
    the items behind index rows."""

    meta: dict[str, Any]
    aligner: Aligner
    _device: str | None = None

    @property
    @abstractmethod
    def image_index(self) -> Index: ...

    @property
    @abstractmethod
    def caption_index(self) -> Index: ...

    @abstractmethod
    def _images(self, rows: np.ndarray) -> list[tuple[str, str]]:
        """(image id, path) of image rows."""

    @abstractmethod
    def _captions(self, rows: np.ndarray) -> list[tuple[str, str, str]]:
        """(caption, image id, path) of caption rows."""

    def search_text(self, query: str, k: int = 5) -> list[Hit]:
        """The k images closest to a caption."""
        if not query.strip():
            raise ValueError("empty query: give a caption to search for")
        vec = build_text_encoder(self.meta["text_encoder"], self._device).encode_texts([query])
        scores, rows = self.image_index.search(self.aligner.transform_texts(vec), k)
        found = rows[0] >= 0
        items = self._images(rows[0][found])
        return [Hit(float(s), i, p) for s, (i, p) in zip(scores[0][found], items, strict=True)]

    def search_image(self, path: str | Path, k: int = 5) -> list[Hit]:
        """The k captions closest to an image file."""
        vec = build_image_encoder(self.meta["image_encoder"], self._device).encode_images([path])
        scores, rows = self.caption_index.search(self.aligner.transform_images(vec), k)
        found = rows[0] >= 0
        items = self._captions(rows[0][found])
        return [
            Hit(float(s), i, p, text)
            for s, (text, i, p) in zip(scores[0][found], items, strict=True)
        ]


class Collection(Searchable):
    """A saved collection, ready for text and image queries."""

    def __init__(self, folder: str | Path, device: str | None = None) -> None:
        folder = Path(folder)
        if not (folder / META).is_file():
            raise FileNotFoundError(
                f"{folder}: not a collection (no {META}); build one with `xmodal index build`"
            )
        self.meta = read_manifest(folder / META)
        self.aligner = load_aligner(folder / "aligner.safetensors")
        self._indexes = (load_index(folder / "images"), load_index(folder / "captions"))
        try:
            with np.load(folder / "items.npz", allow_pickle=False) as z:
                self.items = {k: z[k] for k in z.files}
        except (OSError, ValueError, KeyError) as e:
            raise IntegrityError(folder / "items.npz", f"unreadable ({e})") from None
        self._check_rows(folder)
        self._device = device

    @property
    def image_index(self) -> Index:
        return self._indexes[0]

    @property
    def caption_index(self) -> Index:
        return self._indexes[1]

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

    def _images(self, rows: np.ndarray) -> list[tuple[str, str]]:
        ids, paths = self.items["image_ids"], self.items["image_paths"]
        return [(str(ids[r]), str(paths[r])) for r in rows]

    def _captions(self, rows: np.ndarray) -> list[tuple[str, str, str]]:
        images = self._images(self.items["caption_image"][rows])
        texts = [str(self.items["captions"][r]) for r in rows]
        return [(t, i, p) for t, (i, p) in zip(texts, images, strict=True)]
