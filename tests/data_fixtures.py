"""Small data files for the data-loader tests: real PNGs and a fake Tux Paint stamps tree."""

from __future__ import annotations

from pathlib import Path

from PIL import Image as PILImage


def write_png(path: Path, size: tuple[int, int] = (8, 6), color=(200, 30, 30)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    PILImage.new("RGB", size, color).save(path)
    return path


def write_text(path: Path, text: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(text, str):
        text = text.encode("utf-8")
    path.write_bytes(text)
    return path


SVG = (
    '<svg xmlns="http://www.w3.org/2000/svg" width="20" height="10">'
    '<rect width="20" height="10" fill="blue"/></svg>'
)

# Adobe Illustrator's export: namespace entities in the DOCTYPE, refused by a safe XML parser.
ILLUSTRATOR_SVG = """<?xml version="1.0" encoding="UTF-8"?>
<!DOCTYPE svg PUBLIC '-//W3C//DTD SVG 1.1//EN' 'http://www.w3.org/Graphics/SVG/1.1/DTD/svg11.dtd' [
\t<!ENTITY ns_svg "http://www.w3.org/2000/svg">
\t<!ENTITY ns_xlink "http://www.w3.org/1999/xlink">
]>
<svg xmlns="&ns_svg;" xmlns:xlink="&ns_xlink;" width="12" height="30">
<rect width="12" height="30" fill="green"/></svg>
"""

CAT_TXT = """A cat.
fr.utf8=Un chat.
pt_BR.utf8=Um gato.
ca@valencia.utf8="Un gat."
hu.utf8="c" betű.
"""


def make_stamps(root: Path) -> Path:
    """An unpacked package root mimicking tuxpaint-stamps-default; returns the stamps folder.

    Good stamps: animals/cat (png, translations), animals/birds/owl (svg only),
    food/loaf (Illustrator svg only). Bad: food/bad_utf8 (line 1 not UTF-8), food/empty
    (empty .txt), food/ghost (.txt without image), food/orphan.png (no .txt);
    animals/cat_mirror.png is a Tux Paint mirror image, not a stamp.
    """
    stamps = root / "usr/share/tuxpaint/stamps"
    write_png(stamps / "animals/cat.png")
    write_text(stamps / "animals/cat.txt", CAT_TXT)
    write_png(stamps / "animals/cat_mirror.png")
    write_text(stamps / "animals/cat.dat", "colorable\n")
    write_text(stamps / "animals/birds/owl.svg", SVG)
    write_text(stamps / "animals/birds/owl.txt", "An owl.\nde.utf8=Eine Eule.\nnot a translation\n")
    write_text(stamps / "food/loaf.svg", ILLUSTRATOR_SVG)
    write_text(stamps / "food/loaf.txt", "A loaf of bread.\n")
    write_png(stamps / "food/bad_utf8.png")
    write_text(stamps / "food/bad_utf8.txt", b"Caf\xe9 au lait.\nfr.utf8=Caf\xc3\xa9.\n")
    write_png(stamps / "food/empty.png")
    write_text(stamps / "food/empty.txt", "\n")
    write_text(stamps / "food/ghost.txt", "A ghost.\n")
    write_png(stamps / "food/orphan.png")
    return stamps


SHAPE_COLOURS = {
    "red": (220, 30, 30),
    "green": (30, 180, 30),
    "blue": (30, 60, 220),
    "yellow": (240, 220, 20),
}
SHAPES = ("circle", "square", "triangle")


def draw_shape(path: Path, colour: tuple[int, int, int], shape: str) -> Path:
    """A 64x64 drawing of one coloured shape on white: real images a real encoder can tell apart."""
    from PIL import ImageDraw

    im = PILImage.new("RGB", (64, 64), "white")
    d = ImageDraw.Draw(im)
    if shape == "circle":
        d.ellipse((12, 12, 52, 52), fill=colour)
    elif shape == "square":
        d.rectangle((12, 12, 52, 52), fill=colour)
    else:
        d.polygon([(32, 8), (56, 56), (8, 56)], fill=colour)
    im.save(path)
    return path


def write_shapes_manifest(root: Path, extra_lines: tuple[str, ...] = ()) -> Path:
    """shapes.csv: 12 drawn shapes, two captions each, then `extra_lines` as written."""
    lines = ["image,caption"]
    for name, rgb in SHAPE_COLOURS.items():
        for shape in SHAPES:
            file = f"{name}_{shape}.png"
            draw_shape(root / file, rgb, shape)
            lines += [f"{file},a {name} {shape}", f"{file},a {shape} coloured {name}"]
    (root / "shapes.csv").write_text("\n".join([*lines, *extra_lines]) + "\n")
    return root / "shapes.csv"
