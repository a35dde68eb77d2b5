"""Per-language retrieval, for datasets whose captions come in several languages (the dataset
option `languages`, e.g. Tux Paint's translations): which languages train the aligners, and
text -> image scores per language of the test split.

Training languages. A dataset entry's `train_languages` lists variants, and every aligner is
fitted once per variant, on the train captions in its languages (and the images they describe):

    train_languages: [en, all]          # English only, then every loaded language
    train_languages: [[en, fr], all]    # English and French together, then all

A variant is "all" (every language of `options.languages`: the default), one tag, or a list of
tags. Its name ("en", "en+fr", "all") is the rows' `train_languages` column and, with more than
one variant, a setting of the aligner's label ("cca[train_languages=en]"), so that tables and
findings keep the variants apart as they keep the settings of a `grid` apart. The split is made
by image before any language is chosen: every variant has the same validation and test split,
each with every loaded language (validation, where an aligner selects on it, included). With
`en` among the loaded languages it is also the split of the English-only dataset, as every
Tux Paint stamp has its English caption: the images do not depend on the other languages.

Per-language scores. A fit's saved test ranks (ranks/) hold, for every test caption, the rank
of its image among all test images; the captions of one language give that language's
text -> image R@K, MRR, nDCG@10 and mAP@10, with 95% bootstrap CIs over its captions. The
gallery is every test image, whatever the language. Languages with fewer than
`min_language_captions` test captions (default 50) are left out, and listed with their count.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from xmodal.data.languages import caption_language
from xmodal.embeddings import Embedded
from xmodal.experiments.run_folder import RunFolder
from xmodal.retrieval.compare import paired_difference
from xmodal.retrieval.evaluate import PerQuery, text_to_image_scores

if TYPE_CHECKING:
    from xmodal.data.dataset import Dataset
    from xmodal.experiments.config import AlignerConfig, DatasetConfig
    from xmodal.experiments.pipeline import EmbeddedDataset

ALL = "all"
COLUMN = "train_languages"
MIN_CAPTIONS = 50
#: the columns of a results row that name its fit in languages.csv
FIT_KEYS = ("dataset", "encoder", "split_seed", "aligner", "metric", "seed", COLUMN)
#: what a line of languages.csv is averaged over (seeds, splits) to make a summary line
SUMMARY_KEYS = ("dataset", "encoder", "aligner", "metric", COLUMN, "language")
WORST = 3  # languages named where an aligner transfers worst
GALLERY = "every test image, in any language"


@dataclass(frozen=True)
class TrainVariant:
    name: str  # "all", "en", "en+fr"
    languages: frozenset[str] | None  # None: every loaded language


def check_train_languages(variants: Sequence[str | list[str]] | None, loaded: Any) -> None:
    """A ValueError naming the item of `train_languages` that is not a loaded language."""
    if variants is None:
        return
    if not isinstance(loaded, list) or not loaded:
        raise ValueError(
            "train_languages needs options.languages: the list of caption languages to load"
        )
    if not variants:
        raise ValueError("train_languages: give at least one variant, e.g. [en, all]")
    names = []
    for i, item in enumerate(variants):
        tags = [item] if isinstance(item, str) else item
        if not tags:
            raise ValueError(f"train_languages.{i}: an empty list of languages")
        if item != ALL and ALL in tags:
            raise ValueError(f"train_languages.{i}: {ALL!r} stands alone, not in a list")
        if unknown := [t for t in tags if t not in loaded and t != ALL]:
            raise ValueError(
                f"train_languages.{i}: {', '.join(map(repr, unknown))} is not a loaded language "
                f"(options.languages: {', '.join(map(str, loaded))}; or {ALL!r})"
            )
        names.append(_name(item))
    if twice := [n for n in names if names.count(n) > 1]:
        raise ValueError(f"train_languages: the variant {twice[0]!r} is listed twice")


def _name(item: str | list[str]) -> str:
    return item if isinstance(item, str) else "+".join(item)


def train_variants(dcfg: DatasetConfig) -> list[TrainVariant]:
    """The dataset's training-language variants (one, "all", by default)."""
    return [
        TrainVariant(_name(v), None if v == ALL else frozenset([v] if isinstance(v, str) else v))
        for v in dcfg.train_languages or [ALL]
    ]


