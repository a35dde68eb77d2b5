"""The `toy-colours:DIR` data format: writes (once) and loads a folder of solid-colour images,
two captions each."""

from __future__ import annotations

from pathlib import Path

from PIL import Image as PILImage

from xmodal.data.dataset import Caption, Dataset, Image
from xmodal_toy import COLOURS

SHADES = 3  # images per colour, slightly different shades


def load_colours(path: str | Path) -> Dataset:
    root = Path(path)
    images, captions = [], []
    for name, rgb in COLOURS.items():
        for shade in range(SHADES):
            image_id = f"{name}-{shade}"
            file = root / f"{image_id}.png"
            if not file.exists():
                colour = tuple(max(0, c - 12 * shade) for c in rgb)
                PILImage.new("RGB", (16, 16), colour).save(file)
            images.append(Image(image_id, file))
            captions.append(Caption(f"{image_id}#1", f"a {name} square", image_id))
            captions.append(Caption(f"{image_id}#2", f"something painted {name}", image_id))
    return Dataset("toy-colours", images, captions)
