"""k-fold cross-validation on the training images (`selection: {folds: k}`): folds by image,
CV scores that a manual k-fold computation reproduces, a test split that is never read,
selection by CV in the findings and the report, resumable fold fits, failed folds kept apart."""

import json
import re
from pathlib import Path

import numpy as np
import pytest

from xmodal.align.base import FitContext
from xmodal.align.registry import build_aligner
from xmodal.data.loaders import data_root, load_dataset
from xmodal.embeddings import Embedded
from xmodal.experiments import parse_config, run_experiment
from xmodal.experiments.config import ConfigError, resolved
from xmodal.experiments.crossval import check_folds, cv_scores, fold_assignment, fold_split
from xmodal.experiments.findings import findings
from xmodal.experiments.run_folder import RunFolder
from xmodal.experiments.runner import Fit, FitInputs, _fold_row, prepare
from xmodal.report.html import chosen_row, write_report
from xmodal.retrieval.evaluate import evaluate
from xmodal.similarity.metrics import Metric
from xmodal.store import EmbeddingStore

ROOT = Path(__file__).resolve().parents[1]
K = 3
SPLIT_SEED = 4
KS = [1, 5, 10]


def _raw(runs: Path, **changes):
    """A Tux Paint study of cheap deterministic aligners, cross-validated (embeddings cached in
    the repository's cache folder)."""
    split = {"train": 0.7, "val": 0.1, "test": 0.2, "seed": SPLIT_SEED}
    return {
        "name": "cv",
        "datasets": [{"source": "tuxpaint", "split": split}],
        "encoders": [{"image": "effnet-lite0", "text": "minilm"}],
        "metrics": ["cosine"],
        "seeds": [0, 1],
        "selection": {"folds": K},
        "aligners": [
            {"kind": "ridge", "grid": {"alpha": [0.1, 10.0]}},
            {"kind": "cca", "dim": 32, "seeds": [0]},
        ],
        "cache_dir": str(ROOT / "cache"),
        "runs_dir": str(runs),
    } | changes


def _need_stamps():
    if not (data_root() / "tuxpaint").is_dir():
        pytest.skip(
            f"Tux Paint stamps not found in {data_root()}: run `xmodal data fetch tuxpaint`"
        )


@pytest.fixture(scope="module")
def tux(tmp_path_factory):
    """The study's Tux Paint dataset, embedded and split as the runner does."""
    _need_stamps()
    config = parse_config(_raw(tmp_path_factory.mktemp("unused")))
    (prep,) = prepare(config, EmbeddingStore(config.cache_dir), progress=False)
    return prep


@pytest.fixture(scope="module")
def cv_run(tmp_path_factory, tux):
    root = tmp_path_factory.mktemp("cv_run")
    return run_experiment(parse_config(_raw(root)), progress=False)


def _summary_row(result, aligner):
    return next(r for r in result.summary if r["aligner"] == aligner)


# ------------------------------------------------------------------ folds


@pytest.mark.slow
def test_folds_are_disjoint_cover_the_train_images_and_are_deterministic(tux):
    ids = [im.id for im in tux.parts["train"].dataset.images]
    folds = fold_assignment(ids, 5, SPLIT_SEED)
    sizes = np.bincount(folds)
    assert len(sizes) == 5 and sizes.sum() == len(ids) and sizes.max() - sizes.min() <= 1
    assert np.array_equal(folds, fold_assignment(ids, 5, SPLIT_SEED))
    by_id = dict(zip(ids, folds, strict=True))
    shuffled = [ids[i] for i in np.random.default_rng(9).permutation(len(ids))]
    assert [by_id[i] for i in shuffled] == list(fold_assignment(shuffled, 5, SPLIT_SEED))
    assert not np.array_equal(folds, fold_assignment(ids, 5, SPLIT_SEED + 1))
    # each image once in a held-out fold, and never in the folds its model was fitted on
    tag = np.arange(len(ids), dtype=np.float32)[:, None]
    train = Embedded(tag, tag.copy(), np.arange(len(ids)))
    held_out_tags = []
    for fold in range(5):
        fit_on, held_out = fold_split(train, folds, fold)
        assert not set(fit_on.images[:, 0]) & set(held_out.images[:, 0])
        assert len(fit_on.images) + len(held_out.images) == len(ids)
        held_out_tags += list(held_out.images[:, 0])
    assert sorted(held_out_tags) == list(range(len(ids)))


