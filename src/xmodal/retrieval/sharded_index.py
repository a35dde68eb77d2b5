"""Indexes built from an `xmodal embed` folder in bounded memory, larger than RAM if need be.

The index kind follows a memory budget, as autofaiss chooses it: exact (flat) search when every
vector fits; else IVF-PQ with the longest codes that fit; else IVF-PQ whose inverted lists live
on disk (faiss OnDiskInvertedLists, memory-mapped), so only the coarse quantizer and the ids stay
in RAM. Training uses a seeded sample; vectors are aligned and added shard by shard, and for the
on-disk form each shard becomes a small index file merged into one list file at the end. The
approximate index is then measured: recall@k of its top k against exact search, for held-out
queries of the other modality (captions searching images, images searching captions).
`ShardedCollection` opens the folder for search, naming hits from the embedding folder.
"""

from __future__ import annotations

import contextlib
import functools
import math
import os
import re
import shutil
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from xmodal.align.base import Aligner, load_aligner
from xmodal.align.identity import Identity
from xmodal.files import IntegrityError, atomic_path
from xmodal.retrieval.collection import META, Searchable
from xmodal.retrieval.index import (
    FlatIndex,
    Index,
    IVFIndex,
    load_index,
    read_manifest,
    write_manifest,
)
from xmodal.shards import ShardedEmbeddings
from xmodal.similarity import Metric, l2_normalize, topk

#: sub-quantizer counts tried for IVF-PQ, longest codes (best recall) first
PQ_M = (64, 48, 32, 24, 16, 12, 8, 4, 2, 1)
#: rows aligned and added at a time: bounds the memory of the add phase
BLOCK = 1 << 16
#: FAISS wants about this many training points per k-means centroid
POINTS_PER_CENTROID = 39
#: what the header (collection.json) of an index of an embedding folder says it is
LAYOUT = "sharded"
ALIGNER = "aligner.safetensors"
#: the inverted lists of an on-disk index, beside its index.faiss
LISTS = "lists.ivfdata"


@dataclass(frozen=True)
class IndexPlan:
    """The index a budget allows for n vectors of dimension dim, and its estimated RAM."""

    kind: str  # "flat" or "ivfpq"
    n: int
    dim: int
    ram_bytes: int
    nlist: int = 0
    pq_m: int = 0
    pq_bits: int = 8
    on_disk: bool = False

    def describe(self) -> str:
        if self.kind == "flat":
            return f"flat ({self.n} x {self.dim}, {self.ram_bytes / 2**20:.1f} MiB)"
        where = "on disk" if self.on_disk else "in RAM"
        return (
            f"IVF{self.nlist}-PQ{self.pq_m}x{self.pq_bits} lists {where} "
            f"({self.n} vectors, ~{self.ram_bytes / 2**20:.1f} MiB RAM)"
        )


def parse_bytes(text: str) -> int:
    """'512M', '4G', '1.5T', '1000000' -> bytes (binary units)."""
    m = re.fullmatch(r"\s*([0-9.]+)\s*([KMGT]?)i?B?\s*", text, re.IGNORECASE)
    if not m:
        raise ValueError(f"{text!r}: expected a size like 512M, 4G or 1.5T")
    scale = 1024 ** " KMGT".index(m.group(2).upper() or " ")
    return int(float(m.group(1)) * scale)


#: vectors sampled to train IVF-PQ (k-means and PQ codebooks)
TRAIN_SIZE = 1 << 17


