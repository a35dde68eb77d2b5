"""The report's worst queries: the test queries whose first correct answer ranks lowest under
the chosen fit, read from its predictions file, with small inline thumbnails.

Caption queries show the caption, its own image and the top retrieved images; image queries
show the image, its own captions and the top retrieved captions (each with its image). Ties
in rank are broken by query row, and the page says how many queries share the last rank shown.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Sequence
from html import escape

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from xmodal.data.images import ImageError, load_rgb
from xmodal.report.figures import TestSplit

WORST = 8  # queries shown per direction
SHOWN = 3  # retrieved items shown per query
THUMB = 72  # px, longest side
JPEG_QUALITY = 80

STYLE = f"""
.worst td{{vertical-align:middle}}.worst .thumb{{display:block;width:{THUMB}px;height:{THUMB}px;
 object-fit:contain;background:#fff;border:1px solid var(--line);border-radius:4px}}
.worst .hit .thumb{{border:3px solid var(--good)}}.worst .hit{{color:var(--good);font-weight:600}}
.worst .score{{color:var(--muted);font-size:12px}}.worst .cap{{max-width:260px}}
.worst .missing{{display:inline-block;width:{THUMB}px;color:var(--muted);font-size:11px}}
"""


def worst_rows(table: pa.Table, direction: str, n: int = WORST) -> list[dict]:
    """Up to `n` queries of one direction with the largest first-positive rank (ties: lower
    query row first), as dicts of the predictions' columns; queries answered first (rank 1)
    are never listed."""
    rows = _direction(table, direction)
    ranks = rows["first_positive_rank"].to_numpy()
    order = np.lexsort((rows["query_row"].to_numpy(), -ranks))[:n]
    order = order[ranks[order] > 1]
    return rows.take(pa.array(order, pa.int64())).to_pylist()


def _direction(table: pa.Table, direction: str) -> pa.Table:
    return table.filter(pc.equal(table["direction"], direction))


class Thumbnails:
    """Small JPEG data URIs of the split's images, each made once."""

    def __init__(self, split: TestSplit):
        self.paths = split.image_paths
        self.made: dict[int, str | None] = {}
        self.missing: list[str] = []

    def html(self, row: int, alt: str) -> str:
        if row not in self.made:
            self.made[row] = self._encode(self.paths[row])
        uri = self.made[row]
        if uri is None:
            return '<span class="missing">image not found</span>'
        return f'<img src="{uri}" class="thumb" alt="{escape(alt)}">'

    def _encode(self, path: str) -> str | None:
        try:
            im = load_rgb(path)
        except ImageError:
            self.missing.append(path)
            return None
        im.thumbnail((THUMB, THUMB))
        out = io.BytesIO()
        im.save(out, "JPEG", quality=JPEG_QUALITY)
        return "data:image/jpeg;base64," + base64.b64encode(out.getvalue()).decode("ascii")


def section(table: pa.Table, split: TestSplit, label: str) -> tuple[str, list[str]]:
    """The worst-queries HTML of one fit's predictions on its test split, and notes of what
    could not be shown."""
    n_images, n_captions = len(split.image_paths), len(split.captions)
    counts = {d: len(_direction(table, d)) for d in ("t2i", "i2t")}
    if counts != {"t2i": n_captions, "i2t": n_images}:
        return "", [
            f"worst queries not shown: the predictions hold {counts['t2i']} caption and "
            f"{counts['i2t']} image queries, the saved test split {n_captions} and {n_images}"
        ]
    thumbs = Thumbnails(split)
    owner = split.data.caption_image
    html = (
        f"<p>For {escape(label)}: the test queries whose first correct "
        f"answer ranks lowest (rank 1 = best), with the top {SHOWN} answers and their scores. "
        "Equal scores count against the query, as in Recall@K; queries of equal rank are listed "
        "by row. Colours: a thick green frame or green text marks a correct answer.</p>"
        + _caption_queries(table, split, thumbs, owner)
        + _image_queries(table, split, thumbs, owner)
    )
    notes = []
    if thumbs.missing:
        notes.append(
            f"worst queries: {len(thumbs.missing)} image(s) not found, e.g. {thumbs.missing[0]}"
        )
    return html, notes


def _caption_queries(
    table: pa.Table, split: TestSplit, thumbs: Thumbnails, owner: np.ndarray
) -> str:
    rows = worst_rows(table, "t2i")
    body = []
    for q in rows:
        own = int(owner[q["query_row"]])
        cells = [
            str(q["first_positive_rank"]),
            f'<div class="cap">{escape(split.captions[q["query_row"]])}</div>',
            thumbs.html(own, q["positive_ids"][0]),
        ]
        for row, gid, score in _shown(q):
            hit = ' class="hit"' if row == own else ""
            cells.append(
                f"<div{hit}>{thumbs.html(row, gid)}<span class=score>{score:.3f}</span></div>"
            )
        body.append(cells)
    head = ["rank", "caption", "its image", *[f"#{i + 1}" for i in range(SHOWN)]]
    return _titled(table, "t2i", "Caption queries", rows, head, body)


def _image_queries(table: pa.Table, split: TestSplit, thumbs: Thumbnails, owner: np.ndarray) -> str:
    rows = worst_rows(table, "i2t")
    body = []
    for q in rows:
        image = q["query_row"]
        mine = np.flatnonzero(owner == image)
        own_text = "<br>".join(escape(split.captions[c]) for c in mine)
        cells = [
            str(q["first_positive_rank"]),
            thumbs.html(image, q["query_id"]),
            f'<div class="cap">{own_text}</div>',
        ]
        for row, _, score in _shown(q):
            hit = ' class="hit"' if owner[row] == image else ""
            cells.append(
                f"<div{hit}>{thumbs.html(int(owner[row]), split.captions[row])}<div class=cap>"
                f"{escape(split.captions[row])} <span class=score>{score:.3f}</span></div></div>"
            )
        body.append(cells)
    head = ["rank", "image", "its caption(s)", *[f"#{i + 1}" for i in range(SHOWN)]]
    return _titled(table, "i2t", "Image queries", rows, head, body)


def _shown(query: dict) -> list[tuple[int, str, float]]:
    picks = zip(query["top_rows"], query["top_ids"], query["top_scores"], strict=True)
    return list(picks)[:SHOWN]


def _titled(
    table: pa.Table,
    direction: str,
    title: str,
    rows: Sequence[dict],
    head: Sequence[str],
    body: Sequence[Sequence[str]],
) -> str:
    """A direction's table, under a heading that says how many queries share the last rank."""
    ranks = _direction(table, direction)["first_positive_rank"]
    if not rows:
        return f"<h3>{title}: all {len(ranks)} rank their correct answer first</h3>"
    last = rows[-1]["first_positive_rank"]
    total = len(ranks)
    sharing = int(np.sum(ranks.to_numpy() == last))
    listed = sum(r["first_positive_rank"] == last for r in rows)
    more = f"; {sharing - listed} more share rank {last}" if sharing > listed else ""
    cells = "".join(f"<th>{escape(h)}</th>" for h in head)
    lines = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>" for r in body)
    return (
        f"<h3>{title}: the {len(rows)} worst of {total}{more}</h3>"
        f'<div class="scroll"><table class="worst"><thead><tr>{cells}</tr></thead>'
        f"<tbody>{lines}</tbody></table></div>"
    )