@pytest.mark.slow
def test_every_caption_goes_with_its_image():
    """Tux Paint in English and French: two or more captions per image."""
    _need_stamps()
    dataset = load_dataset("tuxpaint", languages=["en", "fr"])
    per_image = np.bincount(dataset.caption_image, minlength=len(dataset.images))
    assert per_image.max() >= 2
    tag = np.arange(len(dataset.images), dtype=np.float32)[:, None]
    data = Embedded(tag, tag[dataset.caption_image], dataset.caption_image)
    folds = fold_assignment([im.id for im in dataset.images], 4, 0)
    captions = 0
    for fold in range(4):
        for part in fold_split(data, folds, fold):
            assert np.array_equal(part.texts[:, 0], part.images[part.caption_image, 0])
        held_out = fold_split(data, folds, fold)[1]
        assert len(held_out.texts) == per_image[folds == fold].sum()
        captions += len(held_out.texts)
    assert captions == len(dataset.captions)


# ------------------------------------------------------------------ scores


def _manual_cv(tux, aligner) -> list[float]:
    """RSUM on each held-out fold, computed from the documented rule: the sorted train ids,
    permuted by default_rng(split seed), cut by np.array_split; fitted with the run's
    validation split, on the other folds."""
    train = tux.parts["train"]
    ids = sorted(im.id for im in train.dataset.images)
    out = []
    for chunk in np.array_split(np.random.default_rng(SPLIT_SEED).permutation(len(ids)), K):
        held = {ids[j] for j in chunk}
        fitted = aligner().fit(
            train.subset(set(ids) - held).all, FitContext(seed=0, val=tux.parts["val"].all)
        )
        scores = evaluate(
            fitted.transform(train.subset(held).all), fitted.scorer(), KS, bootstrap=0
        )
        out.append(sum(scores[f"{d}_R@{k}"] for d in ("t2i", "i2t") for k in KS))
    return out


@pytest.mark.slow
@pytest.mark.parametrize(
    ("aligner", "build"),
    [
        ("ridge[alpha=0.1]", lambda: build_aligner("ridge", metric="cosine", alpha=0.1)),
        ("cca", lambda: build_aligner("cca", metric="cosine", dim=32)),
    ],
)
def test_cv_score_equals_a_manual_kfold_computation(cv_run, tux, aligner, build):
    row = _summary_row(cv_run, aligner)
    manual = _manual_cv(tux, build)
    assert row["cv_folds"] == K and row["cv_failed"] == 0
    assert row["cv_rsum"] == pytest.approx(np.mean(manual), abs=1e-6)
    assert row["cv_rsum_std"] == pytest.approx(np.std(manual, ddof=1), abs=1e-6)
    assert row["cv_rsum_std"] > 0  # the folds differ: a spread was measured
    logged = RunFolder(cv_run.folder).logged_rows(RunFolder(cv_run.folder).folds)
    mine = [r for r in logged if r["aligner"] == aligner]
    assert [r["fold"] for r in mine] == list(range(K)) and {r["seed"] for r in mine} == {0}


@pytest.mark.slow
def test_the_test_split_is_never_read(cv_run, tux, tmp_path):
    """Fold fits give the run's scores with the test vectors poisoned, and with none at all."""
    train = tux.parts["train"]
    folds = fold_assignment([im.id for im in train.dataset.images], K, SPLIT_SEED)
    test = tux.splits["test"]
    poisoned = Embedded(np.full_like(test.images, np.nan), test.texts * -1, test.caption_image)
    acfg = parse_config(_raw(tmp_path)).aligners[0]
    assert acfg.label == "ridge[alpha=0.1]"
    logged = RunFolder(cv_run.folder).logged_rows(RunFolder(cv_run.folder).folds)
    expected = [r["rsum"] for r in logged if r["aligner"] == acfg.label]
    for splits in (tux.splits | {"test": poisoned}, {k: tux.splits[k] for k in ("train", "val")}):
        shared = FitInputs(splits, tux.encoder, {}, KS, False, tmp_path, "rsum", folds=folds)
        got = [
            _fold_row(Fit(acfg, Metric.COSINE, 0, "m", fold=i), shared, False)["rsum"]
            for i in range(K)
        ]
        assert got == pytest.approx(expected, abs=1e-9)


