import json
from pathlib import Path

import pytest
from data_fixtures import write_png, write_text

from xmodal.data.manifest import load_manifest


@pytest.fixture
def pics(tmp_path: Path) -> Path:
    for name in ("a.png", "b.png", "sub/c.png"):
        write_png(tmp_path / "pics" / name)
    return tmp_path / "pics"


def test_csv_rows_share_images_and_paths_resolve_against_the_images_root(pics: Path):
    path = write_text(
        pics.parent / "m.csv",
        'image,caption,caption_id\na.png,"A red, square thing.",x1\na.png,Red again.,x2\n'
        f"sub/c.png,Third.,x3\n{pics / 'b.png'},Absolute path.,x4\n",
    )
    ds = load_manifest(path, images=pics)
    assert ds.name == "m" and ds.problems == []
    assert [(im.id, im.path) for im in ds.images] == [
        ("a.png", pics / "a.png"),
        ("sub/c.png", pics / "sub/c.png"),
        (str(pics / "b.png"), pics / "b.png"),
    ]
    assert [(c.id, c.text, c.image_id) for c in ds.captions] == [
        ("x1", "A red, square thing.", "a.png"),
        ("x2", "Red again.", "a.png"),
        ("x3", "Third.", "sub/c.png"),
        ("x4", "Absolute path.", str(pics / "b.png")),
    ]


def test_csv_bad_rows_are_problems_and_neighbours_kept(pics: Path):
    path = write_text(
        pics / "m.csv",
        b"image,caption,image_id\n"
        b"a.png,First.,A\n"
        b"b.png\n"  # 3: missing caption
        b"b.png,One,B,extra\n"  # 4
        b"b.png,Caf\xe9.,B\n"  # 5: not UTF-8
        b"b.png,,B\n"  # 6: empty caption
        b",No image.,C\n"  # 7
        b"b.png,Clashing id.,A\n"  # 8: A is a.png
        b"gone.png,Missing file.,G\n"  # 9
        b"b.png,Second.,B\n",  # 10
    )
    ds = load_manifest(path)  # relative to the manifest's folder
    assert [(c.id, c.text, c.image_id) for c in ds.captions] == [
        ("m.csv:2", "First.", "A"),
        ("m.csv:10", "Second.", "B"),
    ]
    assert [str(p) for p in ds.problems] == [
        f"{path}:3: missing 'caption' (skipped)",
        f"{path}:4: more fields than the header (an unquoted comma?) (skipped)",
        f"{path}:5: caption is not valid UTF-8 (surrogates not allowed) (skipped)",
        f"{path}:6: empty caption (skipped)",
        f"{path}:7: 'image' is not a path ('') (skipped)",
        f"{path}:8: image_id 'A' already names {pics / 'a.png'} (skipped)",
        f"{pics / 'gone.png'}: image file not found (image 'G' and 1 caption(s) skipped)",
    ]


def test_csv_without_required_columns_is_refused(tmp_path: Path):
    path = write_text(tmp_path / "m.csv", "file,text\na.png,x\n")
    with pytest.raises(ValueError, match=r"m\.csv: needs 'image' and 'caption' columns"):
        load_manifest(path)


def test_jsonl_malformed_lines_are_problems(pics: Path):
    rows = [
        json.dumps({"image": "a.png", "caption": "First.", "caption_id": 7}),
        '{"image": "b.png", "caption": "broken"',
        "",
        "[1, 2]",
        json.dumps({"image": "b.png"}),
        json.dumps({"image": "b.png", "caption": "Dup id.", "caption_id": "7"}),
        json.dumps({"image": "b.png", "caption": "Second.", "image_id": 3}),
    ]
    path = write_text(pics / "m.jsonl", "\n".join(rows) + "\n")
    ds = load_manifest(path)
    assert [(c.id, c.text, c.image_id) for c in ds.captions] == [
        ("7", "First.", "a.png"),
        ("m.jsonl:7", "Second.", "3"),
    ]
    assert [str(p) for p in ds.problems] == [
        f"{path}:2: not valid JSON (Expecting ',' delimiter, column 39) (skipped)",
        f"{path}:4: not a JSON object (list) (skipped)",
        f"{path}:5: missing 'caption' (skipped)",
        f"{path}:6: duplicate caption_id '7' (skipped)",
    ]


def test_jsonl_non_utf8_line_is_a_problem(pics: Path):
    path = write_text(
        pics / "m.jsonl",
        b'{"image": "a.png", "caption": "caf\xe9"}\n{"image": "a.png", "caption": "ok"}\n',
    )
    ds = load_manifest(path)
    assert [c.text for c in ds.captions] == ["ok"]
    assert [p.where for p in ds.problems] == [f"{path}:1"]
    assert ds.problems[0].message.startswith("not UTF-8")


def test_unknown_manifest_suffix(tmp_path: Path):
    with pytest.raises(ValueError, match=r"must be \.csv or \.jsonl"):
        load_manifest(write_text(tmp_path / "m.txt", "x"))
