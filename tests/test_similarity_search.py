"""Fast exact scoring and top-k against the brute-force float64 reference."""

import numpy as np
import pytest

from xmodal.similarity import Metric, block_scores, kernels, reference_scores, topk

METRICS = list(Metric)


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray]:
    """Queries not a multiple of the kernels' 4-row tiles, negative coordinates, shared zeros."""
    rng = np.random.default_rng(0)
    q = rng.standard_normal((37, 24)).astype(np.float32)
    g = rng.standard_normal((101, 24)).astype(np.float32)
    q[:, :3] = g[:, :3] = 0  # chi-square 0/0 terms
    q[0] = 0  # an all-zero query
    return q, g


def stable_order(ref: np.ndarray, k: int) -> np.ndarray:
    return np.argsort(-ref, axis=1, kind="stable")[:, :k]


@pytest.mark.parametrize("metric", METRICS)
def test_block_scores_match_reference(data, metric):
    q, g = data
    got = block_scores(q, g, metric)
    assert got.dtype == np.float32 and got.shape == (len(q), len(g))
    np.testing.assert_allclose(got, reference_scores(q, g, metric), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("metric", [Metric.MANHATTAN, Metric.CHI_SQUARE])
def test_kernels_split_a_long_gallery_into_spans(metric):
    rng = np.random.default_rng(3)
    q, g = (
        rng.standard_normal((6, 8), np.float32),
        rng.standard_normal((kernels.SPAN + 77, 8), np.float32),
    )
    np.testing.assert_allclose(
        block_scores(q, g, metric), reference_scores(q, g, metric), rtol=1e-5
    )


@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize("block_size", [50, 1000, 1 << 24])
def test_topk_matches_argsort_of_reference(data, metric, block_size):
    q, g = data
    ref = reference_scores(q, g, metric)
    scores, idx = topk(q, g, 7, metric, block_size=block_size)
    want = stable_order(ref, 7)
    np.testing.assert_array_equal(idx, want)
    np.testing.assert_allclose(scores, np.take_along_axis(ref, want, 1), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("metric", METRICS)
def test_ties_go_to_the_lower_index(metric):
    """Integer data makes every distance exact; duplicated rows tie exactly."""
    rng = np.random.default_rng(1)
    g = rng.integers(-3, 4, (6, 8)).astype(np.float32)
    g = np.concatenate([g, g[::-1], g])  # each row three times
    q = rng.integers(-3, 4, (9, 8)).astype(np.float32)
    _, idx = topk(q, g, 10, metric, block_size=20)  # blocks split the copies apart
    np.testing.assert_array_equal(idx, stable_order(reference_scores(q, g, metric), 10))


def test_euclidean_near_duplicates_keep_their_precision():
    """Far from the origin |q|^2 + |g|^2 - 2 q.g loses every digit of a small distance."""
    rng = np.random.default_rng(2)
    g = (100 + rng.standard_normal((50, 16))).astype(np.float32)
    q = g[:5] + np.float32(1e-3) * rng.standard_normal((5, 16)).astype(np.float32)
    ref = reference_scores(q, g, "euclidean")
    np.testing.assert_allclose(block_scores(q, g, "euclidean"), ref, rtol=1e-4)
    scores, idx = topk(q, g, 3, "euclidean")
    np.testing.assert_array_equal(idx[:, 0], np.arange(5))
    np.testing.assert_allclose(scores, np.take_along_axis(ref, idx, 1), rtol=1e-4)


def test_chi_square_of_zero_vectors_is_zero():
    z = np.zeros((2, 5), np.float32)
    assert np.array_equal(block_scores(z, z, "chi_square"), np.zeros((2, 2), np.float32))


@pytest.mark.parametrize("metric", METRICS)
def test_edge_shapes(data, metric):
    q, g = data
    scores, idx = topk(q[:3], g[:4], 10, metric)  # k larger than the gallery
    assert scores.shape == idx.shape == (3, 4)
    assert sorted(idx[0]) == [0, 1, 2, 3]
    scores, idx = topk(q[:0], g, 5, metric)
    assert scores.shape == idx.shape == (0, 5)
    scores, idx = topk(q[:2], g[:1], 1, metric)
    assert idx.tolist() == [[0], [0]]
    np.testing.assert_allclose(scores, reference_scores(q[:2], g[:1], metric), rtol=1e-5)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda q, g: topk(q, g, 0, "cosine"), "k must be a positive integer"),
        (lambda q, g: topk(q, g, 2.5, "cosine"), "k must be a positive integer"),
        (lambda q, g: topk(q, g, 2, "cosine", block_size=0), "block_size must be positive"),
        (lambda q, g: topk(q[:, :5], g, 2, "cosine"), "dimension 5 but gallery has 24"),
        (lambda q, g: block_scores(q[0], g, "cosine"), "queries must be a 2-D array"),
        (lambda q, g: topk(q, g, 2, "hamming"), "hamming"),
        (lambda q, g: topk(np.full_like(q, np.nan), g, 2, "manhattan"), "NaN"),
    ],
)
def test_errors(data, call, message):
    with pytest.raises(ValueError, match=message):
        call(*data)


