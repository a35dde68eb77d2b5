"""What the service searches: collections loaded once, from run folders or saved indexes.

A run folder serves its saved test split (`embeddings/*.npz`: the images and captions the run
evaluated on, which its aligners never saw while fitting) through the aligner validation
selects, or the one named; nothing is re-embedded, so it loads in seconds from any directory.
To serve a whole dataset, build an index with `xmodal index build` and serve that folder: one
built from a config holds its items; one built from an embedding folder (`xmodal embed`) names
its hits from that folder's shards, read as hits fall in them.
"""

from __future__ import annotations

import io
import threading
from collections import Counter, OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image as PILImage

from xmodal.align.base import Aligner, load_aligner
from xmodal.align.registry import aligner_traits
from xmodal.data.images import load_rgb
from xmodal.experiments.run_folder import RunFolder
from xmodal.retrieval.collection import META, Collection, open_collection
from xmodal.retrieval.index import FaissIndex, FlatIndex, Index, IVFIndex, build_index
from xmodal.retrieval.sharded_index import ShardedCollection
from xmodal.serve.items import Items, ListedItems, ShardedItems
from xmodal.shards.format import MANIFEST

#: galleries up to this size are searched exactly (xmodal.similarity.topk) over their vectors
EXACT_LIMIT = 100_000
THUMB_SIZE = 256
THUMB_CACHE = 2048


@dataclass
class ServedCollection:
    """One searchable collection: aligned vectors of its images and captions, and their items.

    Index ids are rows: `images` holds image rows, `captions` caption rows; `items` names them.
    """

    name: str
    source: Path
    image_encoder: str
    text_encoder: str
    aligner: Aligner
    aligner_name: str
    images: Index
    captions: Index
    items: Items

    def __post_init__(self) -> None:
        self._thumbs: OrderedDict[int, bytes] = OrderedDict()
        self._lock = threading.Lock()

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "images": self.items.n_images,
            "captions": self.items.n_captions,
            "image_encoder": self.image_encoder,
            "text_encoder": self.text_encoder,
            "aligner": self.aligner_name,
            "metric": str(self.aligner.metric),
            "search": {"images": _how(self.images), "captions": _how(self.captions)},
        }

    def image_vector(self, row: int) -> np.ndarray:
        """The aligned vector of an image row (1 x dim): as a flat index stores it; else the
        encoder's vector, where the items keep one (an embedding folder), aligned now: exact,
        where IVF-PQ would decode an approximation and lists on disk would need a map of every
        id; else as FAISS reconstructs it (HNSW, IVF: exact; IVF-PQ: approximate)."""
        index = self.images
        if isinstance(index, FlatIndex):
            return index.vectors_[row : row + 1]
        raw = self.items.image_embedding(row)
        if raw is not None:
            return self.aligner.transform_images(raw)
        assert isinstance(index, FaissIndex)
        return index.index_.reconstruct(row)[None, :]

    def thumbnail(self, row: int) -> bytes:
        """A JPEG of an image row at most THUMB_SIZE on a side, made from the collection's own
        file (decoded safely) and kept in a bounded cache."""
        with self._lock:
            if row in self._thumbs:
                self._thumbs.move_to_end(row)
                return self._thumbs[row]
        image = load_rgb(self.items.images([row])[0].path)
        image.thumbnail((THUMB_SIZE, THUMB_SIZE))
        buf = io.BytesIO()
        image.save(buf, "JPEG", quality=85)
        data = buf.getvalue()
        with self._lock:
            self._thumbs[row] = data
            while len(self._thumbs) > THUMB_CACHE:
                self._thumbs.popitem(last=False)
        return data


def _how(index: Index) -> str:
    return "exact" if isinstance(index, FlatIndex) else index.kind


def load_collections(
    paths: list[str | Path], aligner: str | None = None
) -> dict[str, ServedCollection]:
    """Each path (a run folder, or an index built by `xmodal index build` from a config or from
    an embedding folder, in any mix), by a unique name."""
    out: dict[str, ServedCollection] = {}
    for path in paths:
        served = _load(Path(path).resolve(), aligner)
        name, n = served.name, 1
        while name in out:
            n += 1
            name = f"{served.name}-{n}"
        served.name = name
        out[name] = served
    return out


