"""The gap study on hand-made configurations: which columns are measures, Spearman values
against scipy, the one-line readings, and the files it writes."""

import json
import math

import numpy as np
import pytest
from scipy.stats import spearmanr

from xmodal.report.gap import (
    TARGETS,
    gap_study,
    is_measure,
    load_study,
    markdown,
    measure_columns,
    write_gap_study,
)


def _configurations(n=8, seed=0):
    """n configurations: rsum falls with aligned_wasserstein_gaussian, rises with aligned_cka,
    is unrelated to aligned_separability; bookkeeping and constant columns around them."""
    rng = np.random.default_rng(seed)
    rsum = np.linspace(300, 100, n)
    rows = []
    for i in range(n):
        rows.append(
            {
                "dataset": "d",
                "encoder": "e",
                "aligner": f"a{i % 4}",
                "metric": "cosine" if i < 4 else "euclidean",
                "t2i_R@1": rsum[i] / 6 + rng.normal(0, 1),
                "i2t_R@1": rsum[i] / 6 + rng.normal(0, 1),
                "rsum": rsum[i],
                "rsum_std": 0.0,
                "raw_cka": 0.4,  # one encoder pair: the raw measure is constant
                "aligned_wasserstein_gaussian": 0.2 + 0.1 * i,
                "aligned_cka": 0.9 - 0.05 * i,
                "aligned_separability": float(rng.uniform(0.5, 1)),
                "aligned_n_images": 50 + i,  # bookkeeping, even though it varies
                "aligned_cosine_matched_q10": 0.1 * i,  # a quantile: left out
                "aligned_mutual_knn_k": 10,
                "aligned_gap": math.nan if i == 2 else 1.0 - 0.1 * i,
                "aligned_mutual_knn": 0.1 * (i % 4),  # one value per aligner, as closed form
            }
        )
    return rows


def test_only_varying_measure_columns_are_studied():
    assert is_measure("aligned_wasserstein_sliced") and is_measure("raw_mutual_knn")
    for col in ("aligned_n_images", "raw_dim_texts", "aligned_cka_n", "raw_mutual_knn_k",
                "aligned_wasserstein_sinkhorn_reg", "aligned_cosine_random_q90",
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


def test_correlations_match_scipy_spearman():
    rows = _configurations()
    study = gap_study(rows)
    assert study.configurations == len(rows)
    assert len(study.correlations) == 5 * len(TARGETS)
    for c in study.correlations:
        kept = [r for r in rows if np.isfinite(r[c["measure"]])]
        ref = spearmanr([r[c["measure"]] for r in kept], [r[c["target"]] for r in kept])
        assert c["n"] == len(kept)
        assert c["rho"] == pytest.approx(ref.statistic, abs=1e-12)
        assert c["p_value"] == pytest.approx(ref.pvalue, rel=1e-9)
        assert c["p_value"] <= c["q_value"] <= 1
    gap_rsum = next(
        c for c in study.correlations if c["measure"] == "aligned_gap" and c["target"] == "rsum"
    )
    assert gap_rsum["n"] == gap_rsum["distinct"] == len(rows) - 1  # the NaN row is left out
    knn = next(c for c in study.correlations if c["measure"] == "aligned_mutual_knn")
    assert (knn["n"], knn["distinct"]) == (8, 4)


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
    assert "Constant across configurations (not studied): raw_cka." in text


def test_write_gap_study_files(tmp_path):
    rows = _configurations()
    (tmp_path / "results.json").write_text(json.dumps({"runs": rows, "summary": rows}))
    study = write_gap_study(tmp_path, targets=("rsum", "t2i_R@1"))

    def no_nan(word):
        raise AssertionError(f"gap.json holds {word}: not strict JSON")

    saved = json.loads((tmp_path / "gap.json").read_text(), parse_constant=no_nan)
    assert saved["configurations"] == 8 and len(saved["correlations"]) == 10
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
