"""Search indexes: one interface over exact (flat) and approximate (FAISS HNSW / IVF) search.

Scores follow the library's convention everywhere: higher = closer; cosine indexes return cosine
similarity, Euclidean ones the negated distance (FAISS's squared L2 is converted).

On disk an index is a directory: `index.json` (kind, metric, dim, params, count, and the SHA-256
and size of every other file), `ids.npy` (int64, the caller's id of each stored vector) and the
payload (`vectors.npy` for flat, `index.faiss` written by faiss.write_index, and for inverted
lists kept on disk their `lists.ivfdata`). `index.json.sha256` guards the header. Loading
verifies every digest first, so a flipped byte is an IntegrityError naming the file, never a
wrong score; except that a file over QUICK_CHECK_BYTES (a multi-GB list file, memory-mapped,
never read whole) is checked on load by its size and a digest of sampled blocks, and in full
only by `read_manifest(..., full=True)` (`xmodal index verify`). Nothing is pickled; every file
is written atomically.
"""

from __future__ import annotations

import inspect
import json
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, ClassVar, Self

import numpy as np

from xmodal.files import (
    IntegrityError,
    atomic_path,
    atomic_write_text,
    require_finite,
    sampled_sha256,
    sha256_file,
    verify_checksum,
    write_checksum,
)
from xmodal.similarity import Metric, l2_normalize, topk
from xmodal.similarity.search import DEFAULT_BLOCK

HEADER = "index.json"
FORMAT_VERSION = 2  # 2: file digests in the header
#: files larger than this are checked on load by size and sampled blocks, not read whole
QUICK_CHECK_BYTES = 256 << 20


class Index(ABC):
    """Vectors with int64 ids; `search` returns (scores, ids), nq x min(k, len), best first."""

    kind: ClassVar[str]
    #: the metrics this kind serves; None: every registered metric (exact search)
    metrics: ClassVar[tuple[Metric, ...] | None] = None

    def __init__(self, dim: int, metric: Metric | str = Metric.COSINE) -> None:
        if not isinstance(dim, int) or dim < 1:
            raise ValueError(f"dim must be a positive integer, got {dim!r}")
        self.dim, self.metric = dim, Metric(metric)
        if self.metrics is not None and self.metric not in self.metrics:
            names = ", ".join(m.value for m in self.metrics)
            raise ValueError(
                f"index kind {self.kind!r} supports metrics {names}, not {self.metric.value!r}; "
                "the 'flat' index supports every metric"
            )
        self.ids_ = np.empty(0, np.int64)

    def __len__(self) -> int:
        return len(self.ids_)

    def _matrix(self, x: np.ndarray, name: str) -> np.ndarray:
        x = np.ascontiguousarray(x, np.float32)
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise ValueError(f"{name} must have shape (n, {self.dim}), got {x.shape}")
        return x

    def add(self, vectors: np.ndarray, ids: np.ndarray | None = None) -> None:
        """Append vectors; ids default to their positions (0, 1, ... across all adds)."""
        x = self._matrix(vectors, "vectors")
        if ids is None:
            ids = np.arange(len(self), len(self) + len(x), dtype=np.int64)
        ids = np.asarray(ids, np.int64)
        if ids.shape != (len(x),):
            raise ValueError(f"ids must have shape ({len(x)},), got {ids.shape}")
        self._add(x)
        self.ids_ = np.concatenate([self.ids_, ids])

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(scores float32, ids int64); ids are -1 (score -inf) where an approximate index found
        fewer than k neighbours."""
        q = self._matrix(queries, "queries")
        if not isinstance(k, int | np.integer) or k < 1:
            raise ValueError(f"k must be a positive integer, got {k!r}")
        if len(self) == 0:
            raise ValueError("search on an empty index: add vectors first")
        scores, pos = self._search(q, min(int(k), len(self)))
        return scores, np.where(pos >= 0, self.ids_[np.maximum(pos, 0)], -1)

    def get_params(self) -> dict[str, Any]:
        return {}

    def save(self, path: str | Path) -> None:
        """Write the index into directory `path` (created if missing); the header goes last,
        so an interrupted save never reads back as a whole index."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        files = [*self._save(path), save_npy(path / "ids.npy", self.ids_)]
        header = {
            "format": FORMAT_VERSION,
            "kind": self.kind,
            "metric": self.metric.value,
            "dim": self.dim,
            "params": self.get_params(),
            "count": len(self),
        }
        write_manifest(path / HEADER, header, files)

    @classmethod
    def _restore(cls, path: Path, header: dict[str, Any]) -> Self:
        index = cls(header["dim"], header["metric"], **header["params"])
        index._load(path)
        index.ids_ = load_npy(path / "ids.npy")
        count = header["count"]
        if index.ids_.dtype != np.int64 or index.ids_.shape != (count,):
            why = f"{index.ids_.dtype} ids of shape {index.ids_.shape}, header says {count} int64"
            raise IntegrityError(path / "ids.npy", why)
        if index._stored() != count:
            raise IntegrityError(path, f"{index._stored()} vectors stored, header says {count}")
        return index

    @abstractmethod
    def _stored(self) -> int:
        """How many vectors the payload holds."""

    @abstractmethod
    def _add(self, x: np.ndarray) -> None: ...

    @abstractmethod
    def _search(self, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]: ...

    @abstractmethod
    def _save(self, path: Path) -> list[Path]:
        """Write the payload; returns the files written."""

    @abstractmethod
    def _load(self, path: Path) -> None: ...


