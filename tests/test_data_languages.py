"""Translations as captions: the `languages` dataset option."""

from pathlib import Path

import pytest
from data_fixtures import make_stamps

from xmodal.data.languages import caption_language, in_languages, language_counts
from xmodal.data.loaders import load_dataset


@pytest.fixture
def stamps(tmp_path: Path) -> Path:
    return make_stamps(tmp_path / "pkg")


def test_captions_in_listed_languages_keep_their_image(stamps: Path, tmp_path: Path):
    ds = load_dataset(f"tuxpaint:{stamps}", render_dir=tmp_path / "r", languages=["en", "fr"])
    by_id = {c.id: c for c in ds.captions}
    assert by_id["animals/cat"].text == "A cat."  # English: the source caption, id unchanged
    assert by_id["animals/cat#fr"].text == "Un chat."
    assert by_id["animals/cat#fr"].image_id == "animals/cat"
    assert [caption_language(c.id) for c in ds.captions].count("fr") == 1
    assert len(ds.images) == 3  # owl and loaf have no French caption, but an English one
    missing = [p for p in ds.problems if p.where.endswith("#fr")]
    assert len(missing) == 1 and "2 caption(s) have no 'fr' text" in missing[0].message


def test_one_foreign_language_alone_drops_the_stamps_without_it(stamps: Path, tmp_path: Path):
    ds = load_dataset(f"tuxpaint:{stamps}", render_dir=tmp_path / "r", languages=["pt_BR"])
    assert [(c.id, c.text) for c in ds.captions] == [("animals/cat#pt_BR", "Um gato.")]
    assert [im.id for im in ds.images] == ["animals/cat"]
    assert {caption_language(c.id) for c in ds.captions} == {"pt_BR"}


def test_counts_and_unknown_language(stamps: Path, tmp_path: Path):
    ds = load_dataset(f"tuxpaint:{stamps}", render_dir=tmp_path / "r")
    counts = language_counts(ds)
    assert counts["en"] == 3 and counts["fr"] == 1 and counts["de"] == 1
    assert counts["ca@valencia"] == 1
    with pytest.raises(ValueError, match=r"no caption in \['xx'\].*known: .*pt_BR"):
        in_languages(ds, ["en", "xx"])
    with pytest.raises(ValueError, match="non-empty list"):
        in_languages(ds, "fr")


def test_without_the_option_the_dataset_is_unchanged(stamps: Path, tmp_path: Path):
    plain = load_dataset(f"tuxpaint:{stamps}", render_dir=tmp_path / "r")
    english = load_dataset(f"tuxpaint:{stamps}", render_dir=tmp_path / "r", languages=["en"])
    assert english.fingerprint() == plain.fingerprint()
