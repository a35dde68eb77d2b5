"""The on-disk listing: the rows, order, problems and fingerprint of the in-memory dataset, read a
range of images at a time (its bounded memory is tested with the embed driver, test_scale)."""

from pathlib import Path

import pytest
from data_fixtures import write_png, write_text

from xmodal.data import Listing, load_dataset, open_listing
from xmodal.data.manifest import stream_manifest


def test_a_streamed_manifest_groups_each_images_captions_in_image_order(tmp_path: Path):
    for name in ("a.png", "b.png", "c.png"):
        write_png(tmp_path / name)
    path = write_text(
        tmp_path / "m.jsonl",
        '{"image": "a.png", "caption": "A one.", "caption_id": "1"}\n'
        '{"image": "b.png", "caption": "B one.", "caption_id": "2"}\n'
        '{"image": "gone.png", "caption": "Nowhere.", "caption_id": "3"}\n'
        '{"image": "a.png", "caption": "A two, rows apart.", "caption_id": "4"}\n'
        '{"image": "c.png", "caption": "Same id twice.", "caption_id": "2"}\n'
        '{"image": "c.png", "caption": "C one.", "caption_id": "5"}\n',
    )
    with stream_manifest(path, listing=tmp_path / "listing.sqlite") as listing:
        assert (tmp_path / "listing.sqlite").is_file()
        assert (listing.n_images, listing.n_captions) == (3, 4)
        assert [i for i, _ in listing.images()] == ["a.png", "b.png", "c.png"]
        assert list(listing.captions_of(0, 2)) == [
            ("1", "A one.", "a.png"),
            ("4", "A two, rows apart.", "a.png"),
            ("2", "B one.", "b.png"),
        ]
        assert list(listing.captions_of(2, 3)) == [("5", "C one.", "c.png")]
        assert [str(p) for p in listing.problems] == [
            f"{path}:5: duplicate caption_id '2' (skipped)",
            f"{tmp_path / 'gone.png'}: image file not found (image 'gone.png' and 1 caption(s) "
            "skipped)",
        ]
        dataset = listing.to_dataset()
        assert [c.id for c in dataset.captions] == ["1", "2", "4", "5"]  # row order
        assert listing.fingerprint() == dataset.fingerprint()
    assert not (tmp_path / "listing.sqlite").exists()


def test_a_loaded_dataset_copied_keeps_its_fingerprint(tmp_path: Path):
    try:
        dataset = load_dataset("tuxpaint")
    except FileNotFoundError as e:
        pytest.skip(f"Tux Paint stamps not fetched: {e}")
    with open_listing("tuxpaint", path=tmp_path / "l.sqlite") as listing:
        assert listing.fingerprint() == dataset.fingerprint()
        counts = (len(dataset.images), len(dataset.captions))
        assert (listing.n_images, listing.n_captions) == counts
        first = dataset.images[0]
        assert next(listing.images()) == (first.id, str(first.path))


def test_reading_before_finish_is_refused():
    listing = Listing("x")
    with pytest.raises(RuntimeError, match="call finish"):
        next(listing.images())
