"""The study across encoder pairs: correlations with bootstrap CIs over pairs, the Wasserstein
claim tested as stated, and (end to end, on real stamps and four real encoder pairs) the run
folder's cross_model.json, findings.md and the report section."""

import contextlib
import csv
import io
import json
import math
from pathlib import Path

import numpy as np
import pytest
import yaml
from scipy.stats import spearmanr

from xmodal.cli import main
from xmodal.experiments.cross_model import (
    CrossModelStudy,
    cross_model_studies,
    findings_lines,
    markdown,
)
from xmodal.geometry.correlation import spearman_ci


def test_spearman_ci_brackets_rho_and_narrows_with_more_units():
    rng = np.random.default_rng(0)
    widths = []
    for n in (10, 200):
        a = rng.normal(size=n)
        b = a + rng.normal(scale=1.0, size=n)
        lo, hi = spearman_ci(a, b)
        rho = spearmanr(a, b).statistic
        assert lo < rho < hi
        widths.append(hi - lo)
    assert widths[1] < widths[0] / 2
    x = np.arange(8.0)
    assert spearman_ci(x, x**3) == (1.0, 1.0)  # every resample is perfectly monotone
    assert all(math.isnan(v) for v in spearman_ci(x[:2], x[:2]))


def _summary(n_pairs: int, w_sign: float, seed: int = 0) -> list[dict]:
    """Summary rows of two aligners over `n_pairs` encoder pairs: CKA drives RSUM, and W2
    follows the centroid gap with sign `w_sign` (plus noise)."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n_pairs):
        cka = rng.uniform(0.1, 0.9)
        for aligner in ("ridge", "cca"):
            gap = rng.uniform(0.2, 1.0)
            rows.append(
                {
                    "dataset": "stamps",
                    "encoder": f"img{i}+txt",
                    "aligner": aligner,
                    "metric": "cosine",
                    "seeds": 1,
                    "t2i_R@1": 100 * cka + rng.normal(scale=3),
                    "i2t_R@1": 90 * cka + rng.normal(scale=3),
                    "rsum": 300 * cka + rng.normal(scale=5),
                    "raw_cka": cka,
                    "raw_mutual_knn": rng.uniform(),
                    "raw_cka_n": 100,  # bookkeeping: not a measure
                    "aligned_gap": gap,
                    "aligned_wasserstein_exact": w_sign * gap + rng.normal(scale=0.02),
                    "aligned_wasserstein_gaussian": rng.uniform(),
                }
            )
    return rows


def test_study_finds_the_driver_and_tests_the_wasserstein_claim_both_ways():
    (study,) = cross_model_studies(_summary(12, +1.0))
    assert study.systems == ["ridge / cosine", "cca / cosine"]
    assert len(study.pairs) == 12
    assert study.best_predictor() is not None and study.best_predictor()[0] == "raw_cka"
    assert study.wasserstein_holds() is True
    exact = [c for c in study.wasserstein_gap if c["measure"] == "aligned_wasserstein_exact"]
    assert len(exact) == 2 and all(c["ci_lo"] > 0.8 for c in exact)
    assert not any(c["measure"] == "raw_cka_n" for c in study.correlations)
    (against,) = cross_model_studies(_summary(12, -1.0))
    assert against.wasserstein_holds() is False
    text = "\n".join(findings_lines(against))
    assert "does not hold" in text and "Best predictor of RSUM across pairs: raw_cka" in text


def test_study_needs_enough_pairs_and_every_pair_per_system():
    assert cross_model_studies(_summary(3, 1.0)) == []
    rows = _summary(6, 1.0)
    rows = [r for r in rows if not (r["aligner"] == "cca" and r["encoder"] == "img0+txt")]
    (study,) = cross_model_studies(rows)
    assert study.systems == ["ridge / cosine"]  # cca misses a pair: not compared across pairs


def test_study_round_trips_through_strict_json_with_nan():
    rows = _summary(5, 1.0)
    for r in rows:
        r["aligned_wasserstein_gaussian"] = 0.5 if r["encoder"] != "img0+txt" else 0.25
        r["raw_mutual_knn"] = 0.3  # constant: left out, named as constant
    (study,) = cross_model_studies(rows)
    assert "raw_mutual_knn" in study.constant
    text = json.dumps(study.to_json(), allow_nan=False)
    back = CrossModelStudy.from_json(json.loads(text))
    assert back.correlations[0]["rho"] == pytest.approx(study.correlations[0]["rho"])
    assert "## Across encoder pairs: stamps" in markdown(back)


PAIRS = [
    {"image": "effnet-lite0", "text": "minilm"},
    {"image": "effnet-lite0", "text": "glove-50d"},
    {"image": "effnet-lite1", "text": "minilm"},
    {"image": "effnet-lite1", "text": "glove-50d"},
]


@pytest.mark.slow
def test_a_run_over_four_real_pairs_writes_the_study_findings_and_report(tmp_path):
    from xmodal.data.loaders import load_dataset

    try:
        ds = load_dataset("tuxpaint")
    except FileNotFoundError as e:
        pytest.skip(f"Tux Paint stamps not fetched: {e}")
    manifest = tmp_path / "stamps.csv"
    with open(manifest, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["image", "caption"])
        for im in [im for im in ds.images if Path(im.path).suffix == ".png"][:60]:
            caption = next(c.text for c in ds.captions if c.image_id == im.id)
            writer.writerow([str(im.path), caption])
    config = {
        "name": "pairs",
        "datasets": [
            {"source": f"manifest:{manifest}", "split": {"train": 0.6, "val": 0.0, "test": 0.4}}
        ],
        "encoders": PAIRS,
        "metrics": ["cosine"],
        "geometry": True,
        "aligners": [{"kind": "ridge", "direction": "image_to_text"}, {"kind": "cca", "dim": 16}],
        "cache_dir": str(tmp_path / "cache"),
        "runs_dir": str(tmp_path / "runs"),
    }
    (tmp_path / "pairs.yaml").write_text(yaml.safe_dump(config))
    with contextlib.redirect_stdout(io.StringIO()):
        assert main(["run", str(tmp_path / "pairs.yaml"), "--quiet"]) == 0
        (folder,) = (tmp_path / "runs").iterdir()
        assert main(["report", str(folder)]) == 0
    (study,) = json.loads((folder / "cross_model.json").read_text())
    assert len(study["pairs"]) == 4
    assert study["systems"] == ["ridge / cosine", "cca / cosine"]
    measures = {c["measure"] for c in study["correlations"]}
    assert {"raw_cka", "aligned_gap", "aligned_wasserstein_exact"} <= measures
    findings = (folder / "findings.md").read_text()
    assert "Across 4 encoder pairs" in findings
    assert "The Wasserstein distance measures the modality gap" in findings
    page = (folder / "report.html").read_text()
    assert "Across encoder pairs" in page and "Across encoder pairs: measures vs rsum" in page
    drawn = [p for p in (folder / "plots").glob("cross_model_*.png")]
    assert len(drawn) == 3  # measures vs RSUM, vs t2i R@1, and W2 vs the centroid gap
