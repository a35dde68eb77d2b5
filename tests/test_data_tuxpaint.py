import os
import shutil
import subprocess
from pathlib import Path

import pytest
from data_fixtures import make_stamps, write_png, write_text
from PIL import Image as PILImage

from xmodal.data.images import load_rgb
from xmodal.data.tuxpaint import fetch_tuxpaint, load_tuxpaint, stamps_dir


@pytest.fixture
def stamps(tmp_path: Path) -> Path:
    return make_stamps(tmp_path / "pkg")


def test_stamps_captions_translations_and_rendered_svgs(stamps: Path, tmp_path: Path):
    ds = load_tuxpaint(tmp_path / "pkg", render_dir=tmp_path / "rendered")
    assert [im.id for im in ds.images] == ["animals/birds/owl", "animals/cat", "food/loaf"]
    assert [(c.id, c.text, c.image_id) for c in ds.captions] == [
        ("animals/birds/owl", "An owl.", "animals/birds/owl"),
        ("animals/cat", "A cat.", "animals/cat"),
        ("food/loaf", "A loaf of bread.", "food/loaf"),
    ]
    assert ds.translations["animals/cat"] == {
        "fr": "Un chat.",
        "pt_BR": "Um gato.",
        "ca@valencia": "Un gat.",  # enclosing quotes dropped
        "hu": '"c" betű.',  # quotes inside the text kept
    }
    assert ds.translations["animals/birds/owl"] == {"de": "Eine Eule."}
    paths = {im.id: im.path for im in ds.images}
    assert paths["animals/cat"] == stamps / "animals/cat.png"
    assert paths["animals/birds/owl"] == tmp_path / "rendered/animals/birds/owl.png"
    owl = load_rgb(paths["animals/birds/owl"])
    assert owl.size == (20, 10) and owl.getpixel((5, 5)) == (0, 0, 255)
    loaf = load_rgb(paths["food/loaf"])  # Illustrator SVG with DOCTYPE entities
    assert loaf.size == (12, 30) and loaf.getpixel((5, 5)) == (0, 128, 0)


def test_bad_stamps_become_problems_naming_files(stamps: Path, tmp_path: Path):
    ds = load_tuxpaint(stamps, render_dir=tmp_path / "rendered")
    text = "\n".join(map(str, ds.problems))
    assert f"{stamps / 'food/bad_utf8.txt'}:1: not UTF-8" in text
    # one reason per bad file: line 1's decoding problem says why the stamp is skipped
    assert f"{stamps / 'food/bad_utf8.txt'}: no English caption" not in text
    assert f"{stamps / 'food/empty.txt'}: no English caption on line 1" in text
    assert f"{stamps / 'food/ghost.txt'}: no image (.png or .svg)" in text
    assert f"{stamps / 'animals/birds/owl.txt'}:3: not a 'lang.utf8=text' line" in text
    assert f"{stamps}: 1 PNG file(s) without a caption file (ignored)" in text
    assert "mirror" not in text and "orphan" not in text
    assert len(ds.problems) == 5


def test_svg_only_stamps_skipped_and_counted_without_render_dir(stamps: Path):
    ds = load_tuxpaint(stamps)
    assert [im.id for im in ds.images] == ["animals/cat"]
    assert any(
        p.message == "2 SVG-only stamp(s) not rasterised (no render folder given)"
        for p in ds.problems
    )


def test_render_cache_is_reused_and_refreshed_when_svg_changes(stamps: Path, tmp_path: Path):
    out = tmp_path / "rendered"
    load_tuxpaint(stamps, render_dir=out)
    owl_png = out / "animals/birds/owl.png"
    owl_png.write_bytes(b"cached")  # a reused cache file is returned as is
    load_tuxpaint(stamps, render_dir=out)
    assert owl_png.read_bytes() == b"cached"
    later = owl_png.stat().st_mtime + 10
    os.utime(stamps / "animals/birds/owl.svg", (later, later))
    load_tuxpaint(stamps, render_dir=out)
    assert PILImage.open(owl_png).size == (20, 10)
    assert sorted(p.name for p in out.rglob("*") if p.is_file()) == ["loaf.png", "owl.png"]