def variant_label(label: str, variant: str) -> str:
    """An aligner label with a variant as one more setting: "cca[train_languages=en]",
    "mlp[loss=hinge, train_languages=en]"."""
    setting = f"{COLUMN}={variant}"
    return f"{label[:-1]}, {setting}]" if label.endswith("]") else f"{label}[{setting}]"


def base_label(label: str, variant: str) -> str:
    """The aligner label without its variant setting (`variant_label` undone)."""
    setting = f"{COLUMN}={variant}"
    for suffix, end in ((f", {setting}]", "]"), (f"[{setting}]", "")):
        if label.endswith(suffix):
            return label[: -len(suffix)] + end
    return label


def variant_aligners(
    aligners: Iterable[AlignerConfig], variants: Sequence[TrainVariant] | None
) -> list[tuple[AlignerConfig, str | None]]:
    """Each aligner entry once per variant, relabelled when there are several (variant None:
    a dataset of one language)."""
    if not variants:
        return [(a, None) for a in aligners]
    if len(variants) == 1:
        return [(a, variants[0].name) for a in aligners]
    return [
        (a.model_copy(update={"name": variant_label(a.label, v.name)}), v.name)
        for a in aligners
        for v in variants
    ]


def language_tags(dataset: Dataset) -> np.ndarray:
    """The language tag of each caption of a dataset loaded with the `languages` option."""
    return np.array([caption_language(c.id) for c in dataset.captions], dtype=str)


@dataclass(frozen=True)
class CaptionLanguages:
    """The languages of one prepared dataset: each variant's train set, and the language of
    every test caption (test order)."""

    variants: list[TrainVariant]
    train: dict[str, Embedded]
    test: np.ndarray
    min_captions: int


def caption_languages(
    dcfg: DatasetConfig, parts: Mapping[str, EmbeddedDataset]
) -> CaptionLanguages | None:
    """None for a dataset loaded without `languages` (its captions are the source's own)."""
    if "languages" not in dcfg.options:
        return None
    train, tags = parts["train"].all, language_tags(parts["train"].dataset)
    variants, sets = train_variants(dcfg), {}
    for v in variants:
        sets[v.name] = _restricted(train, tags, v.languages)
        if not len(sets[v.name].texts):
            raise ValueError(f"{dcfg.label}: train_languages {v.name!r}: no train caption in it")
    test = language_tags(parts["test"].dataset)
    return CaptionLanguages(variants, sets, test, dcfg.min_language_captions or MIN_CAPTIONS)


def _restricted(data: Embedded, tags: np.ndarray, languages: frozenset[str] | None) -> Embedded:
    """The captions in `languages` (all when None) and the images they describe."""
    if languages is None:
        return data
    rows = np.flatnonzero(np.isin(tags, sorted(languages)))
    images, owner = np.unique(data.caption_image[rows], return_inverse=True)
    return Embedded(data.images[images], data.texts[rows], owner.astype(np.int64))


def queries_in(per: PerQuery, mask: np.ndarray) -> PerQuery:
    """The text->image queries of `per` selected by `mask`, over the images they describe (a
    paired text->image comparison reads only these; `i2t` keeps those images' own ranks)."""
    images, owner = np.unique(per.caption_image[mask], return_inverse=True)
    return PerQuery(per.t2i[mask], per.i2t[images], owner.astype(np.int64))


