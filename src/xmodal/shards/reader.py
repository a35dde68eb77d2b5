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
from xmodal.shards.format import MANIFEST, ShardRecord, read_manifest


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


class ShardedEmbeddings:
    """A finished `xmodal embed` folder. Every shard's files are checked against the manifest's
    SHA-256 before this reader first uses them; a mismatch raises IntegrityError naming the
    file. Vectors are memory-mapped; metadata is read a shard at a time, or only the rows asked
    (`image_items`, `caption_items`)."""

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
        import pyarrow.parquet as pq

        images, texts = self.vectors(k, "images"), self.vectors(k, "captions")
        try:
            meta = pq.read_table(self.file(k, "metadata")).to_pydict()
        except (OSError, ValueError) as e:
            raise IntegrityError(self.folder / f"shard {k}", f"unreadable ({e})") from None
        caption_image = np.asarray(meta["image_row"], np.int64)
        ids, paths = [""] * len(images), [""] * len(images)
        for row, im_id, path in zip(caption_image, meta["image_id"], meta["path"], strict=True):
            ids[row], paths[row] = im_id, path
        return Shard(
            k, images, texts, caption_image, meta["caption_id"], meta["caption"], ids, paths
        )

    def image_items(self, rows: Sequence[int] | np.ndarray) -> list[tuple[str, str]]:
        """(image id, path) of global image rows, read from the shards they fall in only."""
        found = self._metadata("images", rows, "image_row", ["image_id", "path"])
        return [(m["image_id"], m["path"]) for m in found]

    def caption_items(self, rows: Sequence[int] | np.ndarray) -> list[tuple[str, str, str]]:
        """(caption, image id, path) of global caption rows, read from their shards only."""
        found = self._metadata("captions", rows, "row", ["caption", "image_id", "path"])
        return [(m["caption"], m["image_id"], m["path"]) for m in found]

    def _metadata(
        self, side: str, rows: Sequence[int] | np.ndarray, key: str, columns: list[str]
    ) -> list[dict[str, Any]]:
        """Per global row of a side, the first metadata row whose `key` column is its local
        row; each shard's metadata file is read once, filtered to the rows asked."""
        import pyarrow.parquet as pq

        counts = [r.images if side == "images" else r.captions for r in self.records]
        starts = np.cumsum([0, *counts]).tolist()
        wanted = [int(r) for r in rows]
        if any(not 0 <= r < starts[-1] for r in wanted):
            raise IntegrityError(self.folder, f"{side} row outside 0..{starts[-1] - 1}")
        located = [(k, r - starts[k]) for r in wanted for k in [bisect_right(starts, r) - 1]]
        found: dict[tuple[int, int], dict[str, Any]] = {}
        for k in sorted({k for k, _ in located}):
            local = sorted({r for j, r in located if j == k})
            path = self.file(k, "metadata")
            table = pq.read_table(path, columns=[key, *columns], filters=[(key, "in", local)])
            for item in table.to_pylist():
                found.setdefault((k, item[key]), item)
        if missing := [f"shard {k} row {r}" for k, r in located if (k, r) not in found]:
            raise IntegrityError(self.folder, f"no metadata for {side} {missing[0]}")
        return [found[at] for at in located]

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
