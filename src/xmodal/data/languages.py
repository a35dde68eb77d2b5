"""Captions in other languages: a dataset's translations (Tux Paint ships dozens per stamp)
turned into captions, for multilingual retrieval.

`in_languages(dataset, ["en", "fr"])` keeps each English caption (id unchanged) and adds its
French translation as a caption of the same image, with id "<caption id>#fr". "en" stands for
the dataset's own captions; other tags are the translations' own (fr, pt_BR, ca@valencia, ...).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

from xmodal.data.dataset import Caption, Dataset, Problem

#: the tag of the dataset's own captions
SOURCE_LANGUAGE = "en"
_SEP = "#"


def caption_language(caption_id: str) -> str:
    """The language tag of a caption made by `in_languages` ("en" for the source captions)."""
    _, sep, lang = caption_id.rpartition(_SEP)
    return lang if sep else SOURCE_LANGUAGE


def language_counts(dataset: Dataset) -> Counter[str]:
    """Captions available per language: the source captions and each translation tag."""
    counts = Counter({SOURCE_LANGUAGE: len(dataset.captions)})
    counts.update(lang for c in dataset.captions for lang in dataset.translations.get(c.id, {}))
    return counts


def in_languages(dataset: Dataset, languages: Sequence[str]) -> Dataset:
    """The dataset with its captions in `languages` (in that order per caption).

    A caption without a translation into a listed language has no caption in it; the count
    is one problem per language. A language no caption has is an error naming the known ones.
    """
    if isinstance(languages, str) or not languages:
        raise ValueError(f"languages: give a non-empty list of language tags, got {languages!r}")
    counts = language_counts(dataset)
    unknown = [lang for lang in languages if lang not in counts]
    if unknown:
        known = ", ".join(sorted(counts))
        raise ValueError(f"languages: no caption in {unknown} (known: {known})")
    captions: list[Caption] = []
    translations: dict[str, dict[str, str]] = {}
    for c in dataset.captions:
        for lang in languages:
            text = (
                c.text if lang == SOURCE_LANGUAGE else dataset.translations.get(c.id, {}).get(lang)
            )
            if text is None:
                continue
            cid = c.id if lang == SOURCE_LANGUAGE else f"{c.id}{_SEP}{lang}"
            captions.append(Caption(cid, text, c.image_id))
            if c.id in dataset.translations:
                translations[cid] = dataset.translations[c.id]
    problems = list(dataset.problems)
    for lang in languages:
        if missing := len(dataset.captions) - counts[lang]:
            problems.append(
                Problem(f"{dataset.name}#{lang}", f"{missing} caption(s) have no '{lang}' text")
            )
    return Dataset(
        dataset.name, dataset.images, captions, problems, translations, dataset.given_splits
    )
