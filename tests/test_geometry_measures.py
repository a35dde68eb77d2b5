import numpy as np
import pytest
from scipy.spatial.distance import cdist
from sklearn.neighbors import NearestNeighbors
from sklearn.preprocessing import normalize

from xmodal.geometry import measures as m


def _rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def _orthogonal(d: int, seed: int = 1) -> np.ndarray:
    q, _ = np.linalg.qr(_rng(seed).normal(size=(d, d)))
    return q


def test_subsample_is_seeded_and_keeps_small_inputs_whole():
    x = np.arange(100)[:, None]
    assert m.subsample(x, 100) is x
    a, b = m.subsample(x, 10, seed=3), m.subsample(x, 10, seed=3)
    assert np.array_equal(a, b) and len(np.unique(a)) == 10 and np.all(np.diff(a[:, 0]) > 0)
    assert not np.array_equal(a, m.subsample(x, 10, seed=4))
    with pytest.raises(ValueError, match="max_points"):
        m.subsample(x, 0)


def test_gap_matches_brute_force_and_ignores_row_norms():
    x, y = _rng().normal(size=(50, 8)), _rng(1).normal(size=(70, 8)) + 0.5
    want = normalize(x).mean(0) - normalize(y).mean(0)
    np.testing.assert_allclose(m.gap_vector(x, y), want, atol=1e-12)
    scaled = x * _rng(2).uniform(0.1, 10, size=(50, 1))
    assert m.modality_gap(scaled, y) == pytest.approx(np.linalg.norm(want), abs=1e-12)
    assert m.modality_gap(x, scaled) == pytest.approx(0.0, abs=1e-12)


def test_gap_vector_of_translated_unit_clouds_is_minus_the_translation():
    # rows (u, a) with |u|^2 + a^2 = 1; shifting by t = -2a e_d keeps every row on the sphere
    u = normalize(_rng().normal(size=(40, 5))) * 0.8
    x = np.c_[u, np.full(40, 0.6)]
    t = np.r_[np.zeros(5), -1.2]
    np.testing.assert_allclose(m.gap_vector(x, x + t), -t, atol=1e-12)
    assert m.modality_gap(x, x + t) == pytest.approx(1.2)


def test_gap_needs_one_space():
    with pytest.raises(ValueError, match="8-d, texts 4-d"):
        m.gap_vector(np.ones((3, 8)), np.ones((3, 4)))


def _paired(n_images=30, per=3, d=6, noise=0.0, seed=0):
    rng = _rng(seed)
    images = rng.normal(size=(n_images, d))
    caption_image = np.repeat(np.arange(n_images), per)
    texts = images[caption_image] + noise * rng.normal(size=(len(caption_image), d))
    return images, texts, caption_image


@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
def test_pair_distances_match_scipy(metric):
    images, texts, ci = _paired(noise=0.5)
    matched, random = m.pair_distances(images, texts, ci, metric, seed=5)
    full = cdist(texts, images, metric="euclidean" if metric == "euclidean" else "cosine")
    np.testing.assert_allclose(matched, full[np.arange(len(ci)), ci], atol=1e-12)
    # every random distance is one of the caption's distances to another image
    for t, d in enumerate(random):
        others = np.delete(full[t], ci[t])
        assert np.isclose(others, d, atol=1e-12).any()
    again = m.pair_distances(images, texts, ci, metric, seed=5)
    assert np.array_equal(random, again[1])


def test_pair_distances_subsample_and_negatives_are_never_own_image():
    images, texts, ci = _paired(n_images=3, per=200, noise=0.0)
    matched, random = m.pair_distances(images, texts, ci, "euclidean", max_pairs=100, seed=1)
    assert len(matched) == len(random) == 100
    assert np.all(matched == 0) and np.all(random > 0)


def test_separation_auc_of_identical_pairs_is_one_and_matches_brute_force():
    images, texts, ci = _paired(noise=0.0)
    matched, random = m.pair_distances(images, texts, ci, "cosine")
    assert m.separation_auc(matched, random) == 1.0
    a, b = np.array([0.1, 0.5, 0.5, 0.9]), np.array([0.3, 0.5, 1.0])
    brute = np.mean([(r > q) + 0.5 * (r == q) for q in a for r in b])
    assert m.separation_auc(a, b) == pytest.approx(brute)


def test_separation_auc_agrees_with_scikit_learn_and_refuses_what_it_cannot_count():
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(3)
    matched = np.round(rng.normal(0.4, 0.2, 500), 2)  # rounded: many ties across the two
    random = np.round(rng.normal(0.6, 0.2, 700), 2)
    labels = np.r_[np.ones(len(matched)), np.zeros(len(random))]
    want = roc_auc_score(labels, -np.r_[matched, random])
    assert m.separation_auc(matched, random) == pytest.approx(want, abs=1e-12)
    with pytest.raises(ValueError, match="NaN or inf"):
        m.separation_auc(np.array([0.1, np.nan]), random)
    with pytest.raises(ValueError, match="empty"):
        m.separation_auc(np.array([]), random)


