"""Karpathy split files (`dataset_flickr8k.json`, `dataset_flickr30k.json`, `dataset_coco.json`):
images with their sentences and the standard split of each; `restval` counts as train."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from xmodal.data.coco import fields, read_json, record_list
from xmodal.data.dataset import SPLITS, Caption, Dataset, Image, Problem, caption_text
from xmodal.data.images import drop_missing

SPLIT_NAMES = {"train": "train", "restval": "train", "val": "val", "test": "test"}


def load_karpathy(
    path: str | Path,
    images: str | Path | None = None,
    split: str | Iterable[str] | None = None,
) -> Dataset:
    """Images under `images` (default: the JSON's folder) at `[filepath/]filename`.

    `split` keeps only the named splits: "test" is the standard 1K Flickr30k / 5K COCO test set.
    Image ids are COCO ids (`cocoid`) or else file name stems; caption ids are `sentid`s.
    """
    path = Path(path)
    wanted = _wanted(split)
    data = read_json(path)
    records = record_list(data, "images", path, "a Karpathy split file (dataset_*.json)")
    root = Path(images) if images is not None else path.parent
    problems: list[Problem] = []
    image_list: list[Image] = []
    captions: list[Caption] = []
    given: dict[str, str] = {}
    seen_captions: set[str] = set()
    for i, record in enumerate(records):
        where = f"{path}#images[{i}]"
        values = fields(record, ("filename", "split", "sentences"), where, problems)
        if values is None:
            continue
        filename, raw_split, sentences = str(values[0]), values[1], values[2]
        split_name = SPLIT_NAMES.get(raw_split) if isinstance(raw_split, str) else None
        if split_name is None:
            problems.append(Problem(where, f"unknown split {raw_split!r}"))
            continue
        if wanted and split_name not in wanted:
            continue
        cocoid = record.get("cocoid")
        image_id = str(cocoid) if cocoid is not None else Path(filename).stem
        if image_id in given:
            problems.append(Problem(where, f"duplicate image id {image_id!r}"))
            continue
        if not isinstance(sentences, list):
            problems.append(Problem(where, "'sentences' is not a list"))
            continue
        given[image_id] = split_name
        image_list.append(Image(image_id, root / str(record.get("filepath") or "") / filename))
        captions += _captions(sentences, image_id, where, seen_captions, problems)
    image_list, captions = drop_missing(image_list, captions, problems)
    name = str(data.get("dataset", path.stem)) + ("-" + "+".join(sorted(wanted)) if wanted else "")
    kept = {im.id for im in image_list}
    return Dataset(name, image_list, captions, problems, given_splits={k: given[k] for k in kept})


def _wanted(split: str | Iterable[str] | None) -> set[str]:
    names = {split} if isinstance(split, str) else set(split or ())
    unknown = names - set(SPLITS)
    if unknown:
        raise ValueError(
            f"unknown split(s) {sorted(unknown)}; choose from {', '.join(SPLITS)} "
            "(restval is part of train)"
        )
    return names


def _captions(
    sentences: list, image_id: str, where: str, seen: set[str], problems: list[Problem]
) -> list[Caption]:
    captions = []
    for j, sentence in enumerate(sentences):
        here = f"{where}.sentences[{j}]"
        values = fields(sentence, ("sentid", "raw"), here, problems)
        if values is None:
            continue
        caption_id = str(values[0])
        if caption_id in seen:
            problems.append(Problem(here, f"duplicate sentid {caption_id!r}"))
        elif (text := caption_text(values[1], here, problems)) is not None:
            seen.add(caption_id)
            captions.append(Caption(caption_id, text, image_id))
    return captions
