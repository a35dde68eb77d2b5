"""What the service searches: collections loaded once, from run folders or saved indexes.

A run folder serves its saved test split (`embeddings/*.npz`: the images and captions the run
evaluated on, which its aligners never saw while fitting) through the aligner validation
selects, or the one named; nothing is re-embedded, so it loads in seconds from any directory.
To serve a whole dataset, build an index with `xmodal index build` and serve that folder.
"""

from __future__ import annotations

import io
import threading
from collections import Counter, OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image as PILImage

from xmodal.align.base import Aligner, load_aligner
from xmodal.align.registry import aligner_traits
from xmodal.data.images import load_rgb
from xmodal.experiments.run_folder import RunFolder
from xmodal.retrieval.collection import Collection
from xmodal.retrieval.index import FaissIndex, FlatIndex, Index, IVFIndex, build_index

#: galleries up to this size are searched exactly (xmodal.similarity.topk) over their vectors
EXACT_LIMIT = 100_000
THUMB_SIZE = 256
THUMB_CACHE = 2048


@dataclass
class ServedCollection:
    """One searchable collection: aligned vectors of its images and captions, and their items.

    Index ids are rows: `images` holds image rows, `captions` caption rows.
    """

    name: str
    source: Path
    image_encoder: str
    text_encoder: str
    aligner: Aligner
    aligner_name: str
    images: Index
    captions: Index
    image_ids: list[str]
    image_paths: list[str]
    caption_texts: list[str]
    caption_image: np.ndarray
    row_of: dict[str, int] = field(init=False)
    captions_of: list[list[int]] = field(init=False)

    def __post_init__(self) -> None:
        self.row_of = {image_id: row for row, image_id in enumerate(self.image_ids)}
        self.captions_of = [[] for _ in self.image_ids]
        for caption, row in enumerate(self.caption_image):
            self.captions_of[int(row)].append(caption)
        self._thumbs: OrderedDict[int, bytes] = OrderedDict()
        self._lock = threading.Lock()

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "images": len(self.image_ids),
            "captions": len(self.caption_texts),
            "image_encoder": self.image_encoder,
            "text_encoder": self.text_encoder,
            "aligner": self.aligner_name,
            "metric": str(self.aligner.metric),
            "search": {"images": _how(self.images), "captions": _how(self.captions)},
        }

    def image_vector(self, row: int) -> np.ndarray:
        """The aligned vector of an image row, as its index stores it (1 x dim)."""
        index = self.images
        if isinstance(index, FlatIndex):
            return index.vectors_[row : row + 1]
        assert isinstance(index, FaissIndex)
        return index.index_.reconstruct(row)[None, :]

    def thumbnail(self, row: int) -> bytes:
        """A JPEG of an image row at most THUMB_SIZE on a side, made from the collection's own
        file (decoded safely) and kept in a bounded cache."""
        with self._lock:
            if row in self._thumbs:
                self._thumbs.move_to_end(row)
                return self._thumbs[row]
        image = load_rgb(self.image_paths[row])
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
    """Each path (a run folder or a collection built by `xmodal index build`), by a unique name."""
    out: dict[str, ServedCollection] = {}
    for path in paths:
        folder = Path(path).resolve()
        if (folder / "collection.json").is_file():
            served = load_index_collection(folder)
        elif RunFolder(folder).results_json.is_file():
            served = load_run(folder, aligner)
        else:
            raise ValueError(
                f"{path}: neither a run folder (results of `xmodal run`) nor a collection "
                "(collection.json)"
            )
        name, n = served.name, 1
        while name in out:
            n += 1
            name = f"{served.name}-{n}"
        served.name = name
        out[name] = served
    return out


def load_index_collection(folder: Path) -> ServedCollection:
    """A collection saved by `xmodal index build`; small ANN indexes are searched exactly."""
    c = Collection(folder)
    items = c.items
    paths = [_absolute(p, folder) for p in items["image_paths"]]
    return ServedCollection(
        folder.name,
        folder,
        c.meta["image_encoder"],
        c.meta["text_encoder"],
        c.aligner,
        c.aligner.kind,
        _searchable(c.image_index),
        _searchable(c.caption_index),
        [str(i) for i in items["image_ids"]],
        paths,
        [str(t) for t in items["captions"]],
        items["caption_image"].astype(np.int64),
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
        _unique_ids(split.image_paths),
        [str(Path(p).resolve()) for p in split.image_paths],
        split.captions,
        split.data.caption_image,
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
