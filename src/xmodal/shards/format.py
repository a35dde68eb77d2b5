"""The sharded embedding format: plain files other tools read (NumPy, Parquet, JSON).

    DIR/img_emb/img_emb_00000.npy          n_images x d_image (float16 or float32)
    DIR/text_emb/text_emb_00000.npy        n_captions x d_text
    DIR/metadata/metadata_00000.parquet    one row per caption: row (its row in text_emb),
                                           caption_id, caption, image_id, path (absolute), and
                                           image_row (its image's row in the same img_emb)
    DIR/manifest.json                      encoders, versions, and each finished shard's
                                           counts, SHA-256 per file and problems
    DIR/problems.jsonl                     every skipped input and why
    DIR/listing/                           while embedding: the rows of each unfinished shard
                                           (listing_00000.parquet, ...); removed when complete

Shard k holds images k*S .. (k+1)*S-1 of the source (S = shard size, in images) and all of their
captions, so an image and its captions never straddle two shards, whatever the number of captions
per image. Every file is written atomically; a shard counts as finished only once the manifest
records its checksums, so a killed run leaves nothing that a rerun would trust unverified.
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from xmodal.data.dataset import Problem
from xmodal.data.listing import Listing
from xmodal.encoders.base import ImageEncoder, TextEncoder
from xmodal.files import (
    IntegrityError,
    atomic_path,
    atomic_write_text,
    sha256_file,
    verify_checksum,
)

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
PROBLEMS = "problems.jsonl"
#: a data source whose vectors are already computed: a folder written by `xmodal embed`
SOURCE_PREFIX = "embeddings:"
PARTS = ("img_emb", "text_emb", "metadata")
#: the driver's workspace: the source listing and the rows of each unfinished shard
LISTING = "listing"
DTYPES = ("float16", "float32")
METADATA_COLUMNS = ("row", "caption_id", "caption", "image_id", "path", "image_row")


def listing_file(index: int) -> str:
    """The listing file of shard `index` (the rows it must embed), relative to DIR."""
    return f"{LISTING}/listing_{index:05d}.parquet"


def listing_db(folder: Path) -> Path:
    """Where the driver keeps the whole source listing (SQLite) while it plans the shards."""
    return folder / LISTING / "source.sqlite"


def shard_files(index: int) -> dict[str, str]:
    """The three files of shard `index`, relative to DIR, by part."""
    return {
        "img_emb": f"img_emb/img_emb_{index:05d}.npy",
        "text_emb": f"text_emb/text_emb_{index:05d}.npy",
        "metadata": f"metadata/metadata_{index:05d}.parquet",
    }


@dataclass(frozen=True)
class ShardTask:
    """What one shard must embed: its images and their captions, in source order."""

    index: int
    images: list[tuple[str, str]]  # (id, path)
    captions: list[tuple[str, str, str]]  # (id, text, image id)


@dataclass(frozen=True)
class PlannedShard:
    """A shard waiting to be embedded: its rows are in its listing file, whose SHA-256 this is.
    Small, so that executors pass these around, never the rows."""

    index: int
    sha256: str

    def task(self, folder: Path) -> ShardTask:
        """The shard's rows, read from its verified listing file."""
        import pyarrow.parquet as pq

        path = folder / listing_file(self.index)
        verify_checksum(path, self.sha256)
        rows = pq.read_table(path).to_pydict()
        ids, texts, image_ids = rows["caption_id"], rows["caption"], rows["image_id"]
        images = list(dict.fromkeys(zip(image_ids, rows["path"], strict=True)))
        return ShardTask(self.index, images, list(zip(ids, texts, image_ids, strict=True)))


