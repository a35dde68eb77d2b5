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


@pytest.mark.parametrize("offset", [0.0, 0.2, 1e3, 3e4])  # 0.2: centred, yet near the origin
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


@pytest.mark.parametrize(
    ("metric", "offset"),  # cosine: float32 scores of near-parallel vectors are not exact
    [(Metric.COSINE, 0.0), (Metric.EUCLIDEAN, 0.0), (Metric.EUCLIDEAN, 1e3)],
)
@pytest.mark.parametrize("block_size", [64, 1 << 24])  # threads split the gallery / the queries
def test_threaded_product_topk_is_exact_with_ties(monkeypatch, metric, block_size, offset):
    """The threaded path (every BLAS thread scores and merges its own share) gives the
    reference order, ties to the lower index across the threads' shares, under an offset."""
    from xmodal.similarity import search

    monkeypatch.setattr(search, "THREADED_WORK", 0)
    monkeypatch.setattr(search, "_blas_threads", lambda: 3)
    rng = np.random.default_rng(6)
    g = rng.integers(-3, 4, (40, 12)).astype(np.float32)
    g = offset + np.concatenate([g, g[::-1], g, g[::-1]])  # copies in every thread's share
    q = offset + rng.integers(-3, 4, (31, 12)).astype(np.float32)
    ref = reference_scores(q, g, metric)
    scores, idx = topk(q, g, 9, metric, block_size=block_size)
    want = stable_order(ref, 9)
    np.testing.assert_array_equal(idx, want)
    np.testing.assert_allclose(scores, np.take_along_axis(ref, want, 1), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(("offset", "centred"), [(0.0, False), (0.2, True), (1e3, True)])
def test_euclidean_topk_centres_only_a_gallery_off_the_origin(offset, centred):
    """The float32 pass reads the gallery in place only where its mean is near the origin
    (within 1/16 of the rows' spread: 0.2 per coordinate of 16 is 0.8 against 4 / 16)."""
    from xmodal.similarity.measures import euclidean

    g = (offset + np.random.default_rng(8).standard_normal((3000, 16))).astype(np.float32)
    centre = euclidean._centre(g)
    assert (centre is not None) == centred
    if centred:
        np.testing.assert_allclose(centre, offset, atol=0.1)


def _reference_heap(mapped: np.ndarray, k: int, offset: int):
    """Per row, the k best (score, index): NaN and -inf never kept, ties to the lower index."""
    out = []
    for row in mapped:
        cols = np.flatnonzero(row > -np.inf)
        order = np.lexsort((cols, -row[cols]))[:k]
        out.append((row[cols[order]], cols[order] + offset))
    return out


@pytest.mark.parametrize("merge", [kernels.merge_topk, kernels.merge_topk_serial])
@pytest.mark.parametrize("k", [1, 6, 40])
def test_merge_keeps_the_best_of_every_block_with_ties_and_non_finite(merge, k):
    """Rows long enough for several peak groups and a tail, two blocks at an offset, scores
    mapped by scale and shift; small integers tie everywhere, NaN / -inf / +inf scattered."""
    rng = np.random.default_rng(7)
    rows, cols = 10, 5 * kernels.PEAK_GROUP**2 + 7
    raw = rng.integers(-30, 30, (rows, 2 * cols)).astype(np.float32)
    raw[0] = 3  # one value everywhere: the k lowest indices win
    raw[1, ::7], raw[2, 5::3] = np.nan, np.inf
    raw[3, ::2], raw[4] = -np.inf, np.nan  # row 4 keeps nothing
    raw[5, -1] = 99  # the best score at the last index
    scale = rng.choice([1.0, 2.0], 2 * cols).astype(np.float32)
    shift = rng.integers(-3, 3, 2 * cols).astype(np.float32)
    heap_v, heap_i = np.full((rows, k), -np.inf, np.float32), np.full((rows, k), -1, np.int64)
    for start in (0, cols):
        part = slice(start, start + cols)
        merge(raw[:, part].copy(), scale[part], shift[part], 100 + start, heap_v, heap_i)
    mapped = raw * scale + shift
    for r, (want_v, want_i) in enumerate(_reference_heap(mapped, k, 100)):
        kept = heap_i[r] >= 0
        order = np.lexsort((heap_i[r][kept], -heap_v[r][kept]))
        np.testing.assert_array_equal(heap_i[r][kept][order], want_i, err_msg=f"row {r}")
        np.testing.assert_array_equal(heap_v[r][kept][order], want_v, err_msg=f"row {r}")
    assert not (heap_i[4] >= 0).any() and heap_i[5].max() == 100 + 2 * cols - 1


@pytest.mark.parametrize("merge", [kernels.merge_topk, kernels.merge_topk_serial])
def test_merge_ties_negative_and_positive_zero(merge):
    """-0.0 == +0.0: a group holding only -0.0 at the lowest indices still wins the tie."""
    groups = 4
    raw = np.zeros((1, groups * kernels.PEAK_GROUP), np.float32)
    raw[0, ::groups] = -0.0  # every score of the first group
    shift = np.full(raw.shape[1], -0.0, np.float32)  # keeps each zero's sign
    heap_v, heap_i = np.full((1, 2), -np.inf, np.float32), np.full((1, 2), -1, np.int64)
    merge(raw, np.ones(raw.shape[1], np.float32), shift, 0, heap_v, heap_i)
    assert sorted(heap_i[0]) == [0, 1]
