import math

import numpy as np
import pytest
from scipy.stats import spearmanr

from xmodal.geometry import gap_measures, rank_correlations, skipped_measures
from xmodal.geometry.summary import ANY_SPACE, SAME_SPACE


def _data(n_images=60, per=2, d_image=8, d_text=8, seed=0):
    rng = np.random.default_rng(seed)
    images = rng.normal(size=(n_images, d_image)).astype(np.float32)
    caption_image = np.repeat(np.arange(n_images), per)
    proj = rng.normal(size=(d_image, d_text))
    texts = images[caption_image] @ proj + 0.3 * rng.normal(size=(len(caption_image), d_text))
    return images, texts.astype(np.float32), caption_image


def test_identical_modalities_have_no_gap():
    images, _, ci = _data()
    r = gap_measures(images, images[ci], ci, knn_k=5)
    for key in ("gap", "wasserstein_exact", "wasserstein_gaussian", "wasserstein_sliced"):
        assert r[key] == pytest.approx(0.0, abs=1e-6), key
    assert r["wasserstein_sinkhorn"] < 0.2 * r["euclidean_random_mean"]
    assert r["cka"] == pytest.approx(1.0) and r["mutual_knn"] == 1.0
    assert r["cosine_auc"] == 1.0 and r["euclidean_auc"] == 1.0
    assert r["gromov_wasserstein"] == pytest.approx(0.0, abs=1e-8)
    assert 0.3 < r["separability"] < 0.7


def test_same_space_reports_every_measure_and_sizes():
    images, texts, ci = _data()
    r = gap_measures(images, texts, ci, max_points=50, ot_points=30, knn_k=5)
    assert skipped_measures(images, texts, ci, knn_k=5) == {}
    assert all(isinstance(v, int | float) and math.isfinite(v) for v in r.values())
    assert r["n_images"] == 60 and r["n_texts"] == 120
    assert r["wasserstein_exact_n_images"] == r["wasserstein_exact_n_texts"] == 30
    assert r["gromov_wasserstein_n_texts"] == 30
    assert r["wasserstein_sliced_n_images"] == r["wasserstein_sliced_n_texts"] == 50
    assert r["pairs_n"] == r["separability_n"] == r["cka_n"] == r["mutual_knn_n"] == 50
    assert r["mutual_knn_k"] == 5 and r["wasserstein_sinkhorn_reg"] > 0


def test_different_dimensions_skip_same_space_measures_with_reasons():
    images, texts, ci = _data(d_text=5)
    r = gap_measures(images, texts, ci, knn_k=5)
    skipped = skipped_measures(images, texts, ci, knn_k=5)
    assert set(skipped) == set(SAME_SPACE)
    assert all("8-d, texts 5-d" in why for why in skipped.values())
    assert not any(k.startswith(("gap", "wasserstein", "cosine", "separability")) for k in r)
    assert all(name in r for name in ANY_SPACE)


def test_seeded_determinism():
    images, texts, ci = _data()
    a = gap_measures(images, texts, ci, max_points=40, seed=3, knn_k=5)
    assert a == gap_measures(images, texts, ci, max_points=40, seed=3, knn_k=5)
    assert a != gap_measures(images, texts, ci, max_points=40, seed=4, knn_k=5)


def test_too_few_pairs_for_knn_is_reported():
    images, texts, ci = _data(n_images=6)
    assert "mutual_knn" in skipped_measures(images, texts, ci, knn_k=10)
    assert "mutual_knn" not in gap_measures(images, texts, ci, knn_k=10)


def test_bad_inputs_name_the_problem():
    images, texts, ci = _data()
    with pytest.raises(ValueError, match="caption"):
        gap_measures(images, texts, ci[:-1])
    texts[3, 2] = np.nan
    with pytest.raises(ValueError, match="texts: contains NaN"):
        gap_measures(images, texts, ci)
    with pytest.raises(ValueError, match="images: expected a 2-D"):
        gap_measures(images[0], texts, ci)


def test_rank_correlations_match_scipy_and_skip_missing_values():
    rng = np.random.default_rng(0)
    rows = [{"w": float(v), "gap": float(g), "t2i_R@1": float(r)} for v, g, r in rng.random((8, 3))]
    rows[2]["w"] = math.nan
    del rows[5]["w"]
    rows.append({"gap": 0.5})  # no target: left out everywhere
    out = rank_correlations(rows, ["w", "gap", "absent"], "t2i_R@1")
    kept = [r for i, r in enumerate(rows[:8]) if i not in (2, 5)]
    ref = spearmanr([r["w"] for r in kept], [r["t2i_R@1"] for r in kept])
    assert out[0] == {
        "measure": "w",
        "rho": pytest.approx(ref.statistic),
        "p_value": pytest.approx(ref.pvalue),
        "n": 6,
    }
    assert out[1]["n"] == 8
    assert out[2]["n"] == 0 and math.isnan(out[2]["rho"])
    constant = [{"w": 1.0, "r": float(i)} for i in range(5)]
    assert math.isnan(rank_correlations(constant, ["w"], "r")[0]["rho"])


def test_measured_space_is_the_space_the_metric_ranks():
    from xmodal.geometry import measured_space

    assert measured_space("cosine") == (
        True,
        "L2-normalised aligned vectors (the space cosine ranks)",
    )
    normalize, what = measured_space("manhattan")
    assert normalize is False and "manhattan" in what
    normalize, what = measured_space("cosine", learned_scorer=True)
    assert normalize is None and "not measured" in what
