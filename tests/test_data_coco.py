import json
from pathlib import Path

import pytest
from data_fixtures import write_png, write_text

from xmodal.data.coco import load_coco


def _write(tmp_path: Path, data: dict) -> Path:
    return write_text(tmp_path / "annotations/captions_val2014.json", json.dumps(data))


def test_images_and_captions(tmp_path: Path):
    for i in (1, 2):
        write_png(tmp_path / f"val2014/im{i}.jpg")
    path = _write(
        tmp_path,
        {
            "images": [{"id": 1, "file_name": "im1.jpg"}, {"id": 2, "file_name": "im2.jpg"}],
            "annotations": [
                {"id": 10, "image_id": 2, "caption": "Two dogs.\n"},
                {"id": 11, "image_id": 1, "caption": "A cat."},
                {"id": 12, "image_id": 2, "caption": "Dogs on grass."},
            ],
        },
    )
    ds = load_coco(path, images=tmp_path / "val2014")
    assert ds.name == "captions_val2014" and ds.problems == []
    assert [(im.id, im.path.name) for im in ds.images] == [("1", "im1.jpg"), ("2", "im2.jpg")]
    assert [(c.id, c.text, c.image_id) for c in ds.captions] == [
        ("10", "Two dogs.", "2"),
        ("11", "A cat.", "1"),
        ("12", "Dogs on grass.", "2"),
    ]
    assert ds.caption_image.tolist() == [1, 0, 1]


def test_bad_records_are_problems_and_valid_ones_kept(tmp_path: Path):
    for name in ("a.jpg", "b.jpg", "c.jpg"):
        write_png(tmp_path / name)
    path = _write(
        tmp_path,
        {
            "images": [
                {"id": 1, "file_name": "a.jpg"},
                {"id": 1, "file_name": "b.jpg"},
                {"file_name": "c.jpg"},
                {"id": 4, "file_name": "gone.jpg"},
                {"id": 5, "file_name": "c.jpg"},
            ],
            "annotations": [
                {"id": 1, "image_id": 1, "caption": "A."},
                {"id": 1, "image_id": 1, "caption": "again"},
                {"id": 2, "image_id": 99, "caption": "nowhere"},
                {"id": 3, "image_id": 1, "caption": " "},
                {"id": 4, "image_id": 1, "caption": ["not", "text"]},
                {"id": 5, "image_id": 4, "caption": "lost with its image"},
                "nonsense",
            ],
        },
    )
    ds = load_coco(path, images=tmp_path)
    assert [im.id for im in ds.images] == ["1"] and [c.id for c in ds.captions] == ["1"]
    assert [str(p) for p in ds.problems] == [
        f"{path}#images[1]: duplicate image id '1' (skipped)",
        f"{path}#images[2]: missing 'id' (skipped)",
        f"{path}#annotations[1]: duplicate caption id '1' (skipped)",
        f"{path}#annotations[2]: image_id '99' is not in 'images' (skipped)",
        f"{path}#annotations[3]: empty caption (skipped)",
        f"{path}#annotations[4]: caption is not text (list) (skipped)",
        f"{path}#annotations[6]: not a JSON object (str) (skipped)",
        f"{tmp_path / 'gone.jpg'}: image file not found (image '4' and 1 caption(s) skipped)",
        f"{tmp_path / 'c.jpg'}: image '5' has no caption (skipped)",
    ]


def test_lone_surrogate_caption_is_a_problem(tmp_path: Path):
    write_png(tmp_path / "a.jpg")
    text = '{"images": [{"id": 1, "file_name": "a.jpg"}], "annotations": [\
{"id": 1, "image_id": 1, "caption": "ok"}, {"id": 2, "image_id": 1, "caption": "bad \\udc80"}]}'
    path = write_text(tmp_path / "captions.json", text)
    ds = load_coco(path, images=tmp_path)
    assert [c.id for c in ds.captions] == ["1"]
    assert [p.where for p in ds.problems] == [f"{path}#annotations[1]"]
    assert "not valid UTF-8" in ds.problems[0].message


def test_not_a_coco_file(tmp_path: Path):
    path = _write(tmp_path, {"images": []})
    with pytest.raises(ValueError, match="no 'annotations' list .* COCO captions file"):
        load_coco(path)
