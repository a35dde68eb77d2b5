import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from data_fixtures import write_png
from PIL import Image as PILImage

from xmodal.data.dataset import Caption, Image, Problem
from xmodal.data.images import ImageError, drop_missing, load_rgb


def _png_header_only(path: Path, width: int, height: int) -> Path:
    """A PNG that declares width x height (1-bit grey) but carries almost no pixel data."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\0" * 16))
        + chunk(b"IEND", b"")
    )
    return path


def test_plain_rgb_png_decodes(tmp_path: Path):
    im = load_rgb(write_png(tmp_path / "a.png", (5, 3), (1, 2, 3)))
    assert im.mode == "RGB" and im.size == (5, 3) and im.getpixel((4, 2)) == (1, 2, 3)


def test_transparency_is_composited_on_white(tmp_path: Path):
    rgba = PILImage.new("RGBA", (2, 1), (255, 0, 0, 0))
    rgba.putpixel((1, 0), (0, 0, 255, 128))  # half-transparent blue over white
    rgba.save(tmp_path / "a.png")
    im = load_rgb(tmp_path / "a.png")
    assert im.getpixel((0, 0)) == (255, 255, 255)
    assert im.getpixel((1, 0)) == (127, 127, 255)
    palette = PILImage.new("P", (2, 1), 0)
    palette.putpalette([0, 0, 0, 10, 200, 30] + [0] * 762)
    palette.putpixel((1, 0), 1)
    palette.save(tmp_path / "p.png", transparency=0)
    im = load_rgb(tmp_path / "p.png")
    assert (im.getpixel((0, 0)), im.getpixel((1, 0))) == ((255, 255, 255), (10, 200, 30))


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", r"empty file \(0 bytes\)"),
        (b"this is not an image at all", "not a readable image"),
        (None, "not a readable image"),  # truncated: the first half of a real PNG
    ],
)
def test_bad_files_raise_image_error_naming_the_file(tmp_path: Path, content, message):
    path = tmp_path / "bad.png"
    if content is None:
        PILImage.effect_noise((64, 64), 50).save(tmp_path / "full.png")
        data = (tmp_path / "full.png").read_bytes()
        content = data[: len(data) // 2]
    path.write_bytes(content)
    with pytest.raises(ImageError, match=message) as err:
        load_rgb(path)
    assert str(path) in str(err.value)


def test_missing_file_raises_image_error(tmp_path: Path):
    with pytest.raises(ImageError, match=r"missing\.png: cannot read"):
        load_rgb(tmp_path / "missing.png")


def test_huge_image_is_refused_before_decoding(tmp_path: Path):
    huge = _png_header_only(tmp_path / "huge.png", 20000, 20000)  # beyond Pillow's bomb limit
    with pytest.raises(ImageError, match=r"huge\.png: too many pixels"):
        load_rgb(huge)
    big = _png_header_only(tmp_path / "big.png", 9000, 9000)  # under Pillow's, over ours
    with pytest.raises(ImageError, match=r"big\.png: 9000x9000 pixels exceeds the limit"):
        load_rgb(big)
    small = write_png(tmp_path / "small.png", (10, 10))
    with pytest.raises(ImageError, match="10x10 pixels exceeds the limit of 99"):
        load_rgb(small, max_pixels=99)


def test_drop_missing_removes_images_and_their_captions(tmp_path: Path):
    here = write_png(tmp_path / "here.png")
    images = [Image("a", here), Image("b", tmp_path / "gone.png")]
    captions = [Caption("1", "x", "a"), Caption("2", "y", "b"), Caption("3", "z", "b")]
    problems: list[Problem] = []
    kept_images, kept_captions = drop_missing(images, captions, problems)
    assert [im.id for im in kept_images] == ["a"]
    assert [c.id for c in kept_captions] == ["1"]
    assert problems == [
        Problem(
            str(tmp_path / "gone.png"), "image file not found", "image 'b' and 2 caption(s) skipped"
        )
    ]


def test_exif_orientation_is_applied(tmp_path: Path):
    # a phone photo stored 4 wide x 2 high with "rotate 90 CW to view" (orientation 6)
    stored = PILImage.new("RGB", (4, 2), (0, 0, 255))
    stored.putpixel((0, 0), (255, 0, 0))  # top-left as stored
    exif = PILImage.Exif()
    exif[0x0112] = 6
    stored.save(tmp_path / "phone.png", exif=exif)
    im = load_rgb(tmp_path / "phone.png")
    assert im.size == (2, 4)  # upright: portrait
    assert im.getpixel((1, 0)) == (255, 0, 0)  # stored top-left ends at the top-right
    assert im.getpixel((0, 0)) == (0, 0, 255)


def test_png_without_exif_decodes_identically(tmp_path: Path):
    path = write_png(tmp_path / "a.png", (7, 5), (9, 99, 199))
    with PILImage.open(path) as raw:
        np.testing.assert_array_equal(np.asarray(load_rgb(path)), np.asarray(raw.convert("RGB")))


def test_decode_problems_finds_a_truncated_png(tmp_path: Path):
    from xmodal.data.images import decode_problems

    good = write_png(tmp_path / "good.png", (64, 64))
    data = write_png(tmp_path / "cut.png", (64, 64)).read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    problems = decode_problems([Image("good", good), Image("cut", tmp_path / "cut.png")])
    assert [p.where for p in problems] == [str(tmp_path / "cut.png")]
    assert "not a readable image" in problems[0].message
    assert problems[0].action == "image skipped"
