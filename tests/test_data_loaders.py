import json
from pathlib import Path

import pytest
from data_fixtures import make_stamps, write_png, write_text

from xmodal.data import Caption, Dataset, Image, Problem, describe, load_dataset, split_ids


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch) -> Path:
    make_stamps(tmp_path / "data/tuxpaint")
    monkeypatch.setenv("XMODAL_DATA", str(tmp_path / "data"))
    return tmp_path / "data"


def test_plain_tuxpaint_reads_the_data_root_and_renders_there(data_dir: Path):
    ds = load_dataset("tuxpaint")
    assert [im.id for im in ds.images] == ["animals/birds/owl", "animals/cat", "food/loaf"]
    assert ds.images[0].path == data_dir / "tuxpaint-rendered/animals/birds/owl.png"
    same = load_dataset(f"tuxpaint:{data_dir / 'tuxpaint'}")
    assert same.fingerprint() == ds.fingerprint()


def test_missing_default_tuxpaint_says_how_to_fetch(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("XMODAL_DATA", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="xmodal data fetch tuxpaint"):
        load_dataset("tuxpaint")


def test_each_format_is_dispatched(tmp_path: Path):
    write_png(tmp_path / "imgs/a.png")
    write_text(tmp_path / "imgs/a.txt", "An A.\n")
    coco = {"images": [{"id": 1, "file_name": "a.png"}]}
    coco["annotations"] = [{"id": 5, "image_id": 1, "caption": "An A."}]
    write_text(tmp_path / "coco.json", json.dumps(coco))
    sentences = [{"raw": "An A.", "sentid": 5}]
    karpathy = {"images": [{"filename": "a.png", "split": "val", "sentences": sentences}]}
    write_text(tmp_path / "k.json", json.dumps(karpathy))
    write_text(tmp_path / "m.jsonl", json.dumps({"image": "a.png", "caption": "An A."}))
    loaded = {
        "folder": load_dataset(f"folder:{tmp_path / 'imgs'}"),
        "coco": load_dataset(f"coco:{tmp_path / 'coco.json'}", images=tmp_path / "imgs"),
        "karpathy": load_dataset(f"karpathy:{tmp_path / 'k.json'}", tmp_path / "imgs", split="val"),
        "manifest": load_dataset(f"manifest:{tmp_path / 'm.jsonl'}", images=tmp_path / "imgs"),
    }
    for name, ds in loaded.items():
        assert [im.path for im in ds.images] == [tmp_path / "imgs/a.png"], name
        assert [c.text for c in ds.captions] == ["An A."], name
        assert ds.problems == [], name
    assert loaded["karpathy"].given_splits == {"a": "val"}


def test_source_errors_are_clear(tmp_path: Path):
    with pytest.raises(ValueError, match="unknown data format 'parquet'.*tuxpaint, karpathy, coco"):
        load_dataset("parquet:x.pq")
    with pytest.raises(ValueError, match="coco needs a path: coco:PATH"):
        load_dataset("coco")
    with pytest.raises(FileNotFoundError, match="nowhere.json: not found"):
        load_dataset(f"coco:{tmp_path / 'nowhere.json'}")
    with pytest.raises(ValueError, match="folder takes no images root"):
        load_dataset(f"folder:{tmp_path}", images=tmp_path)
    with pytest.raises(TypeError, match="split"):
        load_dataset(f"folder:{tmp_path}", split="test")


def test_describe_counts_splits_translations_and_grouped_problems():
    images = [Image(f"i{k}", Path(f"i{k}.png")) for k in range(3)]
    captions = [Caption("c0", "x", "i0"), Caption("c1", "y", "i0"), Caption("c2", "z", "i1")]
    captions += [Caption(f"d{k}", "dup", "i9") for k in range(5)]  # no such image: 5 problems
    ds = Dataset(
        "toy",
        images,
        captions,
        [Problem("m.csv:3", "missing 'caption'")],
        translations={"c0": {"fr": "x", "de": "x"}, "c2": {"fr": "z"}},
        given_splits={"i0": "train", "i1": "test"},
    )
    text = describe(ds, examples=2, decode=False)  # no image files here
    assert f"dataset toy ({ds.fingerprint()})" in text
    assert "images: 2  captions: 3  captions/image: 1-2" in text
    assert "given splits: test 1, train 1" in text
    assert "translations: 2 captions, 2 languages" in text
    assert "problems: 7" in text
    assert (
        "    5 x no image with id '…'\n      caption d0: no image with id 'i9' (skipped)\n" in text
    )
    assert "      ... 3 more" in text
    assert "    1 x image '…' has no caption\n" in text
    assert "    1 x missing '…'\n      m.csv:3: missing 'caption' (skipped)" in text


def test_split_ids_is_deterministic_and_keeps_captions_of_an_image_together():
    images = [Image(f"im{k:02d}", Path(f"{k}.png")) for k in range(40)]
    captions = [Caption(f"{k}-{j}", "t", f"im{k:02d}") for k in range(40) for j in range(3)]
    ds = Dataset("toy", images, captions)
    fractions = {"train": 0.7, "val": 0.1, "test": 0.2}
    a = split_ids(ds, fractions, seed=7)
    assert a == split_ids(Dataset("toy", images[::-1], captions), fractions, seed=7)
    assert a != split_ids(ds, fractions, seed=8)
    assert [len(a[s]) for s in fractions] == [28, 4, 8]
    assert sorted(a["train"] + a["val"] + a["test"]) == sorted(im.id for im in images)
    test = ds.subset(a["test"])
    assert len(test.captions) == 3 * len(a["test"])


def test_describe_decodes_every_image_and_names_groups_readably(tmp_path):
    from data_fixtures import write_png, write_text

    from xmodal.data.folder import load_folder

    for name in ("good", "cut"):
        write_png(tmp_path / f"{name}.png", (64, 64))
        write_text(tmp_path / f"{name}.txt", f"a {name} picture\n")
    data = (tmp_path / "cut.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    write_png(tmp_path / "latin.png")
    write_text(tmp_path / "latin.txt", b"Caf\xe9\n")
    text = describe(load_folder(tmp_path))
    assert "images: 1  captions: 1" in text  # what a run would use
    assert "1 x not a readable image\n" in text and f"{tmp_path / 'cut.png'}: not a" in text
    assert "1 x not UTF-8\n" in text and "empty file" not in text