def _load(folder: Path, aligner: str | None) -> ServedCollection:
    if (folder / META).is_file():
        return load_index_collection(folder)
    if RunFolder(folder).results_json.is_file():
        return load_run(folder, aligner)
    if (folder / MANIFEST).is_file():
        raise ValueError(
            f"{folder}: an embedding folder (`xmodal embed`); index it, then serve the index: "
            f"`xmodal index build {folder} --aligner A.safetensors --out INDEX`"
        )
    if not folder.exists():
        raise FileNotFoundError(f"{folder}: no such folder")
    raise ValueError(
        f"{folder}: neither a run folder (results of `xmodal run`) nor an index ({META}, "
        "from `xmodal index build`)"
    )


def load_index_collection(folder: Path) -> ServedCollection:
    """An index saved by `xmodal index build`: from a config (its items in items.npz; small ANN
    indexes are searched exactly), or from an embedding folder (see `load_sharded`)."""
    c = open_collection(folder)
    if isinstance(c, ShardedCollection):
        return load_sharded(c)
    assert isinstance(c, Collection)
    items = c.items
    return ServedCollection(
        folder.name,
        folder,
        c.meta["image_encoder"],
        c.meta["text_encoder"],
        c.aligner,
        c.aligner.kind,
        _searchable(c.image_index),
        _searchable(c.caption_index),
        ListedItems(
            [str(i) for i in items["image_ids"]],
            [_absolute(p, folder) for p in items["image_paths"]],
            [str(t) for t in items["captions"]],
            items["caption_image"].astype(np.int64),
        ),
    )


def load_sharded(c: ShardedCollection) -> ServedCollection:
    """An index of an embedding folder: both sides open now (a damaged file stops the start,
    naming it) and are searched as built (flat: exactly; IVF-PQ: approximately, as its report
    measured); its items are read from the embedding folder's shards as hits fall in them."""
    return ServedCollection(
        c.folder.name,
        c.folder,
        c.meta["image_encoder"],
        c.meta["text_encoder"],
        c.aligner,
        c.aligner.kind,
        c.image_index,
        c.caption_index,
        ShardedItems(c.shards),
    )


def _absolute(path: str, folder: Path) -> str:
    """Paths saved relative to where `index build` ran: resolved now, against the collection
    folder's parent when the working directory does not hold them."""
    p = Path(str(path))
    if p.is_absolute() or p.exists():
        return str(p.resolve())
    return str((folder.parent / p).resolve())


def _searchable(index: Index) -> Index:
    """Exact search over a small index's stored vectors (as fast as a graph at this size, and
    exact); large or compressed (PQ) indexes are searched as built. Ids must be rows."""
    if not isinstance(index, FaissIndex):
        return index
    if hasattr(index.index_, "make_direct_map"):
        index.index_.make_direct_map()  # IVF: so rows can be reconstructed
    if len(index) > EXACT_LIMIT or (isinstance(index, IVFIndex) and index.pq_m):
        return index
    flat = FlatIndex(index.dim, index.metric)
    flat.add(index.index_.reconstruct_n(0, len(index)), index.ids_)
    return flat


def load_run(folder: Path, aligner: str | None = None) -> ServedCollection:
    """A run folder's saved test split, aligned by the chosen (or named) aligner."""
    from xmodal.experiments import load_config
    from xmodal.report.figures import load_split
    from xmodal.report.gap import load_results
    from xmodal.report.html import chosen_row

    results = load_results(folder)
    config = load_config(RunFolder(folder).config)
    row = _named_row(results["runs"], aligner, folder, config.primary) if aligner else None
    if row is None:
        indexable = [r for r in results["summary"] if not _learned(r.get("kind", ""))]
        if not indexable:
            raise ValueError(
                f"{folder}: every aligner of this run scores pairs with a learned network, "
                "which no vector index serves"
            )
        picked = chosen_row(indexable, config.primary)
        if picked is None:
            raise ValueError(f"{folder}: every fit of this run failed; there is nothing to serve")
        chosen, _ = picked
        row = next(r for r in results["runs"] if all(r[k] == chosen[k] for k in _GROUP))
    enc = next(e for e in config.encoders if e.label == row["encoder"])
    image_spec, text_spec = enc.model or enc.image, enc.model or enc.text
    assert image_spec and text_spec  # the config checks that a pair is complete
    model = load_aligner(folder / row["model"])
    if model.learned_scorer:
        raise ValueError(f"{folder / row['model']}: {_LEARNED_HINT}")
    split = load_split(folder, row["dataset"], row["encoder"])
    images = model.transform_images(split.data.images)
    texts = model.transform_texts(split.data.texts)
    return ServedCollection(
        folder.name,
        folder,
        image_spec,
        text_spec,
        model,
        f"{row['aligner']} ({row['metric']}, seed {row['seed']})",
        _exact(images, model),
        _exact(texts, model),
        ListedItems(
            _unique_ids(split.image_paths),
            [str(Path(p).resolve()) for p in split.image_paths],
            split.captions,
            split.data.caption_image,
        ),
    )