def _offset_data(offset: float, seed: int = 4):
    """Every vector = a large shared offset + small noise: float32 products lose the distances."""
    rng = np.random.default_rng(seed)
    g = (offset + rng.standard_normal((300, 16))).astype(np.float32)
    q = (offset + rng.standard_normal((23, 16))).astype(np.float32)
    return q, g


@pytest.mark.parametrize("offset", [1e3, 3e4])
@pytest.mark.parametrize("block_size", [64, 1 << 24])
def test_euclidean_topk_is_exact_under_a_large_common_offset(offset, block_size):
    q, g = _offset_data(offset)
    ref = reference_scores(q, g, "euclidean")
    scores, idx = topk(q, g, 10, "euclidean", block_size=block_size)
    want = stable_order(ref, 10)
    np.testing.assert_array_equal(idx, want)
    np.testing.assert_array_max_ulp(scores, np.take_along_axis(ref, want, 1).astype(np.float32), 1)


@pytest.mark.parametrize("offset", [0.0, 1e3, 3e4])
def test_euclidean_block_scores_are_the_direct_formula_to_float32_rounding(offset):
    q, g = _offset_data(offset)
    ref = reference_scores(q, g, "euclidean").astype(np.float32)
    np.testing.assert_array_max_ulp(block_scores(q, g, "euclidean"), ref, 1)


def test_euclidean_ranks_of_evaluation_are_exact_under_an_offset():
    from xmodal.embeddings import Embedded
    from xmodal.similarity.ranking import image_to_text_ranks, text_to_image_ranks

    texts, images = _offset_data(1e3, seed=5)
    data = Embedded(images[:40], texts[:20], np.arange(20) * 2)
    for ranks in (text_to_image_ranks, image_to_text_ranks):
        fast = ranks(data, lambda t, i: block_scores(t, i, "euclidean"))
        exact = ranks(data, lambda t, i: reference_scores(t, i, "euclidean"))
        np.testing.assert_array_equal(fast, exact)


def test_euclidean_topk_ties_and_near_ties_beyond_the_candidates(monkeypatch):
    """More tied rows than the float32 pass keeps: the second pass must find the lowest
    indices, and a near-tie 6e-5 closer must win, far from the origin."""
    from xmodal.similarity.measures import euclidean

    calls = []
    rescan = euclidean._rescan
    monkeypatch.setattr(euclidean, "_rescan", lambda *a: calls.append(1) or rescan(*a))
    d, n = 8, 3 * euclidean.MARGIN
    signs = np.where(np.arange(n)[:, None] % 2, 1.0, -1.0)
    unit = np.eye(d)[np.arange(n) % d] * signs  # n rows at distance exactly 1, in pairs
    g = 500 + np.concatenate([unit[::-1], unit]).astype(np.float32)  # ties far apart in index
    g[-1] = 500
    g[-1, 0] += np.float32(1 - 2**-14)  # one near-tie, nearer, at the end
    q = np.full((2, d), 500, np.float32)
    ref = reference_scores(q, g, "euclidean")
    scores, idx = topk(q, g, 5, "euclidean", block_size=40)
    np.testing.assert_array_equal(idx, stable_order(ref, 5))
    assert idx[0, 0] == len(g) - 1 and calls
    np.testing.assert_array_equal(scores[:, 1:], -1)