def plan_shard(listing: Listing, index: int, shard_size: int, folder: Path) -> PlannedShard:
    """Write the listing file of shard `index`: its images (index*S .. index*S+S-1 of the
    listing) with all of their captions, one row per caption, grouped by image."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    start = index * shard_size
    # absolute: actors on other machines, and searches from anywhere, open the files
    path_of = {i: os.path.abspath(p) for i, p in listing.images(start, start + shard_size)}
    captions = list(listing.captions_of(start, start + shard_size))
    table = pa.table(
        {
            "caption_id": pa.array([c[0] for c in captions], pa.string()),
            "caption": pa.array([c[1] for c in captions], pa.string()),
            "image_id": pa.array([c[2] for c in captions], pa.string()),
            "path": pa.array([path_of[c[2]] for c in captions], pa.string()),
        }
    )
    path = folder / listing_file(index)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)
    return PlannedShard(index, sha256_file(path))


@dataclass
class ShardRecord:
    """A finished shard as the manifest records it."""

    index: int
    images: int
    captions: int
    files: dict[str, str]  # relative path -> SHA-256
    encoders: dict[str, str]  # image/text -> encoder fingerprint (spec + preprocessing)
    dims: dict[str, int]
    problems: list[dict[str, str]] = field(default_factory=list)

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> ShardRecord:
        return cls(**json.loads(text))

    def verify(self, folder: Path) -> None:
        """Raise IntegrityError naming the first file whose checksum does not match."""
        for rel, digest in self.files.items():
            if not (folder / rel).is_file():
                raise IntegrityError(folder / rel, "missing")
            verify_checksum(folder / rel, digest)


def embed_shard(
    task: ShardTask,
    image_encoder: ImageEncoder,
    text_encoder: TextEncoder,
    folder: Path,
    dtype: str = "float16",
    batch_size: int | None = None,
) -> ShardRecord:
    """Embed one shard and write its three files atomically. Undecodable images, captions the
    encoder cannot embed (NaN/inf) and images left with no caption are skipped and reported."""
    problems: list[Problem] = []
    failed_images: dict[int, str] = {}
    paths = [p for _, p in task.images]
    images = image_encoder.encode_images(
        paths, batch_size, on_error=lambda i, msg: failed_images.__setitem__(i, msg)
    )
    texts = text_encoder.encode_texts([t for _, t, _ in task.captions], batch_size)
    for bad in np.flatnonzero(~np.isfinite(images).all(axis=1)).tolist():
        failed_images.setdefault(bad, "the encoder produced NaN/inf values")
    bad_texts = set(np.flatnonzero(~np.isfinite(texts).all(axis=1)).tolist())
    problems += [Problem(paths[i], msg) for i, msg in sorted(failed_images.items())]
    problems += [
        Problem(f"caption {task.captions[j][0]}", "the encoder produced NaN/inf values")
        for j in sorted(bad_texts)
    ]
    bad_ids = {task.images[i][0] for i in failed_images}
    keep_caps = [
        j for j, (_, _, im) in enumerate(task.captions) if j not in bad_texts and im not in bad_ids
    ]
    captioned = {task.captions[j][2] for j in keep_caps}
    keep_images = []
    for i, (im_id, path) in enumerate(task.images):
        if im_id in captioned:
            keep_images.append(i)
        elif im_id not in bad_ids:
            problems.append(Problem(path, f"image {im_id!r} has no caption left"))
    image_row = {task.images[i][0]: r for r, i in enumerate(keep_images)}
    files = shard_files(task.index)
    _save_npy(folder / files["img_emb"], images[keep_images].astype(dtype))
    _save_npy(folder / files["text_emb"], texts[keep_caps].astype(dtype))
    _save_metadata(folder / files["metadata"], task, keep_caps, image_row)
    return ShardRecord(
        index=task.index,
        images=len(keep_images),
        captions=len(keep_caps),
        files={rel: sha256_file(folder / rel) for rel in files.values()},
        encoders={"image": image_encoder.fingerprint, "text": text_encoder.fingerprint},
        dims={"image": image_encoder.dim, "text": text_encoder.dim},
        problems=[asdict(p) for p in problems],
    )


def _save_npy(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.save(f, array, allow_pickle=False)


def _save_metadata(path: Path, task: ShardTask, keep: list[int], image_row: dict[str, int]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    caps = [task.captions[j] for j in keep]
    path_of = dict(task.images)
    table = pa.table(
        {
            "row": pa.array(range(len(caps)), pa.int64()),
            "caption_id": pa.array([c[0] for c in caps], pa.string()),
            "caption": pa.array([c[1] for c in caps], pa.string()),
            "image_id": pa.array([c[2] for c in caps], pa.string()),
            "path": pa.array([path_of[c[2]] for c in caps], pa.string()),
            "image_row": pa.array([image_row[c[2]] for c in caps], pa.int64()),
        }
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)


def versions() -> dict[str, str]:
    out = {}
    for name in ("xmodal", "torch", "numpy", "transformers", "sentence-transformers"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            out[name] = metadata.version(name)
    return out


def read_manifest(folder: Path) -> dict[str, Any] | None:
    """The manifest of DIR, or None when DIR holds none yet."""
    path = folder / MANIFEST
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:
        raise IntegrityError(path, f"unreadable manifest ({e})") from None
    if manifest.get("format") != FORMAT_VERSION:
        raise IntegrityError(path, f"unsupported format {manifest.get('format')!r}")
    return manifest


def write_manifest(folder: Path, manifest: dict[str, Any]) -> None:
    atomic_write_text(folder / MANIFEST, json.dumps(manifest, indent=1) + "\n")
