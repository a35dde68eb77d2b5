"""COCO captions JSON (`captions_val2014.json`): images[{id, file_name}], annotations[{id,
image_id, caption}], with the image files under an images root."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from xmodal.data.dataset import Caption, Dataset, Image, Problem, caption_text
from xmodal.data.images import drop_missing


def read_json(path: Path) -> Any:
    """Parse a JSON file; a missing, non-UTF-8 or malformed file raises naming the file."""
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: no such file") from None
    except UnicodeDecodeError as e:
        raise ValueError(f"{path}: not UTF-8 ({e.reason} at byte {e.start})") from None
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}:{e.lineno}:{e.colno}: not valid JSON ({e.msg})") from None


def record_list(data: Any, key: str, path: Path, what: str) -> list:
    """`data[key]` if it is a list, else a ValueError saying which kind of file was expected."""
    items = data.get(key) if isinstance(data, dict) else None
    if not isinstance(items, list):
        raise ValueError(f"{path}: no {key!r} list at the top level; is it {what}?")
    return items


def fields(
    record: Any, keys: tuple[str, ...], where: str, problems: list[Problem]
) -> tuple[Any, ...] | None:
    """The values of `keys` in a JSON record, or None (and a problem) if one is absent."""
    if not isinstance(record, Mapping):
        problems.append(Problem(where, f"not a JSON object ({type(record).__name__})"))
        return None
    missing = [k for k in keys if record.get(k) is None]
    if missing:
        problems.append(Problem(where, f"missing {', '.join(map(repr, missing))}"))
        return None
    return tuple(record[k] for k in keys)


def load_coco(path: str | Path, images: str | Path | None = None) -> Dataset:
    """A COCO captions file; `images` is the folder of its `file_name`s (default: its folder)."""
    path = Path(path)
    data = read_json(path)
    what = "a COCO captions file (captions_*.json)"
    root = Path(images) if images is not None else path.parent
    problems: list[Problem] = []
    image_list = _images(record_list(data, "images", path, what), path, root, problems)
    known = {im.id for im in image_list}
    captions = _captions(record_list(data, "annotations", path, what), path, known, problems)
    image_list, captions = drop_missing(image_list, captions, problems)
    return Dataset(path.stem, image_list, captions, problems)


def _images(records: list, path: Path, root: Path, problems: list[Problem]) -> list[Image]:
    images: list[Image] = []
    seen: set[str] = set()
    for i, record in enumerate(records):
        where = f"{path}#images[{i}]"
        values = fields(record, ("id", "file_name"), where, problems)
        if values is None:
            continue
        image_id = str(values[0])
        if image_id in seen:
            problems.append(Problem(where, f"duplicate image id {image_id!r}"))
            continue
        seen.add(image_id)
        images.append(Image(image_id, root / str(values[1])))
    return images


def _captions(records: list, path: Path, known: set[str], problems: list[Problem]) -> list[Caption]:
    captions: list[Caption] = []
    seen: set[str] = set()
    for i, record in enumerate(records):
        where = f"{path}#annotations[{i}]"
        values = fields(record, ("id", "image_id", "caption"), where, problems)
        if values is None:
            continue
        caption_id, image_id = str(values[0]), str(values[1])
        if caption_id in seen:
            problems.append(Problem(where, f"duplicate caption id {caption_id!r}"))
        elif image_id not in known:
            problems.append(Problem(where, f"image_id {image_id!r} is not in 'images'"))
        elif (text := caption_text(values[2], where, problems)) is not None:
            seen.add(caption_id)
            captions.append(Caption(caption_id, text, image_id))
    return captions