class FlatIndex(Index):
    """Exact search with `xmodal.similarity.topk`: every metric, memory bounded by block_size."""

    kind = "flat"

    def __init__(
        self, dim: int, metric: Metric | str = Metric.COSINE, block_size: int = DEFAULT_BLOCK
    ):
        super().__init__(dim, metric)
        self.block_size = block_size
        self.vectors_ = np.empty((0, dim), np.float32)

    def get_params(self) -> dict[str, Any]:
        return {"block_size": self.block_size}

    def _add(self, x: np.ndarray) -> None:
        self.vectors_ = np.concatenate([self.vectors_, x])

    def _search(self, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        return topk(q, self.vectors_, k, self.metric, block_size=self.block_size)

    def _stored(self) -> int:
        return len(self.vectors_)

    def _save(self, path: Path) -> list[Path]:
        return [save_npy(path / "vectors.npy", self.vectors_)]

    def _load(self, path: Path) -> None:
        vectors = load_npy(path / "vectors.npy")
        if vectors.dtype != np.float32 or vectors.ndim != 2 or vectors.shape[1] != self.dim:
            why = f"{vectors.dtype} vectors of shape {vectors.shape}, expected (n, {self.dim})"
            raise IntegrityError(path / "vectors.npy", why)
        require_finite(path / "vectors.npy", {"vectors": vectors})
        self.vectors_ = vectors


class FaissIndex(Index):
    """A FAISS index on unit vectors (cosine = inner product) or raw vectors (squared L2)."""

    metrics = (Metric.COSINE, Metric.EUCLIDEAN)

    def __init__(self, dim: int, metric: Metric | str = Metric.COSINE) -> None:
        super().__init__(dim, metric)
        self.index_ = self._make()

    def _faiss_metric(self) -> int:
        import faiss

        return faiss.METRIC_INNER_PRODUCT if self.metric is Metric.COSINE else faiss.METRIC_L2

    def _prepare(self, x: np.ndarray) -> np.ndarray:
        return l2_normalize(x) if self.metric is Metric.COSINE else x

    @abstractmethod
    def _make(self) -> Any: ...

    @abstractmethod
    def _configure_search(self) -> None: ...

    def _add(self, x: np.ndarray) -> None:
        self.index_.add(self._prepare(x))

    def _search(self, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        self._configure_search()
        raw, pos = self.index_.search(self._prepare(q), k)
        found = pos >= 0
        if self.metric is Metric.EUCLIDEAN:
            raw = -np.sqrt(np.maximum(raw, 0))
        return np.where(found, raw, -np.inf).astype(np.float32), pos.astype(np.int64)

    def _stored(self) -> int:
        return int(self.index_.ntotal)

    def _save(self, path: Path) -> list[Path]:
        import faiss

        lists = self._lists_on_disk()
        if lists is not None and lists.parent.resolve() != path.resolve():
            raise ValueError(f"the index's lists are on disk in {lists}: save it into its folder")
        with atomic_path(path / "index.faiss") as tmp:
            faiss.write_index(self.index_, str(tmp))
        return [path / "index.faiss", *([lists] if lists else [])]

    def _lists_on_disk(self) -> Path | None:
        """The file of inverted lists kept on disk (faiss.OnDiskInvertedLists), if any."""
        import faiss

        try:
            ivf = faiss.extract_index_ivf(self.index_)
        except RuntimeError:  # not an IVF index
            return None
        lists = ivf.invlists and faiss.downcast_InvertedLists(ivf.invlists)
        return Path(lists.filename) if isinstance(lists, faiss.OnDiskInvertedLists) else None

    def _load(self, path: Path) -> None:
        import faiss

        try:  # on-disk inverted lists (sharded_index) are found beside the index file
            index = faiss.read_index(str(path / "index.faiss"), faiss.IO_FLAG_ONDISK_SAME_DIR)
        except RuntimeError as e:  # FAISS reports a bad file as a C++ exception
            raise IntegrityError(path / "index.faiss", f"unreadable ({e})") from None
        if index.d != self.dim or index.metric_type != self._faiss_metric():
            raise IntegrityError(path / "index.faiss", "dimension or metric differ from header")
        self.index_ = index


class HNSWIndex(FaissIndex):
    """Graph search (faiss.IndexHNSWFlat): no training; ef_search trades speed for recall."""

    kind = "hnsw"

    def __init__(
        self,
        dim: int,
        metric: Metric | str = Metric.COSINE,
        M: int = 32,  # noqa: N803 - the name every HNSW paper and library uses
        ef_construction: int = 80,
        ef_search: int = 64,
    ) -> None:
        self.M, self.ef_construction, self.ef_search = M, ef_construction, ef_search
        super().__init__(dim, metric)

    def get_params(self) -> dict[str, Any]:
        return {"M": self.M, "ef_construction": self.ef_construction, "ef_search": self.ef_search}

    def _make(self) -> Any:
        import faiss

        index = faiss.IndexHNSWFlat(self.dim, self.M, self._faiss_metric())
        index.hnsw.efConstruction = self.ef_construction
        return index

    def _configure_search(self) -> None:
        self.index_.hnsw.efSearch = self.ef_search


class IVFIndex(FaissIndex):
    """Inverted lists over k-means cells (IVF-flat, or IVF-PQ when pq_m > 0); trained on the first
    add, which must hold at least nlist vectors (FAISS advises ~40 per cell).

    refine > 0 keeps the exact vectors too (faiss.IndexRefineFlat) and re-ranks the
    refine * k best approximate candidates by their exact scores: PQ's recall at the memory
    cost of a flat copy.
    """

    kind = "ivf"

    def __init__(
        self,
        dim: int,
        metric: Metric | str = Metric.COSINE,
        nlist: int = 1024,
        nprobe: int = 16,
        pq_m: int = 0,
        pq_bits: int = 8,
        refine: int = 0,
    ) -> None:
        if pq_m and dim % pq_m:
            raise ValueError(f"pq_m={pq_m} must divide dim={dim}")
        if not isinstance(refine, int) or refine < 0:
            raise ValueError(f"refine must be a non-negative integer, got {refine!r}")
        self.nlist, self.nprobe, self.pq_m, self.pq_bits = nlist, nprobe, pq_m, pq_bits
        self.refine = refine
        super().__init__(dim, metric)

    def get_params(self) -> dict[str, Any]:
        return {
            "nlist": self.nlist,
            "nprobe": self.nprobe,
            "pq_m": self.pq_m,
            "pq_bits": self.pq_bits,
            "refine": self.refine,
        }

    def _make(self) -> Any:
        import faiss

        metric = self._faiss_metric()
        quantizer = faiss.IndexFlat(self.dim, metric)
        ivf: Any
        if self.pq_m:
            ivf = faiss.IndexIVFPQ(quantizer, self.dim, self.nlist, self.pq_m, self.pq_bits, metric)
        else:
            ivf = faiss.IndexIVFFlat(quantizer, self.dim, self.nlist, metric)
        if not self.refine:
            return ivf
        index = faiss.IndexRefineFlat(ivf)
        index.own_fields = True  # the wrapper keeps the IVF index alive
        ivf.this.disown()
        return index

    def _add(self, x: np.ndarray) -> None:
        if not self.index_.is_trained:
            if len(x) < self.nlist:
                raise ValueError(
                    f"ivf index trains on its first add: needs at least nlist={self.nlist} "
                    f"vectors, got {len(x)} (lower nlist or add more at once)"
                )
            self.index_.train(self._prepare(x))
        super()._add(x)

    def _configure_search(self) -> None:
        import faiss

        faiss.extract_index_ivf(self.index_).nprobe = self.nprobe
        if self.refine:
            self.index_.k_factor = self.refine

    def _load(self, path: Path) -> None:
        import faiss

        super()._load(path)
        if isinstance(self.index_, faiss.IndexRefine) != bool(self.refine):
            raise IntegrityError(path / "index.faiss", "refinement differs from header")


INDEX_KINDS: dict[str, type[Index]] = {c.kind: c for c in (FlatIndex, HNSWIndex, IVFIndex)}


def build_index(kind: str, dim: int, metric: Metric | str = Metric.COSINE, **params: Any) -> Index:
    """An empty index by name, e.g. build_index("hnsw", 384, "cosine", M=32, ef_search=128)."""
    if kind not in INDEX_KINDS:
        raise ValueError(f"unknown index kind {kind!r}; choose one of {', '.join(INDEX_KINDS)}")
    cls = INDEX_KINDS[kind]
    allowed = [p for p in inspect.signature(cls).parameters if p not in ("dim", "metric")]
    unknown = sorted(set(params) - set(allowed))
    if unknown:
        raise ValueError(
            f"index kind {kind!r} has no parameter {', '.join(unknown)}; "
            f"it takes {', '.join(allowed) or 'none'}"
        )
    return cls(dim, metric, **params)


def load_index(path: str | Path) -> Index:
    """Read an index saved by Index.save; IntegrityError naming the file if any is damaged or
    missing (large files: by size and sampled blocks, see QUICK_CHECK_BYTES)."""
    path = Path(path)
    if not (path / HEADER).is_file():
        raise FileNotFoundError(f"{path / HEADER} not found: not a saved xmodal index")
    header = read_manifest(path / HEADER)
    if header.get("format") != FORMAT_VERSION or header.get("kind") not in INDEX_KINDS:
        raise ValueError(
            f"{path / HEADER}: unsupported format {header.get('format')!r} "
            f"or kind {header.get('kind')!r} (rebuild the index with this version)"
        )
    return INDEX_KINDS[header["kind"]]._restore(path, header)


def save_npy(path: Path, array: np.ndarray) -> Path:
    """np.save, atomically (through an open file: np.save would add .npy to a temporary name)."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.save(f, array, allow_pickle=False)
    return path


def load_npy(path: Path) -> np.ndarray:
    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as e:
        raise IntegrityError(path, f"unreadable ({e})") from None


def write_manifest(path: Path, header: dict[str, Any], files: list[Path]) -> None:
    """A JSON header that lists the `files` beside it (SHA-256 and size of each, and for large
    ones a digest of sampled blocks), plus its own checksum file: together they vouch for
    every file of a saved folder."""
    header = {**header, "sha256": {}, "bytes": {}, "sampled_sha256": {}}
    for f in files:
        header["sha256"][f.name] = sha256_file(f)
        header["bytes"][f.name] = f.stat().st_size
        if header["bytes"][f.name] > QUICK_CHECK_BYTES:
            header["sampled_sha256"][f.name] = sampled_sha256(f)
    atomic_write_text(path, json.dumps(header, indent=2) + "\n")
    write_checksum(path)


def read_manifest(path: Path, full: bool = False) -> dict[str, Any]:
    """The header written by write_manifest, once it and every file it lists verify: in full,
    or (unless `full`) by size and sampled blocks for the files it sampled."""
    verify_checksum(path)
    header = json.loads(path.read_text(encoding="utf-8"))
    sampled = {} if full else header.get("sampled_sha256", {})
    for name, digest in header.get("sha256", {}).items():
        file = path.parent / name
        if not file.is_file():
            raise IntegrityError(file, f"missing (listed in {path})")
        if name not in sampled:
            verify_checksum(file, digest)
        elif file.stat().st_size != header["bytes"][name]:
            why = f"{file.stat().st_size} bytes, {path.name} says {header['bytes'][name]}"
            raise IntegrityError(file, f"truncated or changed ({why})")
        elif sampled_sha256(file) != sampled[name]:
            raise IntegrityError(file, "checksum mismatch in sampled blocks: corrupt or changed")
    return header
