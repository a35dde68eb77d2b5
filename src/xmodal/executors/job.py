"""`xmodal embed`: a dataset -> a sharded embedding folder, resumable, on any executor.

The driver reads the source into an on-disk listing (streamed row by row for a manifest), keeps
the shards a previous run finished (once their checksums verify), writes the rows of each other
shard to its own listing file, hands those shards to an executor, and records each shard in
the manifest as it arrives. Its memory does not grow with the number of pairs: executors get
shard numbers and checksums, never the rows. Executors only run `embed_shard` on shards: which
one ran a shard changes nothing in its files.
"""

from __future__ import annotations

import contextlib
import json
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from xmodal.data.dataset import Dataset
from xmodal.data.listing import Listing
from xmodal.data.loaders import open_listing
from xmodal.encoders.base import ImageEncoder, TextEncoder
from xmodal.encoders.registry import build_pair
from xmodal.files import IntegrityError, atomic_write_text
from xmodal.shards.format import (
    DTYPES,
    FORMAT_VERSION,
    PARTS,
    PROBLEMS,
    PlannedShard,
    ShardRecord,
    embed_shard,
    listing_db,
    plan_shard,
    read_manifest,
    versions,
    write_manifest,
)

DEFAULT_SHARD_SIZE = 10_000


@dataclass(frozen=True)
class EmbedJob:
    """What every shard is embedded with: picklable, so Ray actors get it whole."""

    image: str
    text: str
    folder: str
    dtype: str = "float16"
    batch_size: int | None = None
    device: str | None = None

    def encoders(self) -> tuple[ImageEncoder, TextEncoder]:
        if self.image == self.text:  # one vision-language model: load it once
            return build_pair(model=self.image, device=self.device)
        return build_pair(self.image, self.text, device=self.device)

    def run(self, shard: PlannedShard, encoders: tuple[ImageEncoder, TextEncoder]) -> ShardRecord:
        folder = Path(self.folder)
        return embed_shard(shard.task(folder), *encoders, folder, self.dtype, self.batch_size)


#: embeds the planned shards of a job and yields each finished shard's record, in any order
Executor = Callable[[EmbedJob, list[PlannedShard]], Iterator[ShardRecord]]


@dataclass
class EmbedResult:
    folder: Path
    shards: int
    kept: int  # finished by an earlier run, verified and kept
    images: int
    captions: int
    problems: int
    notes: list[str] = field(default_factory=list)

    @property
    def problems_file(self) -> Path:
        return self.folder / PROBLEMS


def embed_collection(
    source: str,
    job: EmbedJob,
    executor: Executor,
    shard_size: int = DEFAULT_SHARD_SIZE,
    on_shard: Callable[[ShardRecord], None] | None = None,
    *,
    images: str | Path | None = None,
    dataset: Dataset | None = None,
) -> EmbedResult:
    """Embed the dataset "FORMAT:PATH" (or `dataset`, that source already loaded) into
    `job.folder`, resuming what a previous identical run finished."""
    if job.dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, got {job.dtype!r}")
    if shard_size < 1:
        raise ValueError(f"shard size must be a positive number of images, got {shard_size}")
    folder = Path(job.folder)
    folder.mkdir(parents=True, exist_ok=True)
    _remove_partial_files(folder)
    db = listing_db(folder)
    db.parent.mkdir(exist_ok=True)
    with (
        Listing.from_dataset(dataset, db)
        if dataset is not None
        else open_listing(source, images, db)
    ) as listing:
        n_shards = -(-listing.n_images // shard_size)
        plan = {
            "source": source,
            "dataset": listing.name,
            "fingerprint": listing.fingerprint(),
            "shard_size": shard_size,
            "dtype": job.dtype,
            "image_spec": job.image,
            "text_spec": job.text,
        }
        done, notes = _finished(folder, plan)
        load_problems = [vars(p) for p in listing.problems]
        pending = [
            plan_shard(listing, k, shard_size, folder) for k in range(n_shards) if k not in done
        ]
    manifest: dict[str, Any] = {
        "format": FORMAT_VERSION,
        **plan,
        "planned_shards": n_shards,
        "complete": False,
        "versions": versions(),
        "load_problems": load_problems,
    }

    def save() -> None:
        records = [done[k] for k in sorted(done)]
        if records:
            first = records[0]
            for side in ("image", "text"):
                manifest[f"{side}_encoder"] = {
                    "spec": plan[f"{side}_spec"],
                    "fingerprint": first.encoders[side],
                    "dim": first.dims[side],
                }
        manifest["shards"] = [vars(r) for r in records]
        manifest["complete"] = len(done) == n_shards
        write_manifest(folder, manifest)

    kept = len(done)
    save()
    for record in executor(job, pending) if pending else ():
        _same_encoders(folder, done, record)
        done[record.index] = record
        save()
        if on_shard is not None:
            on_shard(record)
    if manifest["complete"]:
        shutil.rmtree(db.parent, ignore_errors=True)
    records = [done[k] for k in sorted(done)]
    problems = manifest["load_problems"] + [p for r in records for p in r.problems]
    atomic_write_text(folder / PROBLEMS, "".join(json.dumps(p) + "\n" for p in problems))
    return EmbedResult(
        folder,
        n_shards,
        kept,
        sum(r.images for r in records),
        sum(r.captions for r in records),
        len(problems),
        notes,
    )


def _finished(folder: Path, plan: dict[str, Any]) -> tuple[dict[int, ShardRecord], list[str]]:
    """The shards an earlier run of the same plan finished and whose files still verify."""
    manifest = read_manifest(folder)
    if manifest is None:
        return {}, []
    differs = [k for k, v in plan.items() if manifest.get(k) != v]
    if differs:
        key = differs[0]
        raise ValueError(
            f"{folder}: holds embeddings of another job ({key} was {manifest.get(key)!r}, now "
            f"{plan[key]!r}); choose a new --out, or remove the folder"
        )
    done, notes = {}, []
    for raw in manifest.get("shards", []):
        record = ShardRecord(**raw)
        try:
            record.verify(folder)
        except IntegrityError as e:
            notes.append(f"shard {record.index} redone: {e}")
            continue
        done[record.index] = record
    return done, notes


def _same_encoders(folder: Path, done: dict[int, ShardRecord], record: ShardRecord) -> None:
    other = next((r for r in done.values() if r.index != record.index), None)
    if other is not None and other.encoders != record.encoders:
        raise ValueError(
            f"{folder}: shard {other.index} was embedded with {other.encoders}, shard "
            f"{record.index} with {record.encoders} (the encoders' preprocessing changed); "
            "choose a new --out"
        )


def _remove_partial_files(folder: Path) -> None:
    """Temporary files of writes a killed run never finished."""
    for where in (folder, *(folder / part for part in PARTS)):
        for tmp in where.glob(".*.tmp"):
            with contextlib.suppress(OSError):
                tmp.unlink()
