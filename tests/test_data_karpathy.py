import json
from pathlib import Path

import pytest
from data_fixtures import write_png, write_text

from xmodal.data.dataset import split_ids
from xmodal.data.karpathy import load_karpathy


def _image(name, split, sentids, imgid, **extra):
    sentences = [{"raw": f" {name} caption {s}. ", "sentid": s, "imgid": imgid} for s in sentids]
    return {"filename": name, "split": split, "sentids": sentids, "imgid": imgid,
            "sentences": sentences, **extra}  # fmt: skip


@pytest.fixture
def flickr(tmp_path: Path) -> Path:
    """Five Flickr-style images: train, restval, val, test, test; one file missing."""
    images = tmp_path / "flickr30k-images"
    for name in ("10.jpg", "11.jpg", "12.jpg", "13.jpg"):
        write_png(images / name)
    records = [
        _image("10.jpg", "train", [0, 1], 0),
        _image("11.jpg", "restval", [2, 3], 1),
        _image("12.jpg", "val", [4], 2),
        _image("13.jpg", "test", [5, 6], 3),
        _image("14.jpg", "test", [7], 4),  # no such file
    ]
    return write_text(
        tmp_path / "dataset_flickr30k.json",
        json.dumps({"images": records, "dataset": "flickr30k"}),
    )


def test_flickr_images_captions_and_given_splits(flickr: Path):
    ds = load_karpathy(flickr, images=flickr.parent / "flickr30k-images")
    assert ds.name == "flickr30k"
    assert [im.id for im in ds.images] == ["10", "11", "12", "13"]
    assert ds.images[0].path == flickr.parent / "flickr30k-images/10.jpg"
    assert [(c.id, c.image_id) for c in ds.captions] == [
        ("0", "10"), ("1", "10"), ("2", "11"), ("3", "11"), ("4", "12"), ("5", "13"), ("6", "13")
    ]  # fmt: skip
    assert ds.captions[0].text == "10.jpg caption 0."
    assert ds.given_splits == {"10": "train", "11": "train", "12": "val", "13": "test"}
    assert [str(p) for p in ds.problems] == [
        f"{flickr.parent / 'flickr30k-images/14.jpg'}: image file not found "
        "(image '14' and 1 caption(s) skipped)"
    ]


def test_split_selection_loads_only_that_split(flickr: Path):
    root = flickr.parent / "flickr30k-images"
    test = load_karpathy(flickr, images=root, split="test")
    assert test.name == "flickr30k-test"
    assert [im.id for im in test.images] == ["13"]
    train_val = load_karpathy(flickr, images=root, split=["train", "val"])
    assert [im.id for im in train_val.images] == ["10", "11", "12"]
    with pytest.raises(ValueError, match=r"unknown split\(s\) \['restval'\]"):
        load_karpathy(flickr, images=root, split="restval")


def test_split_ids_honours_given_splits(flickr: Path):
    ds = load_karpathy(flickr, images=flickr.parent / "flickr30k-images")
    splits = split_ids(ds, {"train": 0.5, "val": 0.25, "test": 0.25}, seed=123)
    assert splits == {"train": ["10", "11"], "val": ["12"], "test": ["13"]}


def test_coco_style_ids_and_filepaths(tmp_path: Path):
    write_png(tmp_path / "val2014/COCO_val2014_000000000042.jpg")
    record = _image("COCO_val2014_000000000042.jpg", "test", [9], 0, filepath="val2014", cocoid=42)
    path = write_text(tmp_path / "dataset_coco.json", json.dumps({"images": [record]}))
    ds = load_karpathy(path)  # images default to the JSON's folder
    assert [(im.id, im.path) for im in ds.images] == [
        ("42", tmp_path / "val2014/COCO_val2014_000000000042.jpg")
    ]
    assert ds.name == "dataset_coco" and ds.given_splits == {"42": "test"}


def test_bad_records_are_problems_naming_the_key(tmp_path: Path):
    for name in ("a.jpg", "b.jpg", "c.jpg"):
        write_png(tmp_path / name)
    records = [
        _image("a.jpg", "train", [1, 2], 0),
        {"split": "train", "sentences": []},
        _image("b.jpg", "holiday", [3], 2),
        _image("a.jpg", "val", [4], 3),
        _image("c.jpg", "val", [1, 5, 6], 4),
    ]
    records[4]["sentences"][2]["raw"] = "   "
    del records[4]["sentences"][1]["sentid"]
    path = write_text(tmp_path / "k.json", json.dumps({"images": records}))
    ds = load_karpathy(path)
    assert [im.id for im in ds.images] == ["a"]  # c lost every caption
    assert [c.id for c in ds.captions] == ["1", "2"]
    assert [str(p) for p in ds.problems] == [
        f"{path}#images[1]: missing 'filename' (skipped)",
        f"{path}#images[2]: unknown split 'holiday' (skipped)",
        f"{path}#images[3]: duplicate image id 'a' (skipped)",
        f"{path}#images[4].sentences[0]: duplicate sentid '1' (skipped)",
        f"{path}#images[4].sentences[1]: missing 'sentid' (skipped)",
        f"{path}#images[4].sentences[2]: empty caption (skipped)",
        f"{tmp_path / 'c.jpg'}: image 'c' has no caption (skipped)",
    ]


def test_unreadable_files_raise_naming_the_file(tmp_path: Path):
    broken = write_text(tmp_path / "broken.json", '{"images": [\n{"filename": }]}')
    with pytest.raises(ValueError, match=r"broken\.json:2:\d+: not valid JSON"):
        load_karpathy(broken)
    other = write_text(tmp_path / "other.json", "[1, 2]")
    with pytest.raises(ValueError, match="no 'images' list .* Karpathy split file"):
        load_karpathy(other)
    latin1 = write_text(tmp_path / "latin1.json", b'{"images": [], "x": "caf\xe9"}')
    with pytest.raises(ValueError, match=r"latin1\.json: not UTF-8"):
        load_karpathy(latin1)