def test_a_failed_fold_is_not_averaged():
    def fold(i, status, rsum):
        key = {"dataset": "d", "encoder": "e", "aligner": "a", "metric": "cosine"}
        return key | {"fold": i, "folds": 3, "status": status, "rsum": rsum}

    ok = cv_scores([fold(0, "ok", 200.0), fold(1, "ok", 210.0), fold(2, "ok", 220.0)], "rsum")
    assert ok[("d", "e", "a", "cosine")] == {
        "cv_rsum": 210.0,
        "cv_rsum_std": 10.0,
        "cv_folds": 3,
        "cv_failed": 0,
    }
    failed = [fold(0, "ok", 200.0), fold(1, "failed: diverged", float("nan")), fold(2, "ok", 220.0)]
    got = cv_scores(failed, "rsum")[("d", "e", "a", "cosine")]
    assert np.isnan(got["cv_rsum"]) and np.isnan(got["cv_rsum_std"]) and got["cv_failed"] == 1


@pytest.mark.slow
def test_a_diverging_fold_fit_is_recorded_as_failed(tmp_path, tux):
    aligners = [
        {"kind": "ridge"},
        {"kind": "linear", "name": "diverging", "lr": 1e6, "epochs": 10, "batch_size": 64},
    ]
    config = parse_config(_raw(tmp_path, aligners=aligners, seeds=[0], selection={"folds": 2}))
    result = run_experiment(config, progress=False)
    run = RunFolder(result.folder)
    failed = [r for r in run.logged_rows(run.folds) if r["aligner"] == "diverging"]
    assert len(failed) == 2 and all(r["status"].startswith("failed: ") for r in failed)
    row = _summary_row(result, "diverging")
    assert np.isnan(row["cv_rsum"]) and row["cv_failed"] == 2
    assert np.isfinite(_summary_row(result, "ridge")["cv_rsum"])
    findings_md = run.findings.read_text()
    assert "Selected by 2-fold CV on the training images" in findings_md
    assert "): ridge / cosine" in findings_md


# ------------------------------------------------------------------ selection


def _config_row(aligner, rsum, val, cv, cv_std=4.0):
    return {
        "dataset": "d",
        "encoder": "e",
        "aligner": aligner,
        "kind": aligner.partition("[")[0],
        "metric": "cosine",
        "seeds": 2,
        "rsum": rsum,
        "val_rsum": val,
        "cv_rsum": cv,
        "cv_rsum_std": cv_std,
        "cv_folds": 5,
        "cv_failed": 0 if np.isfinite(cv) else 1,
    }


def test_findings_and_report_select_by_cv_not_by_validation():
    summary = [
        _config_row("ridge[alpha=0.1]", 300.0, 330.0, 240.0),  # validation's choice
        _config_row("ridge[alpha=10.0]", 290.0, 310.0, 250.5, 3.25),  # CV's choice
        _config_row("cca", 320.0, 340.0, float("nan")),  # a fold failed: never chosen
    ]
    said = " ".join(findings(summary))
    assert "Selected on validation" not in said
    assert (
        "Selected by 5-fold CV on the training images (cv RSUM 250.5 ± 3.2): "
        "ridge[alpha=10.0] / cosine, with test RSUM 290.0" in said
    )
    assert "1 configuration(s) with a failed fold fit not considered: cca / cosine" in said
    assert "Grid ridge: CV selects alpha=10.0 / cosine (cv RSUM 250.5 ± 3.2)" in said
    chosen, how = chosen_row(summary)
    assert chosen["aligner"] == "ridge[alpha=10.0]" and how.startswith("chosen by 5-fold CV")
    tied = [*summary, _config_row("procrustes", 280.0, 300.0, 250.5)]
    assert "(tied with procrustes / cosine)" in " ".join(findings(tied))


