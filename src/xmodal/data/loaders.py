"""One entry point for every data format: `load_dataset("FORMAT:PATH")`, and a readable summary.

A format is a loader function `(path, **options) -> Dataset` registered under its name in
FORMATS; other packages add formats through the entry-point group `xmodal.loaders`. A loader
with an `images` parameter takes an image root (for captions that name files relative to one).
"""

from __future__ import annotations

import inspect
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from xmodal.data.coco import load_coco
from xmodal.data.dataset import Dataset, Problem
from xmodal.data.folder import load_folder
from xmodal.data.images import decode_problems
from xmodal.data.karpathy import load_karpathy
from xmodal.data.languages import in_languages
from xmodal.data.listing import Listing
from xmodal.data.manifest import load_manifest, stream_manifest
from xmodal.data.tuxpaint import load_tuxpaint
from xmodal.registry import Registry


def _callable(name: str, loader: Any) -> Callable[..., Dataset]:
    if not callable(loader):
        raise TypeError(f"a data loader must be callable, got {type(loader).__name__}")
    return loader


FORMATS: Registry[Callable[..., Dataset]] = Registry(
    "data format", "xmodal.loaders", None, _callable
)
FORMATS.register("tuxpaint", load_tuxpaint)
FORMATS.register("karpathy", load_karpathy)
FORMATS.register("coco", load_coco)
FORMATS.register("manifest", load_manifest)
FORMATS.register("folder", load_folder)


def data_root() -> Path:
    """Where fetched data and caches derived from it live: $XMODAL_DATA, else ./data; made
    absolute, so the paths of the images found there work from any directory."""
    return Path(os.environ.get("XMODAL_DATA") or "data").expanduser().absolute()


def load_dataset(source: str, images: str | Path | None = None, **options: Any) -> Dataset:
    """Load "FORMAT:PATH" (or plain "tuxpaint": the stamps fetched under the data root).

    `images` is the image root for formats that name files relative to one (karpathy, coco,
    manifest); `options` go to the format's loader (e.g. split="test" for karpathy), except
    `languages`: the captions in these languages, from the dataset's translations (`in_languages`).
    """
    languages = options.pop("languages", None)
    fmt, path, options = _locate(source, images, options)
    dataset = FORMATS[fmt](path, **options)
    return dataset if languages is None else in_languages(dataset, languages)


def open_listing(
    source: str, images: str | Path | None = None, path: str | Path = ":memory:"
) -> Listing:
    """The dataset of "FORMAT:PATH" as a `Listing` in the SQLite file `path`: streamed row by
    row for a manifest (memory does not grow with its rows); other formats, whose source is one
    document or a folder walk, are loaded whole first."""
    fmt, location, options = _locate(source, images, {})
    if fmt == "manifest" and FORMATS[fmt] is load_manifest:
        return stream_manifest(location, options.get("images"), path)
    return Listing.from_dataset(FORMATS[fmt](location, **options), path)


def _locate(
    source: str, images: str | Path | None, options: dict[str, Any]
) -> tuple[str, Path, dict[str, Any]]:
    """The format of "FORMAT:PATH", its existing path and the loader's options."""
    fmt, _, location = source.partition(":")
    if fmt not in FORMATS:
        raise FORMATS.unknown(fmt, f" in {source!r}", " (write FORMAT:PATH, or just tuxpaint)")
    loader = FORMATS[fmt]
    options = dict(options)
    if images is not None:
        if "images" not in inspect.signature(loader).parameters:
            raise ValueError(f"{fmt} takes no images root (its images sit beside their captions)")
        options["images"] = images
    if fmt == "tuxpaint":
        options.setdefault("render_dir", data_root() / "tuxpaint-rendered")
        if not location:
            location = str(data_root() / "tuxpaint")
            if not Path(location).is_dir():
                raise FileNotFoundError(
                    f"{location}: no Tux Paint stamps yet; fetch them with "
                    "`xmodal data fetch tuxpaint` (or set XMODAL_DATA to where they are)"
                )
    if not location:
        raise ValueError(f"{fmt} needs a path: {fmt}:PATH")
    path = Path(location).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"{path}: not found (from {source!r})")
    return fmt, path, options


def describe(ds: Dataset, examples: int = 3, decode: bool = True) -> str:
    """Counts, captions per image, given splits, translations, and the problems grouped by kind.

    With `decode`, every image is decoded in full first, so the problems listed are all those
    a run would meet (a truncated PNG included); the counts are of what a run would use.
    """
    if decode and (bad := decode_problems(ds.images)):
        unusable = {p.where for p in bad}
        problems = [*ds.problems, *bad]
        ds = ds.subset(im.id for im in ds.images if str(im.path) not in unusable)
        ds.problems[:0] = problems
    s = ds.summary()
    lines = [
        f"dataset {ds.name} ({ds.fingerprint()})",
        f"  images: {s['images']}  captions: {s['captions']}  captions/image: "
        f"{s['min_captions_per_image']}-{s['max_captions_per_image']}",
    ]
    if ds.given_splits:
        counts: dict[str, int] = {}
        for im in ds.images:
            name = ds.given_splits.get(im.id, "none")
            counts[name] = counts.get(name, 0) + 1
        lines.append("  given splits: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
    if ds.translations:
        languages = {lang for t in ds.translations.values() for lang in t}
        lines.append(f"  translations: {len(ds.translations)} captions, {len(languages)} languages")
    lines.append(f"  problems: {len(ds.problems)}")
    for kind, group in _grouped(ds.problems).items():
        lines.append(f"    {len(group)} x {kind}")
        lines.extend(f"      {p}" for p in group[:examples])
        if len(group) > examples:
            lines.append(f"      ... {len(group) - examples} more")
    return "\n".join(lines)


def _grouped(problems: list[Problem]) -> dict[str, list[Problem]]:
    """Problems by message, less trailing details, quoted values and counts ("dup id '…'")."""
    groups: dict[str, list[Problem]] = {}
    for p in problems:
        kind = re.sub(r"\s*\([^()]*\)$", "", p.message)
        kind = re.sub(r"'[^']*'|\"[^\"]*\"", "'…'", kind)
        kind = re.sub(r"(?<![\w.-])\d+(?![\w.-])", "N", kind)  # "N stamps", not "UTF-N"
        groups.setdefault(kind, []).append(p)
    return groups
