"""The gap study on hand-made configurations: which columns are measures, Spearman values
against scipy, the one-line readings, and the files it writes."""

import json
import math

import numpy as np
import pytest
from scipy.stats import spearmanr

from xmodal.report.gap import (
    gap_study,
    is_measure,
    load_study,
    markdown,
    measure_columns,
    units,
    write_gap_study,
)

TARGETS = ("t2i_R@1", "i2t_R@1", "rsum")


def _configurations(n=8, seed=0):
    """n aligners x 2 metrics: rsum falls with aligned_wasserstein_gaussian, rises with
    aligned_cka, is unrelated to aligned_separability; bookkeeping and constant columns around
    them. Under both metrics an aligner has one geometry (as a closed-form one has)."""
    rng = np.random.default_rng(seed)
    rsum = np.linspace(300, 100, n)
    rows = []
    for i in range(n):
        separability = float(rng.uniform(0.5, 1))
        for metric, shift in (("cosine", 1.0), ("euclidean", -1.0)):
            rows.append(
                {
                    "dataset": "d",
                    "encoder": "e",
                    "aligner": f"a{i}",
                    "metric": metric,
                    "t2i_R@1": rsum[i] / 6 + rng.normal(0, 1),
                    "i2t_R@1": rsum[i] / 6 + rng.normal(0, 1),
                    "rsum": rsum[i] + shift,
                    "rsum_std": 0.0,
                    "raw_cka": 0.4,  # one encoder pair: the raw measure is constant
                    "aligned_space": "L2-normalised aligned vectors",
                    "aligned_wasserstein_gaussian": 0.2 + 0.1 * i,
                    "aligned_cka": 0.9 - 0.05 * i,
                    "aligned_separability": separability,
                    "aligned_n_images": 50 + i,  # bookkeeping, even though it varies
                    "aligned_cosine_matched_q10": 0.1 * i,  # a quantile: left out
                    "aligned_mutual_knn_k": 10,
                    "aligned_wasserstein_sinkhorn_iterations": 10 * i,
                    "aligned_wasserstein_sinkhorn_converged": 1.0,
                    "aligned_gap": math.nan if i == 2 else 1.0 - 0.1 * i,
                    "aligned_mutual_knn": 0.1 * (i % 4),
                }
            )
    return rows


def test_only_varying_measure_columns_are_studied():
    assert is_measure("aligned_wasserstein_sliced") and is_measure("raw_mutual_knn")
    for col in ("aligned_n_images", "raw_dim_texts", "aligned_cka_n", "raw_mutual_knn_k",
                "aligned_wasserstein_sinkhorn_reg", "aligned_cosine_random_q90",
                "aligned_wasserstein_sinkhorn_converged", "aligned_space",
                "aligned_cka_std", "rsum", "fit_seconds"):  # fmt: skip
        assert not is_measure(col), col
    varying, constant = measure_columns(_configurations())
    assert varying == [
        "aligned_wasserstein_gaussian",
        "aligned_cka",
        "aligned_separability",
        "aligned_gap",
        "aligned_mutual_knn",
    ]
    assert constant == ["raw_cka"]


def test_correlations_are_over_aligners_and_match_scipy_spearman():
    rows = _configurations()
    study = gap_study(rows)
    assert (study.configurations, study.units) == (16, 8)
    assert len(study.correlations) == 5 * len(TARGETS)
    unit_rows = units(rows)
    assert [u["configurations"] for u in unit_rows] == [2] * 8
    assert unit_rows[0]["rsum"] == pytest.approx(300.0)  # the mean over its two metrics
    for c in study.correlations:
        kept = [u for u in unit_rows if np.isfinite(u.get(c["measure"], np.nan))]
        ref = spearmanr([u[c["measure"]] for u in kept], [u[c["target"]] for u in kept])
        assert c["n"] == len(kept)
        assert c["rho"] == pytest.approx(ref.statistic, abs=1e-12)
        assert c["p_value"] == pytest.approx(ref.pvalue, rel=1e-9)
        assert c["p_value"] <= c["q_value"] <= 1
    gap_rsum = next(
        c for c in study.correlations if c["measure"] == "aligned_gap" and c["target"] == "rsum"
    )
    assert gap_rsum["n"] == 7  # the aligner with NaN is left out


