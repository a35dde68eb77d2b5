"""Reading a sharded embedding folder: verified shard by shard, whole or streamed."""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from xmodal.data.dataset import Caption, Dataset, Image, Problem
from xmodal.files import IntegrityError, verify_checksum
from xmodal.shards.format import MANIFEST, METADATA_COLUMNS, ShardRecord, read_manifest


@dataclass(frozen=True)
class Shard:
    """One verified shard: vectors as stored (memory-mapped) and its caption rows."""

    index: int
    images: np.ndarray
    texts: np.ndarray
    caption_image: np.ndarray  # row in `images` of each caption
    caption_ids: list[str]
    captions: list[str]
    image_ids: list[str]  # one per image row
    image_paths: list[str]


@dataclass(frozen=True)
class ShardMetadata:
    """One shard's metadata file as compact Arrow columns (caption row r is table row r), with
    its captions grouped by image row: what naming a few rows of a shard needs."""

    table: Any  # pyarrow.Table: caption_id, caption, image_id, path, image_row
    order: np.ndarray  # caption rows, stably sorted by image row
    bounds: np.ndarray  # image i's caption rows: order[bounds[i] : bounds[i + 1]]

    @property
    def nbytes(self) -> int:
        return int(self.table.nbytes + self.order.nbytes + self.bounds.nbytes)

    def image(self, i: int) -> tuple[str, str]:
        """(image id, path) of image row i."""
        first = int(self.order[self.bounds[i]])
        return self._cell("image_id", first), self._cell("path", first)

    def captions_of(self, i: int) -> list[str]:
        rows = self.order[self.bounds[i] : self.bounds[i + 1]]
        return [self._cell("caption", int(r)) for r in rows]

    def caption(self, r: int) -> tuple[str, int]:
        """(text, image row) of caption row r."""
        return self._cell("caption", r), self._cell("image_row", r)

    def _cell(self, column: str, row: int) -> Any:
        return self.table.column(column)[row].as_py()