_GROUP = ("dataset", "encoder", "aligner", "metric")
_LEARNED_HINT = (
    "its aligner scores pairs with a learned network, which no vector index serves; "
    "name one compared by a metric with --aligner"
)


def _learned(kind: str) -> bool:
    return aligner_traits(kind)["learned_scorer"]


def _named_row(rows: list[dict[str, Any]], name: str, folder: Path, primary: str) -> dict[str, Any]:
    """The row of a model file (`models/X.safetensors` or `X`), or the best validation row (by
    the run's primary score) of an aligner label."""
    for row in rows:
        if name in (row["model"], Path(row["model"]).stem):
            return row
    matching = [r for r in rows if r["aligner"] == name and not _learned(r.get("kind", ""))]
    if not matching:
        labels = sorted({r["aligner"] for r in rows})
        raise ValueError(f"{folder}: no aligner or model named {name!r}; have {labels}")
    return max(matching, key=lambda r: (r.get(f"val_{primary}", float("-inf")), -r["seed"]))


def _exact(vectors: np.ndarray, aligner: Aligner) -> Index:
    kind = "flat" if len(vectors) <= EXACT_LIMIT else "hnsw"
    index = build_index(kind, vectors.shape[1], aligner.metric)
    index.add(vectors)
    return index


def _unique_ids(paths: list[str]) -> list[str]:
    """Ids from image paths: the shortest tail of the path without suffix that no other image
    shares ("owl", "cartoon/orange"); the same file twice gets `#2`, `#3`, ..."""
    parts = [Path(p).with_suffix("").parts for p in paths]
    depth = [1] * len(parts)
    while True:
        keys = ["/".join(p[-d:]) for p, d in zip(parts, depth, strict=True)]
        owners: dict[str, set[tuple[str, ...]]] = {}
        for key, p in zip(keys, parts, strict=True):
            owners.setdefault(key, set()).add(p)
        clash = [i for i, key in enumerate(keys) if len(owners[key]) > 1]
        if not clash:
            break
        for i in clash:
            depth[i] += 1
    seen: Counter[str] = Counter()
    ids = []
    for key in keys:
        seen[key] += 1
        ids.append(key if seen[key] == 1 else f"{key}#{seen[key]}")
    return ids


class Encoders:
    """Each encoder spec loaded once, shared by every collection that uses it."""

    def __init__(self, device: str | None = None) -> None:
        self.device = device
        self._image: dict[str, Any] = {}
        self._text: dict[str, Any] = {}

    def load(self, collections: dict[str, ServedCollection]) -> None:
        from xmodal.encoders.registry import build_image_encoder, build_text_encoder

        for c in collections.values():  # weights load now: the first query waits for none
            if c.image_encoder not in self._image:
                image = build_image_encoder(c.image_encoder, self.device)
                self._image[c.image_encoder] = image.ready()
            if c.text_encoder not in self._text:
                self._text[c.text_encoder] = build_text_encoder(c.text_encoder, self.device).ready()

    def image(self, spec: str):
        return self._image[spec]

    def text(self, spec: str):
        return self._text[spec]


def decode_upload(data: bytes, max_pixels: int) -> PILImage.Image:
    """An uploaded image decoded as safely as a dataset file (size checked before decoding)."""
    import tempfile

    from xmodal.data.images import ImageError

    with tempfile.NamedTemporaryFile(suffix=".upload") as f:
        f.write(data)
        f.flush()
        try:
            return load_rgb(f.name, max_pixels)
        except ImageError as e:
            raise ImageError(str(e).replace(f.name, "upload")) from None