def test_pair_statistics_keys_and_values():
    a, b = np.linspace(0, 1, 101), np.linspace(1, 2, 51)
    s = m.pair_statistics(a, b, "cosine")
    assert s["cosine_matched_q10"] == pytest.approx(0.1)
    assert s["cosine_random_q90"] == pytest.approx(np.percentile(b, 90))
    assert s["cosine_matched_mean"] == pytest.approx(0.5)
    assert s["cosine_auc"] == pytest.approx(1.0 - 0.5 / (101 * 51))  # one tie at 1.0


def test_separability_separated_vs_identical_clouds():
    rng = _rng()
    x = rng.normal(size=(300, 10))
    acc, n = m.separability(x, x + 5.0, seed=0)
    assert acc == 1.0 and n == 300
    acc, n = m.separability(x, rng.normal(size=(900, 10)), seed=0)
    assert n == 300 and 0.38 < acc < 0.62
    assert m.separability(x, x + 5.0, seed=0) == m.separability(x, x + 5.0, seed=0)


def _hsic_cka(x, y):
    """Reference: CKA through n x n Gram matrices, HSIC(K, L) = tr(K H L H)."""
    h = np.eye(len(x)) - 1.0 / len(x)
    k, el = h @ x @ x.T @ h, h @ y @ y.T @ h
    return np.trace(k @ el) / np.sqrt(np.trace(k @ k) * np.trace(el @ el))


def _unbiased_hsic(k, el):
    """Reference: Song et al. 2012, eq. (5), on n x n Gram matrices with zeroed diagonals."""
    n = len(k)
    k, el = k - np.diag(np.diag(k)), el - np.diag(np.diag(el))
    one = np.ones(n)
    return (
        np.trace(k @ el)
        + (one @ k @ one) * (one @ el @ one) / ((n - 1) * (n - 2))
        - 2 / (n - 2) * (one @ k @ el @ one)
    ) / (n * (n - 3))


def _debiased_cka(x, y):
    k, el = x @ x.T, y @ y.T  # uncentred: the unbiased HSIC needs no centring
    return _unbiased_hsic(k, el) / np.sqrt(_unbiased_hsic(k, k) * _unbiased_hsic(el, el))


def test_linear_cka_matches_gram_references_and_invariances():
    rng = _rng()
    x = rng.normal(size=(60, 12)) + 2.0  # off-centre on purpose
    y = np.tanh(x[:, :7] @ rng.normal(size=(7, 5))) + 0.3 * rng.normal(size=(60, 5))
    assert m.linear_cka(x, y) == pytest.approx(_debiased_cka(x, y), rel=1e-9)
    assert m.linear_cka(x, y, "biased") == pytest.approx(_hsic_cka(x, y), rel=1e-10)
    for estimator in m.CKA_ESTIMATORS:
        assert m.linear_cka(x, x @ _orthogonal(12), estimator) == pytest.approx(1.0)
        assert m.linear_cka(x, y, estimator) == pytest.approx(
            m.linear_cka(3.7 * x, 0.01 * y, estimator), rel=1e-10
        )
    with pytest.raises(ValueError, match="matched rows"):
        m.linear_cka(x, y[:-1])
    with pytest.raises(ValueError, match="unknown CKA estimator"):
        m.linear_cka(x, y, "plugin")


def test_debiased_cka_reads_zero_for_unrelated_data_where_the_biased_one_does_not():
    rng = _rng()
    biased, debiased = [], []
    for _ in range(10):  # the audit's case: 190 rows of unrelated 128-d data
        x, y = rng.normal(size=(190, 128)), rng.normal(size=(190, 128))
        biased.append(m.linear_cka(x, y, "biased"))
        debiased.append(m.linear_cka(x, y))
    assert 0.35 < np.mean(biased) < 0.45
    assert abs(np.mean(debiased)) < 0.01 and max(map(abs, debiased)) < 0.03
    x = rng.normal(size=(190, 128))
    assert m.linear_cka(x, x) == pytest.approx(1.0)


def test_knn_sets_match_sklearn():
    x = _rng().normal(size=(80, 6))
    ref = NearestNeighbors(n_neighbors=6, metric="cosine").fit(x).kneighbors(x)[1][:, 1:]
    got = m.knn_sets(x, 5)
    assert all(set(a) == set(b) for a, b in zip(got, ref, strict=True))


def test_mutual_knn_identical_rotated_and_unrelated():
    rng = _rng()
    x = rng.normal(size=(200, 8))
    assert m.mutual_knn(x, x, k=5) == 1.0
    assert m.mutual_knn(x, 2.0 * x @ _orthogonal(8), k=5) == pytest.approx(1.0)
    assert m.mutual_knn(x, rng.normal(size=(200, 3)), k=5) < 0.1  # chance is k / n = 0.025
    with pytest.raises(ValueError, match="k must be"):
        m.mutual_knn(x[:5], x[:5], k=5)


def test_first_caption_pairs_takes_each_images_first_caption():
    images = np.arange(4)[:, None] * 1.0
    texts = np.arange(6)[:, None] * 10.0
    px, py = m.first_caption_pairs(images, texts, np.array([2, 0, 2, 0, 3, 3]))
    assert px[:, 0].tolist() == [0, 2, 3] and py[:, 0].tolist() == [10, 0, 40]
