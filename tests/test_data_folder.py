from pathlib import Path

import pytest
from data_fixtures import write_png, write_text
from PIL import Image as PILImage

from xmodal.data.folder import load_folder


@pytest.fixture
def album(tmp_path: Path) -> Path:
    root = tmp_path / "album"
    write_png(root / "beach.png")
    write_text(root / "beach.txt", "A sunny beach.\n\n  Sand and sea.  \n")
    (root / "trips/2020").mkdir(parents=True)
    PILImage.new("RGB", (4, 4)).save(root / "trips/2020/photo.v2.JPEG")
    write_text(root / "trips/2020/photo.v2.txt", b"\xef\xbb\xbfA mountain.\r\nBad \xff byte.\r\n")
    write_png(root / "nocap.png")
    write_png(root / "blank.png")
    write_text(root / "blank.txt", " \n\n")
    write_png(root / "twin.png")
    PILImage.new("RGB", (4, 4)).save(root / "twin.gif")
    write_text(root / "twin.txt", "Twins.\n")
    write_text(root / "notes.md", "not an image\n")
    return root


def test_sidecar_captions_recursive(album: Path):
    ds = load_folder(album)
    assert ds.name == "album"
    assert [(im.id, im.path) for im in ds.images] == [
        ("beach", album / "beach.png"),
        ("trips/2020/photo.v2", album / "trips/2020/photo.v2.JPEG"),
        ("twin", album / "twin.gif"),
    ]
    assert [(c.id, c.text, c.image_id) for c in ds.captions] == [
        ("beach#1", "A sunny beach.", "beach"),
        ("beach#3", "Sand and sea.", "beach"),
        ("trips/2020/photo.v2#1", "A mountain.", "trips/2020/photo.v2"),
        ("twin#1", "Twins.", "twin"),
    ]


def test_problems_name_the_files(album: Path):
    problems = [str(p) for p in load_folder(album).problems]
    assert problems == [
        f"{album / 'blank.txt'}: no caption (empty file) (image skipped)",
        f"{album / 'nocap.png'}: no caption file nocap.txt (skipped)",
        f"{album / 'trips/2020/photo.v2.txt'}:2: not UTF-8 (invalid start byte at byte 4)"
        " (skipped)",
        f"{album / 'twin.png'}: twin.txt already belongs to '{album / 'twin.gif'}' (skipped)",
    ]


def test_not_a_folder(tmp_path: Path):
    with pytest.raises(FileNotFoundError, match="not a folder"):
        load_folder(tmp_path / "nowhere")


def test_each_bad_caption_file_gets_one_reason(tmp_path: Path):
    write_png(tmp_path / "latin.png")
    write_text(tmp_path / "latin.txt", "Caf\xe9 au lait\n".encode("latin-1"))
    write_png(tmp_path / "nul.png")
    write_text(tmp_path / "nul.txt", "a NUL\x00 inside\nTabs\tare\tfine\n")
    write_text(tmp_path / "orphan.txt", "a caption without its image\n")
    ds = load_folder(tmp_path)
    assert [str(p) for p in ds.problems] == [
        f"{tmp_path / 'latin.txt'}:1: not UTF-8 (invalid continuation byte at byte 3) (skipped)",
        f"{tmp_path / 'nul.txt'}:1: caption holds a control character (U+0000) (skipped)",
        f"{tmp_path / 'orphan.txt'}: caption file with no image (ignored)",
    ]
    assert [c.text for c in ds.captions] == ["Tabs are fine"]