@dataclass
class LanguageStudy:
    """The per-language scores of a run, gathered one prepared dataset at a time; written to
    languages.csv / languages.json and stated in findings.md."""

    run: RunFolder
    ks: list[int]
    lines: list[dict[str, Any]] = field(default_factory=list)
    left_out: list[dict[str, Any]] = field(default_factory=list)
    #: per (dataset, encoder, split seed): the language of each test caption, the variants
    tests: dict[tuple, tuple[np.ndarray, list[TrainVariant]]] = field(default_factory=dict)

    def add(
        self, rows: list[dict[str, Any]], context: Mapping[str, Any], langs: CaptionLanguages
    ) -> None:
        """The per-language lines of the fits `rows` of one prepared dataset (`context`); no
        line when its test split holds one language."""
        where = {k: context[k] for k in ("dataset", "encoder", "split_seed") if k in context}
        tags, counts = np.unique(langs.test, return_counts=True)
        if len(tags) < 2:
            return
        self.tests[_key(where)] = (langs.test, langs.variants)
        reported = [str(t) for t, n in zip(tags, counts, strict=True) if n >= langs.min_captions]
        self.left_out += [
            {**where, "language": str(t), "n_captions": int(n), "min_captions": langs.min_captions}
            for t, n in zip(tags, counts, strict=True)
            if n < langs.min_captions
        ]
        for row in rows:
            if row.get("status", "ok") == "ok":  # a failed fit has no ranks
                self.lines += self._fit_lines(row, langs.test, reported)

    def _fit_lines(
        self, row: Mapping[str, Any], test: np.ndarray, reported: list[str]
    ) -> list[dict[str, Any]]:
        per = self.run.read_ranks(row["model"])
        if len(per.t2i) != len(test):
            raise ValueError(
                f"{self.run.ranks(row['model'])}: ranks of {len(per.t2i)} captions, but the "
                f"test split holds {len(test)}"
            )
        fit = {k: row[k] for k in FIT_KEYS if k in row}
        out = []
        for tag in reported:
            mask = test == tag
            out.append(
                {
                    **fit,
                    "language": tag,
                    "n_captions": int(mask.sum()),
                    "n_images": len(np.unique(per.caption_image[mask])),
                    "gallery_images": len(per.i2t),
                    **text_to_image_scores(per.t2i[mask], self.ks),
                    "model": row["model"],
                }
            )
        return out

    def write(self) -> None:
        """languages.csv and languages.json, when some test split held several languages."""
        if not self.tests:
            return
        self.run.write_csv(self.run.languages_csv, self.lines)
        self.run.write_json(
            self.run.languages_json,
            {"gallery": GALLERY, "lines": self.lines, "left_out": self.left_out},
        )

    def findings(self) -> str:
        """The findings.md section: per configuration, English-only (or any variant) against
        all-language training over the reported languages, with paired tests; "" when no
        test split held several languages."""
        if not self.tests:
            return ""
        score = f"t2i_R@{min(self.ks)}"
        lines = [
            "",
            "## Per caption language (text -> image)",
            "",
            f"{score} per language of the test split ({self.run.languages_csv.name}), the "
            f"gallery being {GALLERY}; paired tests as above, over the test images that have "
            "a caption in the languages compared.",
        ]
        if self.left_out:
            lines += ["", f"Left out (too few test captions): {_left_out_words(self.left_out)}."]
        if not self.lines:
            lines += ["", "No language has enough test captions to be reported."]
        lines.append("")
        groups: dict[tuple, dict[str, list[dict[str, Any]]]] = defaultdict(dict)
        for line in self.lines:
            variant = line.get(COLUMN, ALL)
            key = (*_key(line), base_label(line["aligner"], variant), line["metric"])
            groups[key].setdefault(variant, []).append(line)
        for key, by_variant in groups.items():
            lines += [f"- {s}" for s in self._statements(key, by_variant, score)]
        return "\n".join(lines) + "\n"

    def _statements(
        self, key: tuple, by_variant: dict[str, list[dict[str, Any]]], score: str
    ) -> list[str]:
        test, variants = self.tests[key[:3]]
        trained = {v.name: v.languages for v in variants}
        dataset, encoder, split_seed, aligner, metric = key
        where = f"{aligner} / {metric} on {dataset} / {encoder}"
        where += "" if split_seed is None else f" (split seed {split_seed})"
        means = {v: _per_language(lines, score) for v, lines in by_variant.items()}
        out = []
        for name, means_v in means.items():
            if name == ALL:
                continue
            text = f"{where}, trained on {name}: mean {score} over {len(means_v)} languages "
            text += f"{np.mean(list(means_v.values())):.1f}"
            if ALL in means:
                shared = [lang for lang in means_v if lang in means[ALL]]
                pooled = self._paired(by_variant[ALL], by_variant[name], test, shared, score)
                text += (
                    f", trained on all {np.mean([means[ALL][g] for g in shared]):.1f} (all minus "
                    f"{name}, pooled over these languages' test captions: {_long(pooled)})"
                )
            own = trained.get(name) or frozenset()
            outside = sorted((g for g in means_v if g not in own), key=lambda g: means_v[g])
            if own and outside:
                inside = [means_v[g] for g in means_v if g in own]
                home = f" ({np.mean(inside):.1f} in {name})" if inside else ""
                worst = ", ".join(f"{g} {means_v[g]:.1f}" for g in outside[:WORST])
                text += f". Outside {name}{home} it does worst in {worst}"
                if ALL in means:
                    changes = ", ".join(
                        f"{g} "
                        + _short(self._paired(by_variant[ALL], by_variant[name], test, [g], score))
                        for g in outside[:WORST]
                    )
                    text += f"; training on all changes these by {changes}"
            out.append(text + ".")
        return out

    def _paired(
        self,
        a: list[dict[str, Any]],
        b: list[dict[str, Any]],
        test: np.ndarray,
        languages: list[str],
        score: str,
    ) -> dict[str, float]:
        """The paired test of fits `a` minus fits `b` on the test captions in `languages`."""
        mask = np.isin(test, languages)
        ranks = [
            [queries_in(self.run.read_ranks(m), mask) for m in dict.fromkeys(x["model"] for x in f)]
            for f in (a, b)
        ]
        return paired_difference(ranks[0], ranks[1], score, self.ks)


