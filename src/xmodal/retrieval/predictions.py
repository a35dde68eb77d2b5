"""What a fit retrieved for every test query, as one Parquet table: the researcher's view of the
ranks that evaluation reduces to Recall@K.

One row per query, both directions (`direction` "t2i": a caption query ranking the images;
"i2t": an image query ranking the captions):

    direction            "t2i" or "i2t"
    query_row            the query's row in the test split (caption row or image row)
    query_id             its id as the dataset names it (caption id or image id)
    first_positive_rank  1-based rank of its first correct gallery item: the rank evaluation
                         reports (ties count against the query)
    positives            how many gallery items are correct (1 for a caption; an image's captions)
    positive_ids         their ids
    top_rows, top_ids    the k best gallery items, best first (rows of the test split, and ids)
    top_scores           their scores (higher = closer), float64

The top-k comes from the score blocks evaluation computes (`xmodal.similarity.ranking.TopHits`):
equal scores are ordered wrong items first, then by gallery row, so a query with
first_positive_rank <= k finds its first correct item at that position of its list. The
schema's metadata (`about`) records k, that rule, and where the test split lies (its image
paths and captions, by row). Files are written atomically with a `.sha256` checksum; read
them back with `read_predictions`, which verifies it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from xmodal.files import IntegrityError, atomic_path, verify_checksum, write_checksum
from xmodal.retrieval.evaluate import PerQuery
from xmodal.similarity.ranking import TopHits

#: the least k kept, whatever the run's ks
MIN_TOP_K = 10
TIES = "equal scores: wrong gallery items first, then by gallery row (ties count against the query)"
FORMAT = 1
METADATA_KEY = b"xmodal"

SCHEMA = pa.schema(
    [
        ("direction", pa.string()),
        ("query_row", pa.int64()),
        ("query_id", pa.string()),
        ("first_positive_rank", pa.int64()),
        ("positives", pa.int64()),
        ("positive_ids", pa.list_(pa.string())),
        ("top_rows", pa.list_(pa.int64())),
        ("top_ids", pa.list_(pa.string())),
        ("top_scores", pa.list_(pa.float64())),
    ]
)


def top_k(ks: Sequence[int]) -> int:
    """How many gallery items the predictions keep per query: the largest K, at least 10."""
    return max(MIN_TOP_K, *ks)


@dataclass(frozen=True)
class SplitIds:
    """The ids of a split's images and captions, by row (as `Embedded` orders them)."""

    images: Sequence[str]
    captions: Sequence[str]


def predictions_table(
    ranks: PerQuery, ids: SplitIds, about: Mapping[str, Any] | None = None
) -> pa.Table:
    """The predictions of one evaluation (`evaluate(..., return_ranks=True, top_k=k)`); `about`
    adds to the metadata (e.g. the model and the split file)."""
    if ranks.t2i_top is None or ranks.i2t_top is None:
        raise ValueError("the evaluation kept no top-k: call evaluate with top_k > 0")
    if (len(ids.captions), len(ids.images)) != (len(ranks.t2i), len(ranks.i2t)):
        raise ValueError(
            f"{len(ids.captions)} caption ids and {len(ids.images)} image ids for "
            f"{len(ranks.t2i)} caption and {len(ranks.i2t)} image queries"
        )
    image_ids = np.asarray(ids.images, dtype=object)
    caption_ids = np.asarray(ids.captions, dtype=object)
    owner = np.asarray(ranks.caption_image)
    own_captions = np.argsort(owner, kind="stable")
    per_image = np.bincount(owner, minlength=len(image_ids))
    t2i = _direction(
        "t2i", caption_ids, ranks.t2i, ranks.t2i_top, image_ids, image_ids[owner, None].tolist()
    )
    i2t = _direction(
        "i2t",
        image_ids,
        ranks.i2t,
        ranks.i2t_top,
        caption_ids,
        [p.tolist() for p in np.split(caption_ids[own_captions], np.cumsum(per_image)[:-1])],
    )
    k = max(ranks.t2i_top.rows.shape[1], ranks.i2t_top.rows.shape[1])
    meta = {"format": FORMAT, "k": k, "ties": TIES, **(about or {})}
    table = pa.concat_tables([t2i, i2t])
    return table.replace_schema_metadata({METADATA_KEY: json.dumps(meta)})


def _direction(
    name: str,
    query_ids: np.ndarray,
    ranks: np.ndarray,
    top: TopHits,
    gallery_ids: np.ndarray,
    positives: Sequence[Sequence[str]],
) -> pa.Table:
    n, k = top.rows.shape
    offsets = pa.array(np.arange(n + 1) * k, pa.int32())

    def lists(values: np.ndarray | list[Any], kind: pa.DataType) -> pa.ListArray:
        return pa.ListArray.from_arrays(offsets, pa.array(values, kind))

    columns = [
        pa.array([name] * n, pa.string()),
        pa.array(np.arange(n), pa.int64()),
        pa.array(query_ids.tolist(), pa.string()),
        pa.array(ranks, pa.int64()),
        pa.array([len(p) for p in positives], pa.int64()),
        pa.array(positives, pa.list_(pa.string())),
        lists(top.rows.ravel(), pa.int64()),
        lists(gallery_ids[top.rows.ravel()].tolist(), pa.string()),
        lists(top.scores.ravel(), pa.float64()),
    ]
    return pa.Table.from_arrays(columns, schema=SCHEMA)


def write_predictions(path: str | Path, table: pa.Table) -> None:
    """Write atomically (a reader sees the old file or the new one) with a `.sha256` beside."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)
    write_checksum(path)


def read_predictions(path: str | Path) -> pa.Table:
    """A predictions file, its checksum verified and its columns checked; IntegrityError naming
    the file when it is corrupt, changed, lacks its checksum or is not a predictions table."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such predictions file")
    verify_checksum(path)
    try:
        table = pq.read_table(path)
    except (pa.ArrowException, OSError) as e:
        raise IntegrityError(path, f"not a readable Parquet file ({e})") from None
    for field in SCHEMA:
        if field.name not in table.schema.names:
            raise IntegrityError(path, f"not a predictions table: no column {field.name!r}")
        if not table.schema.field(field.name).type.equals(field.type):
            got = table.schema.field(field.name).type
            raise IntegrityError(path, f"column {field.name!r} is {got}, not {field.type}")
    return table


def about(table: pa.Table) -> dict[str, Any]:
    """The metadata written with a predictions table: k, the tie rule, and what `about` added."""
    raw = (table.schema.metadata or {}).get(METADATA_KEY)
    return json.loads(raw) if raw else {}
