"""A manifest: CSV with a header row, or JSON lines, with `image` (a path), `caption` and optional
`image_id` and `caption_id`; several rows may share an image. Read row by row, so a manifest
larger than memory can be streamed into an on-disk `Listing` (what `xmodal embed` does)."""

from __future__ import annotations

import csv
import json
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from xmodal.data.dataset import Dataset, Problem, caption_text
from xmodal.data.listing import Listing

Rows = Iterator[tuple[int, Mapping[str, Any]]]  # (line number, row)


def load_manifest(path: str | Path, images: str | Path | None = None) -> Dataset:
    """Relative image paths are under `images` (default: the manifest's folder).

    A malformed row is skipped with a problem naming file:line; its neighbours are kept.
    Default ids: the image path as written, and `<manifest name>:<line>` for captions.
    """
    with stream_manifest(path, images) as listing:
        return listing.to_dataset()


def stream_manifest(
    path: str | Path, images: str | Path | None = None, listing: str | Path = ":memory:"
) -> Listing:
    """The manifest read row by row into a `Listing` kept in the SQLite file `listing`:
    `load_manifest`'s rows, problems and order, in memory that does not grow with the rows."""
    path = Path(path)
    reader = _READERS.get(path.suffix.lower())
    if reader is None:
        raise ValueError(f"{path}: a manifest must be .csv or .jsonl (JSON lines)")
    root = Path(images) if images is not None else path.parent
    out = Listing(path.stem, listing)
    try:
        for line, row in reader(path, out.problems):
            where = f"{path}:{line}"
            parsed = _parse(row, where, out.problems)
            if parsed is not None:
                image, text, image_id, caption_id = parsed
                caption_id = caption_id or f"{path.name}:{line}"
                out.add(caption_id, text, image_id or image, root / image, where)
        return out.finish()
    except BaseException:
        out.close()
        raise


def _parse(
    row: Mapping[str, Any], where: str, problems: list[Problem]
) -> tuple[str, str, str, str] | None:
    """(image, caption, image_id, caption_id) of a row, ids "" when not given; None if invalid."""
    if row.get(None):  # csv.DictReader files surplus fields under None
        problems.append(Problem(where, "more fields than the header (an unquoted comma?)"))
        return None
    missing = [k for k in ("image", "caption") if row.get(k) is None]
    if missing:
        problems.append(Problem(where, f"missing {', '.join(map(repr, missing))}"))
        return None
    if not isinstance(row["image"], str) or not row["image"].strip():
        problems.append(Problem(where, f"'image' is not a path ({row['image']!r})"))
        return None
    text = caption_text(row["caption"], where, problems)
    if text is None:
        return None
    ids = tuple(
        "" if row.get(k) is None else str(row[k]).strip() for k in ("image_id", "caption_id")
    )
    return row["image"].strip(), text, ids[0], ids[1]


def _csv_rows(path: Path, problems: list[Problem]) -> Rows:
    # surrogateescape keeps non-UTF-8 bytes visible to caption_text instead of failing the file
    with open(path, newline="", encoding="utf-8-sig", errors="surrogateescape") as f:
        reader = csv.DictReader(f)
        columns = reader.fieldnames or []
        if not {"image", "caption"} <= set(columns):
            raise ValueError(f"{path}: needs 'image' and 'caption' columns, found {columns}")
        while True:
            try:
                row = next(reader)
            except StopIteration:
                return
            except csv.Error as e:  # e.g. a field over the size limit; the reader moves on
                problems.append(Problem(f"{path}:{reader.line_num}", f"unreadable CSV row ({e})"))
                continue
            yield reader.line_num, row


def _jsonl_rows(path: Path, problems: list[Problem]) -> Rows:
    with open(path, "rb") as f:  # line by line: the file may be larger than memory
        for n, line in enumerate(f, 1):
            raw = line.rstrip(b"\r\n")
            if not raw.strip():
                continue
            where = f"{path}:{n}"
            try:
                row = json.loads(raw.decode("utf-8-sig" if n == 1 else "utf-8"))
            except UnicodeDecodeError as e:
                problems.append(Problem(where, f"not UTF-8 ({e.reason} at byte {e.start})"))
                continue
            except json.JSONDecodeError as e:
                problems.append(Problem(where, f"not valid JSON ({e.msg}, column {e.colno})"))
                continue
            if not isinstance(row, dict):
                problems.append(Problem(where, f"not a JSON object ({type(row).__name__})"))
                continue
            yield n, row


_READERS: dict[str, Callable[[Path, list[Problem]], Rows]] = {
    ".csv": _csv_rows,
    ".jsonl": _jsonl_rows,
    ".ndjson": _jsonl_rows,
}
