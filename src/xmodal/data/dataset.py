"""The one dataset model: images, captions that point at them, and the problems met loading them."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from xmodal.files import atomic_write_text

SPLITS = ("train", "val", "test")
_LAYOUT = re.compile(r"[\t\n\r\v\f]+")  # whitespace controls: become one space
# any other C0 control or DEL (NUL...) is refused; C1 ones (U+0080-9F) are left alone: they are
# mis-decoded Windows-1252 punctuation in real caption files (Tux Paint's translations)
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


@dataclass(frozen=True)
class Image:
    id: str
    path: Path


@dataclass(frozen=True)
class Caption:
    id: str
    text: str
    image_id: str


@dataclass(frozen=True)
class Problem:
    """A data problem: where it is (file, file:line or file#key), what is wrong, what was done."""

    where: str
    message: str
    action: str = "skipped"

    def __str__(self) -> str:
        return f"{self.where}: {self.message} ({self.action})"


@dataclass
class Dataset:
    """Images (id, path) and captions (id, text, image id); many captions per image allowed.

    `translations` maps a caption id to {language tag: text} for sources that ship them.
    `given_splits` maps an image id to the split its source assigns (e.g. Karpathy JSON).
    Construction validates ids and links; invalid records go to `problems`, never raise.
    """

    name: str
    images: list[Image]
    captions: list[Caption]
    problems: list[Problem] = field(default_factory=list)
    translations: dict[str, dict[str, str]] = field(default_factory=dict)
    given_splits: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.images, self.captions = _validated(self.images, self.captions, self.problems)

    @property
    def caption_image(self) -> np.ndarray:
        """Row index into `images` of each caption's image (int64, one per caption)."""
        row = {im.id: i for i, im in enumerate(self.images)}
        return np.fromiter((row[c.image_id] for c in self.captions), np.int64, len(self.captions))

    def fingerprint(self) -> str:
        """Content hash of ids, paths and texts: names the dataset in caches and run records."""
        return fingerprint_of(
            ((im.id, im.path) for im in self.images),
            ((c.id, c.image_id, c.text) for c in self.captions),
        )

    def subset(self, image_ids: Iterable[str], name: str | None = None) -> Dataset:
        """The images with these ids and all of their captions (order kept)."""
        keep = set(image_ids)
        return Dataset(
            name=name or self.name,
            images=[im for im in self.images if im.id in keep],
            captions=[c for c in self.captions if c.image_id in keep],
            translations={
                c.id: self.translations[c.id]
                for c in self.captions
                if c.image_id in keep and c.id in self.translations
            },
            given_splits={k: v for k, v in self.given_splits.items() if k in keep},
        )

    def summary(self) -> dict[str, int]:
        per_image = np.bincount(self.caption_image, minlength=len(self.images))
        return {
            "images": len(self.images),
            "captions": len(self.captions),
            "min_captions_per_image": int(per_image.min()) if len(per_image) else 0,
            "max_captions_per_image": int(per_image.max()) if len(per_image) else 0,
            "translated_captions": len(self.translations),
            "problems": len(self.problems),
        }


def fingerprint_of(
    images: Iterable[tuple[str, str | Path]], captions: Iterable[tuple[str, str, str]]
) -> str:
    """The hash of images (id, path) then captions (id, image id, text), in order."""
    h = hashlib.sha256()
    for image_id, path in images:
        h.update(f"I\0{image_id}\0{path}\n".encode())
    for caption_id, image_id, text in captions:
        h.update(f"C\0{caption_id}\0{image_id}\0{text}\n".encode())
    return h.hexdigest()[:16]


def _validated(
    images: list[Image], captions: list[Caption], problems: list[Problem]
) -> tuple[list[Image], list[Caption]]:
    """Drop duplicate ids, empty captions, captions without an image and images without captions."""
    seen: set[str] = set()
    good_images = []
    for im in images:
        if im.id in seen:
            problems.append(Problem(str(im.path), f"duplicate image id {im.id!r}"))
            continue
        seen.add(im.id)
        good_images.append(im)
    image_ids = seen
    seen_caps: set[str] = set()
    good_caps = []
    for c in captions:
        if c.id in seen_caps:
            problems.append(Problem(f"caption {c.id}", f"duplicate caption id {c.id!r}"))
        elif not c.text.strip():
            problems.append(Problem(f"caption {c.id}", "empty caption"))
        elif c.image_id not in image_ids:
            problems.append(Problem(f"caption {c.id}", f"no image with id {c.image_id!r}"))
        else:
            seen_caps.add(c.id)
            good_caps.append(c)
    captioned = {c.image_id for c in good_caps}
    for im in good_images:
        if im.id not in captioned:
            problems.append(Problem(str(im.path), f"image {im.id!r} has no caption"))
    return [im for im in good_images if im.id in captioned], good_caps


def caption_text(value: Any, where: str, problems: list[Problem]) -> str | None:
    """The caption cleaned (stripped; tabs and line breaks become spaces), or None and a problem
    naming `where` if it is not text, not UTF-8, holds a control character (NUL...), or is empty."""
    if not isinstance(value, str):
        problems.append(Problem(where, f"caption is not text ({type(value).__name__})"))
        return None
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as e:  # lone surrogates: undecodable bytes or bad \u escapes
        problems.append(Problem(where, f"caption is not valid UTF-8 ({e.reason})"))
        return None
    value = _LAYOUT.sub(" ", value).strip()
    if bad := _CONTROL.search(value):
        code = f"U+{ord(bad.group()):04X}"
        problems.append(Problem(where, f"caption holds a control character ({code})"))
        return None
    if not value:
        problems.append(Problem(where, "empty caption"))
        return None
    return value


def split_ids(dataset: Dataset, fractions: Mapping[str, float], seed: int) -> dict[str, list[str]]:
    """Deterministic split of image ids (so all captions of an image fall in one split).

    Sources that assign splits (Karpathy JSON) are honoured; otherwise a seeded permutation of
    the sorted image ids is cut by `fractions` (keys among train/val/test, summing to 1).
    """
    if dataset.given_splits and set(dataset.given_splits.values()) & set(fractions):
        out: dict[str, list[str]] = {s: [] for s in fractions}
        for im in dataset.images:
            s = dataset.given_splits.get(im.id)
            if s in out:
                out[s].append(im.id)
        return out
    ids = sorted(im.id for im in dataset.images)
    order = np.random.default_rng(seed).permutation(len(ids))
    total = sum(fractions.values())
    out, start = {}, 0
    names = list(fractions)
    for i, name in enumerate(names):
        stop = (
            len(ids) if i == len(names) - 1 else start + round(len(ids) * fractions[name] / total)
        )
        out[name] = [ids[j] for j in order[start:stop]]
        start = stop
    return out


def write_problems(problems: Iterable[Problem], path: Path) -> None:
    """Problems as JSON lines, one per problem, for the run folder (written atomically)."""
    rows = (
        json.dumps({"where": p.where, "message": p.message, "action": p.action}) for p in problems
    )
    atomic_write_text(path, "".join(f"{row}\n" for row in rows))