def _long(t: Mapping[str, float]) -> str:
    noise = "within the noise" if t["ci_lo"] <= 0 <= t["ci_hi"] else "beyond the noise"
    return (
        f"{t['difference']:+.1f}, 95% CI [{t['ci_lo']:+.1f}, {t['ci_hi']:+.1f}], "
        f"p = {t['p_value']:.2g} over {t['n_images']} images, {noise}"
    )


def _short(t: Mapping[str, float]) -> str:
    return f"{t['difference']:+.1f} [{t['ci_lo']:+.1f}, {t['ci_hi']:+.1f}], p = {t['p_value']:.2g}"


def _key(row: Mapping[str, Any]) -> tuple:
    return (row["dataset"], row["encoder"], row.get("split_seed"))


def _per_language(lines: list[dict[str, Any]], score: str) -> dict[str, float]:
    """The mean `score` of each language over the fits (seeds) of one configuration."""
    by: dict[str, list[float]] = defaultdict(list)
    for line in lines:
        by[line["language"]].append(line[score])
    return {lang: float(np.mean(v)) for lang, v in by.items()}


def _left_out_words(left_out: list[dict[str, Any]]) -> str:
    """ "ku (12), ta (9) of 50 needed" per distinct language and count."""
    seen = dict.fromkeys((x["language"], x["n_captions"], x["min_captions"]) for x in left_out)
    return ", ".join(f"{lang} ({n} < {least})" for lang, n, least in seen)


def summarize_lines(lines: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Per configuration x language: the mean of each number over its fits (seeds, splits)."""
    groups: dict[tuple, list[Mapping[str, Any]]] = defaultdict(list)
    for line in lines:
        groups[tuple(line.get(k) for k in SUMMARY_KEYS)].append(line)
    out = []
    for key, members in groups.items():
        entry: dict[str, Any] = dict(zip(SUMMARY_KEYS, key, strict=True)) | {"fits": len(members)}
        for col, value in members[0].items():
            if col in entry or col in FIT_KEYS or not _number(value):
                continue
            entry[col] = float(np.mean([m[col] for m in members]))
        out.append(entry)
    return out


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)
