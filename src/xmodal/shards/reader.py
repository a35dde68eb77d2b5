"""Reading a sharded embedding folder: verified shard by shard, whole or streamed."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from xmodal.data.dataset import Caption, Dataset, Image, Problem
from xmodal.files import IntegrityError
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
    SHA-256 before they are used; a mismatch raises IntegrityError naming the file."""

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

    def shard(self, k: int, verify: bool = True) -> Shard:
        import pyarrow.parquet as pq

        record = self.records[k]
        if verify:
            record.verify(self.folder)
        files = {Path(rel).parent.name: self.folder / rel for rel in record.files}
        try:
            images = np.load(files["img_emb"], mmap_mode="r", allow_pickle=False)
            texts = np.load(files["text_emb"], mmap_mode="r", allow_pickle=False)
            meta = pq.read_table(files["metadata"]).to_pydict()
        except (OSError, ValueError) as e:
            raise IntegrityError(self.folder / f"shard {k}", f"unreadable ({e})") from None
        caption_image = np.asarray(meta["image_row"], np.int64)
        ids, paths = [""] * len(images), [""] * len(images)
        for row, im_id, path in zip(caption_image, meta["image_id"], meta["path"], strict=True):
            ids[row], paths[row] = im_id, path
        return Shard(
            k, images, texts, caption_image, meta["caption_id"], meta["caption"], ids, paths
        )

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