def _null_study(rng, aligners=10, closed_form=4, metrics=4):
    """One simulated study with no true relation: an aligner effect on both the measure and
    recall (independent of each other), closed-form aligners one geometry for every metric."""
    rows = []
    for a in range(aligners):
        m_effect, r_effect = rng.normal(), rng.normal()
        shared = m_effect + 0.5 * rng.normal()
        for metric in range(metrics):
            measure = shared if a < closed_form else m_effect + 0.5 * rng.normal()
            rows.append(
                {
                    "dataset": "d",
                    "encoder": "e",
                    "aligner": f"a{a}",
                    "metric": f"m{metric}",
                    "aligned_gap": measure,
                    "rsum": r_effect + 0.5 * rng.normal(),
                }  # fmt: skip
            )
    return rows


def test_null_simulation_keeps_the_false_positive_rate_at_the_nominal_level():
    rng = np.random.default_rng(0)
    studies = [_null_study(rng) for _ in range(2000)]
    p_units = np.array([gap_study(r, ("rsum",)).correlations[0]["p_value"] for r in studies])
    rejected = np.mean(p_units < 0.05)
    assert rejected <= 0.07  # nominal 5%, with Monte Carlo slack (sd ~0.5 points)
    # correlating the configurations themselves, as if each were independent, does not hold
    p_rows = np.array(
        [spearmanr([r["aligned_gap"] for r in s], [r["rsum"] for r in s]).pvalue for s in studies]
    )
    assert np.mean(p_rows < 0.05) > 0.25


def test_readings_and_what_tracks_recall():
    study = gap_study(_configurations())
    by = {(c["measure"], c["target"]): c for c in study.correlations}
    assert by["aligned_wasserstein_gaussian", "rsum"]["reading"] == (
        "larger aligned_wasserstein_gaussian goes with lower rsum (rho=-1.00, n=8)"
    )
    assert by["aligned_cka", "rsum"]["reading"].startswith("larger aligned_cka goes with higher")
    assert set(study.tracking()) >= {"aligned_wasserstein_gaussian", "aligned_cka"}
    assert "aligned_separability" not in study.tracking()
    text = markdown(study)
    assert "| aligned_wasserstein_gaussian | -1.00 |" in text
    assert "Constant across units (not studied): raw_cka." in text


def test_write_gap_study_files(tmp_path):
    rows = _configurations()
    (tmp_path / "results.json").write_text(json.dumps({"runs": rows, "summary": rows}))
    study = write_gap_study(tmp_path, targets=("rsum", "t2i_R@1"))

    def no_nan(word):
        raise AssertionError(f"gap.json holds {word}: not strict JSON")

    saved = json.loads((tmp_path / "gap.json").read_text(), parse_constant=no_nan)
    assert saved["configurations"] == 16 and saved["units"] == 8
    assert len(saved["correlations"]) == 10
    assert saved["correlations"][3]["measure"] == "aligned_gap"
    assert set(study.plots) == {"rsum"}  # the default: one figure
    assert (tmp_path / "gap.md").read_text() == markdown(study)
    assert [p.split(".")[-1] for p in study.plots["rsum"]] == ["png", "svg"]
    for path in study.plots["rsum"]:
        assert (tmp_path / path).stat().st_size > 1000
    again = load_study(tmp_path)
    assert again.correlations == study.correlations


def test_not_a_run_folder_is_named(tmp_path):
    with pytest.raises(ValueError, match=r"results\.json: cannot read"):
        write_gap_study(tmp_path)
    (tmp_path / "results.json").write_text('{"runs": []}')
    with pytest.raises(ValueError, match="a .summary. list"):
        write_gap_study(tmp_path)


def test_a_run_without_geometry_is_refused_and_left_untouched(tmp_path, capsys):
    rows = [{k: v for k, v in r.items() if not k.startswith(("raw_", "aligned_"))}
            for r in _configurations()]  # fmt: skip
    (tmp_path / "results.json").write_text(json.dumps({"runs": rows, "summary": rows}))
    before = sorted(p.name for p in tmp_path.iterdir())
    with pytest.raises(ValueError, match="geometry: true"):
        write_gap_study(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    from xmodal.cli import main

    assert main(["gap", str(tmp_path)]) == 2
    assert "geometry: true" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_targets_follow_the_ks_of_the_run():
    rename = {"t2i_R@1": "t2i_R@5", "i2t_R@1": "i2t_R@5"}
    rows = [{rename.get(k, k): v for k, v in r.items()} for r in _configurations()]
    study = gap_study(rows)
    assert {c["target"] for c in study.correlations} == {"t2i_R@5", "i2t_R@5", "rsum"}