@pytest.mark.slow
def test_a_cross_validated_run_selects_by_cv(cv_run):
    best = max(cv_run.summary, key=lambda r: r["cv_rsum"])
    text = RunFolder(cv_run.folder).findings.read_text()
    quoted = f"(cv RSUM {best['cv_rsum']:.1f} ± {best['cv_rsum_std']:.1f}): {best['aligner']}"
    assert f"Selected by {K}-fold CV on the training images {quoted}" in text
    ridge = max((r for r in cv_run.summary if "ridge" in r["aligner"]), key=lambda r: r["cv_rsum"])
    setting = ridge["aligner"].partition("[")[2].rstrip("]")
    assert f"Grid ridge: CV selects {setting} / cosine" in text
    results = json.loads(RunFolder(cv_run.folder).results_json.read_text())
    assert all("cv_rsum" in r and "cv_rsum_std" in r for r in results["summary"])
    assert not any("fold" in r for r in results["runs"])  # fold fits are not result rows
    assert resolved(parse_config(_raw(Path("x"))))["selection"] == {"folds": K}
    page = write_report(cv_run.folder).read_text(encoding="utf-8")
    card = f"{best['cv_rsum']:.1f}<small> ± {best['cv_rsum_std']:.1f}</small>"
    assert f"{K}-fold CV RSUM" in page and card in page and ">CV RSUM</th>" in page
    marked = re.findall(r"<tr><td>([^<]*) <span class=\"chosen\">◀ chosen</span>", page)
    assert marked == [best["aligner"]]


# ------------------------------------------------------------------ config and resume


@pytest.mark.parametrize(
    ("selection", "expected"),
    [
        ({"folds": 1}, "selection.folds"),
        ({"folds": 0}, "selection.folds"),
        ({"fold": 5}, "selection.fold"),
    ],
)
def test_bad_folds_name_the_key(tmp_path, selection, expected):
    with pytest.raises(ConfigError, match=f"^{re.escape(f'my.yaml: {expected}: ')}"):
        parse_config(_raw(tmp_path, selection=selection), "my.yaml")


def test_more_folds_than_train_images_name_the_key():
    with pytest.raises(ConfigError, match=re.escape("selection.folds: 7 folds, but the train")):
        check_folds(7, 6, "tiny / pair")
    check_folds(6, 6, "tiny / pair")


@pytest.mark.slow
def test_more_folds_than_train_images_stop_the_run(tmp_path, tux):
    n = len(tux.parts["train"].dataset.images)
    config = parse_config(_raw(tmp_path, selection={"folds": n + 1}))
    with pytest.raises(ConfigError, match=rf"selection.folds: {n + 1} folds.*holds {n} images"):
        run_experiment(config, progress=False)


@pytest.mark.slow
def test_an_interrupted_run_reuses_its_finished_fold_fits(tmp_path, tux):
    aligners = [{"kind": "ridge", "grid": {"alpha": [0.1, 10.0]}}]
    config = parse_config(_raw(tmp_path, aligners=aligners, seeds=[0]))
    first = run_experiment(config, progress=False, jobs=2)
    run = RunFolder(first.folder)
    lines = run.folds.read_text().splitlines(keepends=True)
    assert len(lines) == 2 * K
    # interrupted after two fold fits, while a third was being logged
    run.folds.write_text("".join(lines[:2]) + lines[2][:25])
    kept = run.logged_rows(run.folds)
    again = run_experiment(config, progress=False, resume=first.folder, jobs=2)
    logged = run.logged_rows(run.folds)
    assert len(logged) == 2 * K  # none lost, none twice
    assert logged[:2] == kept  # reused as logged, not fitted again
    key = ("aligner", "fold")
    assert sorted(tuple(r[k] for k in key) for r in logged) == sorted(
        (a, f) for a in ("ridge[alpha=0.1]", "ridge[alpha=10.0]") for f in range(K)
    )
    for before, after in zip(first.summary, again.summary, strict=True):
        assert after["cv_rsum"] == pytest.approx(before["cv_rsum"], abs=1e-9)
