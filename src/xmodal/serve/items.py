"""How the service names the items behind index rows: image ids, paths and captions.

`ListedItems` holds them in lists (a run's test split, a collection's `items.npz`).
`ShardedItems` reads them from the embedding folder an index was built from, only from the
shards the rows asked fall in, and keeps the metadata of recently read shards in a cache bounded
in bytes: its memory does not grow with the collection.
"""

from __future__ import annotations

import re
import threading
from abc import ABC, abstractmethod
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from xmodal.shards import ShardedEmbeddings
from xmodal.shards.reader import ShardMetadata

#: metadata of recently read shards kept in memory (Arrow columns), least recently used dropped
SHARD_CACHE_BYTES = 256 << 20


@dataclass(frozen=True)
class ImageItem:
    id: str
    path: str
    captions: list[str]


class Items(ABC):
    """The items of a collection: `n_images` image rows, `n_captions` caption rows."""

    n_images: int
    n_captions: int

    @abstractmethod
    def images(self, rows: Sequence[int]) -> list[ImageItem]:
        """The item of each image row."""

    @abstractmethod
    def captions(self, rows: Sequence[int]) -> list[tuple[str, int]]:
        """(text, image row) of each caption row."""

    @abstractmethod
    def row_of(self, item_id: str) -> int | None:
        """The image row of an item id; None when no item has it."""

    def image_embedding(self, row: int) -> np.ndarray | None:
        """The encoder's vector of an image row (1 x d, float32), where the items keep one."""
        return None


class ListedItems(Items):
    """Items held in lists; an id is looked up in a table of every id."""

    def __init__(
        self,
        image_ids: list[str],
        image_paths: list[str],
        caption_texts: list[str],
        caption_image: np.ndarray,
    ) -> None:
        self.image_ids, self.image_paths, self.caption_texts = image_ids, image_paths, caption_texts
        self.caption_image = np.asarray(caption_image, np.int64)
        self.n_images, self.n_captions = len(image_ids), len(caption_texts)
        self._row_of = {image_id: row for row, image_id in enumerate(image_ids)}
        self._captions_of: list[list[int]] = [[] for _ in image_ids]
        for caption, row in enumerate(self.caption_image):
            self._captions_of[int(row)].append(caption)

    def images(self, rows: Sequence[int]) -> list[ImageItem]:
        texts = self.caption_texts
        return [
            ImageItem(
                self.image_ids[r], self.image_paths[r], [texts[j] for j in self._captions_of[r]]
            )
            for r in rows
        ]

    def captions(self, rows: Sequence[int]) -> list[tuple[str, int]]:
        return [(self.caption_texts[r], int(self.caption_image[r])) for r in rows]

    def row_of(self, item_id: str) -> int | None:
        return self._row_of.get(item_id)


#: an item id of an embedding folder: its image row, then its image id
_SHARDED_ID = re.compile(r"(0|[1-9][0-9]*):(.+)", re.DOTALL)


class ShardedItems(Items):
    """The items of an embedding folder, read from the shards the rows fall in.

    An id is `ROW:IMAGE_ID` (`17:animals/birds/owl`): the row finds the item's shard from the
    manifest's counts, with no table of every id in memory (which would grow with n and need
    every shard's metadata read at start-up); the image id, checked against that shard's
    metadata, keeps an id from naming another image once the folder is rebuilt.
    """

    def __init__(self, shards: ShardedEmbeddings, cache_bytes: int = SHARD_CACHE_BYTES) -> None:
        self.shards, self.cache_bytes = shards, cache_bytes
        self.n_images, self.n_captions = shards.n_images, shards.n_captions
        self._cache: OrderedDict[int, ShardMetadata] = OrderedDict()
        self._cached_bytes = 0
        self._lock = threading.Lock()

    def images(self, rows: Sequence[int]) -> list[ImageItem]:
        out = []
        for row, (k, i) in zip(rows, self.shards.locate("images", rows), strict=True):
            meta = self.metadata(k)
            image_id, path = meta.image(i)
            out.append(ImageItem(f"{int(row)}:{image_id}", path, meta.captions_of(i)))
        return out

    def captions(self, rows: Sequence[int]) -> list[tuple[str, int]]:
        first = self.shards.starts("images")
        out = []
        for k, r in self.shards.locate("captions", rows):
            text, image = self.metadata(k).caption(r)
            out.append((text, first[k] + image))
        return out

    def row_of(self, item_id: str) -> int | None:
        m = _SHARDED_ID.fullmatch(item_id)
        if m is None or int(m[1]) >= self.n_images:
            return None
        row = int(m[1])
        ((k, i),) = self.shards.locate("images", [row])
        return row if self.metadata(k).image(i)[0] == m[2] else None

    def image_embedding(self, row: int) -> np.ndarray:
        ((k, i),) = self.shards.locate("images", [row])
        return np.asarray(self.shards.vectors(k, "images")[i : i + 1], np.float32)

    def metadata(self, k: int) -> ShardMetadata:
        """Shard k's metadata, from the cache or read (and verified) now."""
        with self._lock:
            if k in self._cache:
                self._cache.move_to_end(k)
                return self._cache[k]
        meta = self.shards.metadata(k)  # unlocked: other shards are served meanwhile
        with self._lock:
            if k not in self._cache:
                self._cache[k] = meta
                self._cached_bytes += meta.nbytes
            while self._cached_bytes > self.cache_bytes and len(self._cache) > 1:
                _, dropped = self._cache.popitem(last=False)
                self._cached_bytes -= dropped.nbytes
        return meta

    def cached_shards(self) -> list[int]:
        """The shards whose metadata is in memory, least recently used first."""
        with self._lock:
            return list(self._cache)