def plan_index(
    n: int,
    dim: int,
    max_memory: int,
    metric: Metric | str = Metric.COSINE,
    train_size: int = TRAIN_SIZE,
) -> IndexPlan:
    """Flat when n x dim float32 fits the budget; else IVF-PQ (cosine and Euclidean only) with
    about 4 sqrt(n) cells, as many as the training sample can fit."""
    flat = n * (dim * 4 + 8)
    if flat <= max_memory:
        return IndexPlan("flat", n, dim, flat)
    if Metric(metric) not in IVFIndex.metrics:
        raise ValueError(
            f"{n} x {dim} vectors need {flat / 2**20:.0f} MiB for exact {Metric(metric).value} "
            f"search, over the budget of {max_memory / 2**20:.0f} MiB, and approximate indexes "
            "support cosine and euclidean only: raise --max-index-memory"
        )
    bits = 8 if n >= POINTS_PER_CENTROID * 256 else 4
    cells = 2 ** round(math.log2(4 * math.sqrt(n)))
    trainable = max(1, min(n, train_size) // POINTS_PER_CENTROID)
    nlist = max(1, min(cells, 2 ** int(math.log2(trainable))))
    fixed = nlist * dim * 4 + n * 8  # coarse centroids + xmodal's id array
    per_vector = 8  # the id FAISS stores beside each code
    ms = [m for m in PQ_M if dim % m == 0 and m * bits <= dim * 32]
    for m in ms:
        ram = fixed + n * (m * bits // 8 + per_vector)
        if ram <= max_memory:
            return IndexPlan("ivfpq", n, dim, ram, nlist, m, bits)
    return IndexPlan("ivfpq", n, dim, fixed, nlist, ms[0], bits, on_disk=True)


#: one side of a sharded collection: yields (global first row, aligned float32 block)
Blocks = Callable[[], Iterator[tuple[int, np.ndarray]]]


def side_blocks(shards: ShardedEmbeddings, side: str, transform: Callable) -> Blocks:
    """The aligned vectors of `side` ("images" or "captions"), shard by shard, in blocks."""

    def blocks() -> Iterator[tuple[int, np.ndarray]]:
        start = 0
        for k in range(len(shards.records)):
            raw = shards.vectors(k, side)
            for s in range(0, len(raw), BLOCK):
                yield start + s, transform(np.asarray(raw[s : s + BLOCK], np.float32))
            start += len(raw)

    return blocks


def sample_rows(
    shards: ShardedEmbeddings, side: str, rows: np.ndarray, transform: Callable
) -> np.ndarray:
    """Aligned vectors of the given global rows (sorted), read shard by shard."""
    out, start = [], 0
    for k in range(len(shards.records)):
        raw = shards.vectors(k, side)
        local = rows[(rows >= start) & (rows < start + len(raw))] - start
        if len(local):
            out.append(transform(np.asarray(raw[local], np.float32)))
        start += len(raw)
    return np.concatenate(out)


def build_from_blocks(
    blocks: Blocks,
    plan: IndexPlan,
    metric: Metric | str,
    train: np.ndarray | None,
    folder: Path,
    nprobe: int = 16,
) -> Index:
    """Build the planned index over every block, save it into `folder` and return it."""
    return fill_index(trained_index(plan, metric, train, nprobe), blocks, plan, metric, folder)


def trained_index(
    plan: IndexPlan, metric: Metric | str, train: np.ndarray | None, nprobe: int = 16
) -> Index:
    """The planned index, empty; an IVF-PQ one trained on the sample `train`."""
    if plan.kind == "flat":
        return FlatIndex(plan.dim, metric)
    if train is None:
        raise ValueError(f"{plan.describe()} needs a training sample")
    index = IVFIndex(plan.dim, metric, plan.nlist, nprobe, plan.pq_m, plan.pq_bits)
    index.index_.train(_faiss_ready(train, metric))
    return index


def fill_index(
    index: Index, blocks: Blocks, plan: IndexPlan, metric: Metric | str, folder: Path
) -> Index:
    """Add every block to the (trained) index and save it into `folder`."""
    if isinstance(index, IVFIndex) and plan.on_disk:
        return _build_on_disk(index, blocks, plan, metric, folder)
    for _, x in blocks():
        index.add(x)
    index.save(folder)
    return index


def _faiss_ready(x: np.ndarray, metric: Metric | str) -> np.ndarray:
    """What the FAISS index stores: unit vectors for cosine (inner product), raw for L2."""
    x = np.ascontiguousarray(x, np.float32)
    return l2_normalize(x) if Metric(metric) is Metric.COSINE else x


def _build_on_disk(
    index: IVFIndex, blocks: Blocks, plan: IndexPlan, metric: Metric | str, folder: Path
) -> Index:
    """One small IVF file per block, then merged into `lists.ivfdata` read by memory map."""
    import faiss

    parts_dir = folder / "parts"
    parts_dir.mkdir(parents=True, exist_ok=True)
    parts: list[str] = []
    for start, x in blocks():
        part = faiss.clone_index(index.index_)
        part.add_with_ids(_faiss_ready(x, metric), np.arange(start, start + len(x), dtype="int64"))
        parts.append(str(parts_dir / f"part_{len(parts):05d}.index"))
        faiss.write_index(part, parts[-1])
        del part
    with atomic_path(folder / LISTS) as tmp:
        lists = _merge_on_disk(index.index_, parts, tmp)
    lists.filename = str(folder / LISTS)  # what index.faiss records: the file's final name
    shutil.rmtree(parts_dir)
    index.ids_ = np.arange(index.index_.ntotal, dtype=np.int64)
    index.save(folder)
    return index


def _merge_on_disk(trained: Any, parts: list[str], path: Path) -> Any:
    """faiss.contrib.ondisk.merge_ondisk, except that the parts are unmapped once merged (it
    keeps them mapped, and their disk space taken, until the process ends) and that FAISS's
    progress line goes to stderr, not into the output of a command. Returns the lists."""
    import faiss

    indexes = [faiss.read_index(p, faiss.IO_FLAG_MMAP) for p in parts]  # mapped, not read
    ivf = faiss.extract_index_ivf(trained)
    lists: Any = faiss.OnDiskInvertedLists(ivf.nlist, ivf.code_size, str(path))
    merged = faiss.InvertedListsPtrVector()  # type: ignore[attr-defined]
    for part in indexes:
        merged.push_back(faiss.extract_index_ivf(part).invlists)
    with _stdout_to_stderr():
        ntotal = lists.merge_from_multiple(merged.data(), merged.size(), False)
    del merged, indexes  # frees the parts' lists: their maps go
    trained.ntotal = ivf.ntotal = ntotal
    ivf.replace_invlists(lists, True)
    lists.thisown = False  # the index owns the lists now
    return lists


@contextlib.contextmanager
def _stdout_to_stderr() -> Iterator[None]:
    """Route what C code prints to stdout (file descriptor 1) to stderr meanwhile."""
    import ctypes

    sys.stdout.flush()
    saved = os.dup(1)
    try:
        os.dup2(2, 1)
        yield
    finally:
        ctypes.CDLL(None).fflush(None)
        os.dup2(saved, 1)
        os.close(saved)


def exact_topk(
    queries: np.ndarray, blocks: Blocks, k: int, metric: Metric | str
) -> tuple[np.ndarray, np.ndarray]:
    """Exact top k over every block, merged as the blocks stream by (memory: queries x 2k)."""
    best_s = np.full((len(queries), 0), -np.inf, np.float32)
    best_i = np.zeros((len(queries), 0), np.int64)
    for start, x in blocks():
        s, i = topk(queries, x, min(k, len(x)), metric)
        best_s, best_i = np.hstack([best_s, s]), np.hstack([best_i, i + start])
        order = np.argsort(-best_s, axis=1, kind="stable")[:, :k]
        best_s = np.take_along_axis(best_s, order, 1)
        best_i = np.take_along_axis(best_i, order, 1)
    return best_s, best_i


def recall_at_k(found: np.ndarray, exact: np.ndarray) -> float:
    """Mean share of the exact top k that the index also returned (ids; -1 never matches).
    Items tied with the exact k-th score may be swapped, which can only lower the figure."""
    k = exact.shape[1]
    if k == 0 or len(exact) == 0:
        return float("nan")
    hits = sum(len(set(a[a >= 0]) & set(b)) for a, b in zip(found, exact, strict=True))
    return hits / (k * len(exact))


def build_sharded_collection(
    folder: str | Path,
    out: str | Path,
    max_memory: int,
    aligner_path: str | Path | None = None,
    nprobe: int = 16,
    queries: int = 1000,
    k: int = 10,
    seed: int = 0,
    train_size: int = TRAIN_SIZE,
) -> dict[str, Any]:
    """Index the aligned images and captions of an embedding folder into `out` (`images/`,
    searched by captions; `captions/`, searched by images) and measure each index's recall@k
    against exact search. Returns the report, also written to `out/collection.json`."""
    shards = ShardedEmbeddings(folder)
    if aligner_path is None and len(set(shards.dims())) > 1:
        raise ValueError(
            f"{folder}: images are {shards.dims()[0]}-d and captions {shards.dims()[1]}-d, not "
            "one shared space: give --aligner (e.g. one fitted by `xmodal train` on "
            f"embeddings:{folder})"
        )
    aligner: Aligner = load_aligner(aligner_path) if aligner_path else Identity()
    if aligner.learned_scorer:
        raise ValueError(f"a {aligner.kind!r} aligner scores pairs with a network: not indexable")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    sides = {
        "images": (shards.n_images, aligner.transform_images),
        "captions": (shards.n_captions, aligner.transform_texts),
    }
    report: dict[str, Any] = {
        "layout": LAYOUT,
        "source": str(Path(folder).resolve()),
        "fingerprint": shards.manifest["fingerprint"],
        "image_encoder": shards.image_encoder,
        "text_encoder": shards.text_encoder,
        "aligner": str(aligner_path) if aligner_path else "identity",
        "metric": str(aligner.metric.value),
        "max_index_memory": max_memory,
        "k": k,
    }
    held_out = {
        side: np.sort(rng.choice(n, min(queries, n), replace=False))
        for side, (n, _) in sides.items()
    }
    for name, (n, transform) in sides.items():
        blocks = side_blocks(shards, name, transform)
        dim = transform(np.zeros((1, shards.dims()[name != "images"]), np.float32)).shape[1]
        plan = plan_index(n, dim, max_memory, aligner.metric, train_size)
        clock = _Clock()
        train = None
        if plan.kind == "ivfpq":
            rows = np.sort(rng.choice(n, min(n, train_size), replace=False))
            train = sample_rows(shards, name, rows, transform)
        clock.lap("sample")
        index = trained_index(plan, aligner.metric, train, nprobe)
        clock.lap("train")
        index = fill_index(index, blocks, plan, aligner.metric, out / name)
        clock.lap("add")
        other = "captions" if name == "images" else "images"
        q = sample_rows(shards, other, held_out[other], sides[other][1])
        exact = exact_topk(q, blocks, min(k, n), aligner.metric)[1]
        found = index.search(q, min(k, n))[1]
        clock.lap("recall")
        direction = "t2i" if name == "images" else "i2t"
        report[name] = {
            **asdict(plan),
            "plan": plan.describe(),
            f"{direction}_recall@{k}": recall_at_k(found, exact),
            "queries": len(q),
            "seconds": clock.laps,
        }
    files = []
    if aligner_path:
        with atomic_path(out / ALIGNER) as tmp:
            shutil.copyfile(aligner_path, tmp)
        files.append(out / ALIGNER)
    write_manifest(out / META, report, files)  # last: a folder without it was never finished
    return report


class _Clock:
    """Seconds spent in each named phase, in order."""

    def __init__(self) -> None:
        self.laps: dict[str, float] = {}
        self._last = time.perf_counter()

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.laps[name] = round(now - self._last, 3)
        self._last = now


class ShardedCollection(Searchable):
    """An index folder written by `build_sharded_collection`, searched like a `Collection`:
    its hits are named (ids, paths, captions) from the metadata of the embedding folder it was
    built from, reading only the shards the hits fall in. Each side's index opens on its first
    query; on-disk lists are memory-mapped, so opening costs no more with n."""

    def __init__(self, folder: str | Path, device: str | None = None) -> None:
        self.folder = Path(folder)
        self.meta = read_manifest(self.folder / META)
        if self.meta.get("layout") != LAYOUT:
            raise ValueError(f"{self.folder / META}: not an index of an embedding folder")
        if self.meta["aligner"] == "identity":
            self.aligner: Aligner = Identity(self.meta["metric"])
        else:
            self.aligner = load_aligner(self.folder / ALIGNER)
        source = Path(self.meta["source"])
        if not (source / "manifest.json").is_file():
            raise FileNotFoundError(
                f"{source}: the embedding folder this index was built from (where its hits' "
                "ids, paths and captions are) is not there; put it back or rebuild the index"
            )
        self.shards = ShardedEmbeddings(source)
        if self.shards.manifest["fingerprint"] != self.meta["fingerprint"]:
            raise IntegrityError(source, f"holds other embeddings than {self.folder} indexed")
        self._device = device

    @functools.cached_property
    def image_index(self) -> Index:
        return self._side("images")

    @functools.cached_property
    def caption_index(self) -> Index:
        return self._side("captions")

    def _side(self, name: str) -> Index:
        index = load_index(self.folder / name)
        if len(index) != self.meta[name]["n"]:
            why = f"{len(index)} vectors, {META} says {self.meta[name]['n']}"
            raise IntegrityError(self.folder / name, why)
        return index

    def _images(self, rows: np.ndarray) -> list[tuple[str, str]]:
        return self.shards.image_items(rows)

    def _captions(self, rows: np.ndarray) -> list[tuple[str, str, str]]:
        return self.shards.caption_items(rows)