class ShardedEmbeddings:
    """A finished `xmodal embed` folder. Every shard's files are checked against the manifest's
    SHA-256 before this reader first uses them; a mismatch raises IntegrityError naming the
    file. Vectors are memory-mapped; metadata is read a shard at a time (`metadata`), and rows
    are named from the shards they fall in only (`image_items`, `caption_items`)."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        manifest = read_manifest(self.folder)
        if manifest is None:
            raise FileNotFoundError(
                f"{self.folder / MANIFEST}: not found; `xmodal embed SOURCE --out "
                f"{self.folder}` writes an embedding folder"
            )
        if not manifest.get("complete"):
            raise ValueError(
                f"{self.folder}: embedding unfinished ({len(manifest['shards'])} of "
                f"{manifest['planned_shards']} shards); rerun the same `xmodal embed` to finish"
            )
        self.manifest = manifest
        self.records = [ShardRecord(**r) for r in manifest["shards"]]
        self._verified: set[str] = set()
        self._starts: dict[str, list[int]] = {}

    @property
    def n_images(self) -> int:
        return sum(r.images for r in self.records)

    @property
    def n_captions(self) -> int:
        return sum(r.captions for r in self.records)

    @property
    def image_encoder(self) -> str:
        return self.manifest["image_encoder"]["spec"]

    @property
    def text_encoder(self) -> str:
        return self.manifest["text_encoder"]["spec"]

    def dims(self) -> tuple[int, int]:
        return self.manifest["image_encoder"]["dim"], self.manifest["text_encoder"]["dim"]

    def file(self, k: int, part: str) -> Path:
        """Shard k's file of `part` (img_emb, text_emb, metadata), its checksum verified the
        first time this reader uses it."""
        rel = next(r for r in self.records[k].files if Path(r).parent.name == part)
        path = self.folder / rel
        if rel not in self._verified:
            if not path.is_file():
                raise IntegrityError(path, "missing")
            verify_checksum(path, self.records[k].files[rel])
            self._verified.add(rel)
        return path

    def vectors(self, k: int, side: str) -> np.ndarray:
        """Shard k's image ("images") or caption ("captions") vectors, memory-mapped."""
        path = self.file(k, "img_emb" if side == "images" else "text_emb")
        try:
            return np.load(path, mmap_mode="r", allow_pickle=False)
        except (OSError, ValueError) as e:
            raise IntegrityError(path, f"unreadable ({e})") from None

    def shard(self, k: int) -> Shard:
        images, texts = self.vectors(k, "images"), self.vectors(k, "captions")
        meta = self.metadata(k)
        column = meta.table.column
        first = meta.order[meta.bounds[:-1]]  # one caption row per image row
        return Shard(
            k,
            images,
            texts,
            column("image_row").to_numpy().astype(np.int64),
            column("caption_id").to_pylist(),
            column("caption").to_pylist(),
            column("image_id").take(first).to_pylist(),
            column("path").take(first).to_pylist(),
        )

    def starts(self, side: str) -> list[int]:
        """The first global row of each shard of `side` ("images" or "captions"), and the total."""
        if side not in self._starts:
            counts = [r.images if side == "images" else r.captions for r in self.records]
            self._starts[side] = np.cumsum([0, *counts]).tolist()
        return self._starts[side]

    def locate(self, side: str, rows: Sequence[int] | np.ndarray) -> list[tuple[int, int]]:
        """(shard, row within it) of global rows of `side`; rows come from an index of this
        folder, so one outside the folder means the two do not match (IntegrityError)."""
        starts = self.starts(side)
        wanted = [int(r) for r in rows]
        if any(not 0 <= r < starts[-1] for r in wanted):
            raise IntegrityError(self.folder, f"{side} row outside 0..{starts[-1] - 1}")
        return [(k, r - starts[k]) for r in wanted for k in [bisect_right(starts, r) - 1]]

    def metadata(self, k: int) -> ShardMetadata:
        """Shard k's metadata file, verified, read whole and checked against the manifest."""
        import pyarrow.parquet as pq

        path = self.file(k, "metadata")
        try:
            table = pq.read_table(path, columns=list(METADATA_COLUMNS)).combine_chunks()
        except (OSError, ValueError) as e:
            raise IntegrityError(path, f"unreadable ({e})") from None
        record = self.records[k]
        rows = table.column("row").to_numpy()
        image_row = table.column("image_row").to_numpy()
        if not np.array_equal(rows, np.arange(record.captions)):
            raise IntegrityError(path, f"rows are not 0..{record.captions - 1} in order")
        if len(image_row) and (image_row.min() < 0 or image_row.max() >= record.images):
            raise IntegrityError(path, f"image rows outside 0..{record.images - 1}")
        order = np.argsort(image_row, kind="stable")
        bounds = np.searchsorted(image_row[order], np.arange(record.images + 1))
        if (np.diff(bounds) == 0).any():
            raise IntegrityError(path, "an image row without a caption")
        return ShardMetadata(table, order, bounds)

    def image_items(self, rows: Sequence[int] | np.ndarray) -> list[tuple[str, str]]:
        """(image id, path) of global image rows, read from the shards they fall in only."""
        located = self.locate("images", rows)
        shards = {k: self.metadata(k) for k in sorted({k for k, _ in located})}
        return [shards[k].image(i) for k, i in located]

    def caption_items(self, rows: Sequence[int] | np.ndarray) -> list[tuple[str, str, str]]:
        """(caption, image id, path) of global caption rows, read from their shards only."""
        located = self.locate("captions", rows)
        shards = {k: self.metadata(k) for k in sorted({k for k, _ in located})}
        out = []
        for k, r in located:
            text, image = shards[k].caption(r)
            out.append((text, *shards[k].image(image)))
        return out

    def __iter__(self) -> Iterator[Shard]:
        return (self.shard(k) for k in range(len(self.records)))

    def problems(self) -> list[Problem]:
        loading = [Problem(**p) for p in self.manifest.get("load_problems", [])]
        return loading + [Problem(**p) for r in self.records for p in r.problems]

    def load(self) -> tuple[Dataset, np.ndarray, np.ndarray]:
        """The whole collection in memory: its Dataset (shard order) and float32 vectors."""
        images, texts, image_rows, caption_rows = [], [], [], []
        for shard in self:
            images.append(np.asarray(shard.images, np.float32))
            texts.append(np.asarray(shard.texts, np.float32))
            ids = shard.image_ids
            image_rows += [Image(i, Path(p)) for i, p in zip(ids, shard.image_paths, strict=True)]
            captions = zip(shard.caption_ids, shard.captions, shard.caption_image, strict=True)
            caption_rows += [Caption(c, t, ids[r]) for c, t, r in captions]
        d_image, d_text = self.dims()
        dataset = Dataset(
            self.manifest["dataset"], image_rows, caption_rows, problems=self.problems()
        )
        return (
            dataset,
            np.concatenate(images) if images else np.empty((0, d_image), np.float32),
            np.concatenate(texts) if texts else np.empty((0, d_text), np.float32),
        )
