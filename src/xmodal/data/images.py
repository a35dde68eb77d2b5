"""Safe image decoding: every failure becomes an ImageError that names the file."""

from __future__ import annotations

import os
import warnings
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from PIL import Image as PILImage
from PIL import ImageOps

from xmodal.data.dataset import Caption, Image, Problem

MAX_PIXELS = 64_000_000  # ~8000 x 8000; beyond this an image is refused, not decoded
#: what `load_rgb` makes of a file; part of every image encoder's cache fingerprint, so a change
#: here (2: EXIF orientation applied) never reuses vectors of the old pixels
DECODING = "rgb2"


class ImageError(ValueError):
    """An image that cannot be used; the message names the file and the reason."""


def load_rgb(path: str | Path, max_pixels: int = MAX_PIXELS) -> PILImage.Image:
    """Decode an image to RGB, upright by its EXIF orientation (phone photos are stored
    sideways), compositing any transparency on white.

    Raises ImageError for a missing, empty, truncated, oversized or non-image file.
    """
    path = Path(path)
    try:
        size = path.stat().st_size
    except OSError as e:
        raise ImageError(f"{path}: cannot read ({e.strerror or e})") from None
    if size == 0:
        raise ImageError(f"{path}: empty file (0 bytes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", PILImage.DecompressionBombWarning)
            with PILImage.open(path) as im:
                w, h = im.size
                if w * h > max_pixels:
                    raise ImageError(f"{path}: {w}x{h} pixels exceeds the limit of {max_pixels}")
                im.load()
                return _to_rgb_on_white(ImageOps.exif_transpose(im))
    except ImageError:
        raise
    except (PILImage.DecompressionBombError, PILImage.DecompressionBombWarning) as e:
        raise ImageError(f"{path}: too many pixels ({e})") from None
    except (OSError, SyntaxError, ValueError) as e:
        raise ImageError(f"{path}: not a readable image ({e})") from None


def _to_rgb_on_white(im: PILImage.Image) -> PILImage.Image:
    if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
        rgba = im.convert("RGBA")
        canvas = PILImage.new("RGBA", rgba.size, (255, 255, 255, 255))
        canvas.alpha_composite(rgba)
        return canvas.convert("RGB")
    return im.convert("RGB")


def drop_missing(
    images: list[Image], captions: list[Caption], problems: list[Problem]
) -> tuple[list[Image], list[Caption]]:
    """Drop images whose file does not exist, and their captions, recording one problem each.

    A stat per file, no decoding: undecodable files are caught by `load_rgb` at encode time.
    """
    missing = {im.id: im.path for im in images if not im.path.is_file()}
    if not missing:
        return images, captions
    n_caps = Counter(c.image_id for c in captions if c.image_id in missing)
    for image_id, path in missing.items():
        action = f"image {image_id!r} and {n_caps[image_id]} caption(s) skipped"
        problems.append(Problem(str(path), "image file not found", action))
    return (
        [im for im in images if im.id not in missing],
        [c for c in captions if c.image_id not in missing],
    )


def decode_problems(images: Sequence[Image], workers: int | None = None) -> list[Problem]:
    """Fully decode every image (as a run would) and return one problem per unusable file."""

    def check(im: Image) -> Problem | None:
        try:
            load_rgb(im.path)
        except ImageError as e:
            return Problem(str(im.path), str(e).removeprefix(f"{im.path}: "), "image skipped")
        return None

    with ThreadPoolExecutor(workers or min(8, os.cpu_count() or 1)) as pool:
        return [p for p in pool.map(check, images) if p is not None]