def test_broken_svg_is_a_problem(stamps: Path, tmp_path: Path):
    write_text(stamps / "food/loaf.svg", "<svg><unclosed")
    ds = load_tuxpaint(stamps, render_dir=tmp_path / "rendered")
    assert "food/loaf" not in {im.id for im in ds.images}
    assert any(
        p.where == str(stamps / "food/loaf.svg") and "cannot rasterise SVG" in p.message
        for p in ds.problems
    )


def test_stamps_dir_accepts_package_root_or_stamps_folder(stamps: Path):
    assert stamps_dir(stamps.parents[3]) == stamps
    assert stamps_dir(stamps) == stamps


def test_fetch_is_idempotent_and_needs_no_tools_when_unpacked(tmp_path, monkeypatch):
    stamps = tmp_path / "tuxpaint/usr/share/tuxpaint/stamps"
    stamps.mkdir(parents=True)
    monkeypatch.setenv("PATH", "")
    assert fetch_tuxpaint(tmp_path) == stamps


def test_fetch_without_apt_get_says_so(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(RuntimeError, match="apt-get not found"):
        fetch_tuxpaint(tmp_path / "data")
    assert not (tmp_path / "data/tuxpaint").exists()


def _build_deb(folder: Path, tree: Path) -> Path:
    (tree / "DEBIAN").mkdir(parents=True)
    write_text(
        tree / "DEBIAN/control",
        "Package: tuxpaint-stamps-default\nVersion: 1.0\nArchitecture: all\n"
        "Maintainer: test <t@example.org>\nDescription: test\n",
    )
    deb = folder / "stamps.deb"
    subprocess.run(["dpkg-deb", "--build", str(tree), str(deb)], check=True, capture_output=True)
    return deb


@pytest.mark.skipif(shutil.which("dpkg-deb") is None, reason="needs dpkg-deb")
def test_fetch_unpacks_a_local_deb(tmp_path: Path):
    tree = tmp_path / "tree"
    make_stamps(tree)
    deb = _build_deb(tmp_path, tree)
    stamps = fetch_tuxpaint(tmp_path / "data", deb=deb)
    assert stamps == tmp_path / "data/tuxpaint/usr/share/tuxpaint/stamps"
    assert (stamps / "animals/cat.txt").read_text().startswith("A cat.")
    assert [p.name for p in (tmp_path / "data").iterdir()] == ["tuxpaint"]  # no temp left


@pytest.mark.skipif(shutil.which("dpkg-deb") is None, reason="needs dpkg-deb")
def test_fetch_refuses_a_deb_without_stamps(tmp_path: Path):
    tree = tmp_path / "tree"
    write_png(tree / "usr/share/other/x.png")
    deb = _build_deb(tmp_path, tree)
    with pytest.raises(RuntimeError, match="no usr/share/tuxpaint/stamps inside"):
        fetch_tuxpaint(tmp_path / "data", deb=deb)
    assert list((tmp_path / "data").iterdir()) == []


@pytest.mark.skipif(not os.environ.get("XMODAL_TUXPAINT_DIR"), reason="XMODAL_TUXPAINT_DIR unset")
def test_real_tuxpaint_tree():
    ds = load_tuxpaint(os.environ["XMODAL_TUXPAINT_DIR"])  # PNG stamps only: no rendering
    assert 700 <= len(ds.images) <= 900
    assert all(len(c.text) > 2 for c in ds.captions)
    languages = sorted(len(t) for t in ds.translations.values())
    assert languages[len(languages) // 2] >= 40
    assert any("SVG-only" in p.message for p in ds.problems)
