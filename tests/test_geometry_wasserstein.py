import numpy as np
import ot
import pytest
import scipy.linalg
from scipy.optimize import linear_sum_assignment, linprog
from scipy.spatial.distance import cdist

from xmodal.geometry import wasserstein as w


def _cloud(n: int, d: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, d))


def test_exact_identical_is_zero_and_translation_is_its_norm():
    x = _cloud(60, 5)
    t = np.array([0.3, -1.0, 2.0, 0.0, 0.5])
    assert w.wasserstein_exact(x, x) == pytest.approx(0.0, abs=1e-6)
    assert w.wasserstein_exact(x, x + t) == pytest.approx(np.linalg.norm(t), rel=1e-9)


def test_exact_matches_assignment_for_equal_sizes():
    x, y = _cloud(40, 4), _cloud(40, 4, seed=1) + 0.7
    cost = cdist(x, y, "sqeuclidean")
    r, c = linear_sum_assignment(cost)
    assert w.wasserstein_exact(x, y) == pytest.approx(np.sqrt(cost[r, c].mean()), rel=1e-9)


def test_exact_matches_linear_program_for_unequal_sizes():
    x, y = _cloud(7, 3), _cloud(4, 3, seed=1) + 1.0
    cost = cdist(x, y, "sqeuclidean")
    n, k = cost.shape
    rows = np.kron(np.eye(n), np.ones(k))  # row sums of the plan = 1/n
    cols = np.kron(np.ones(n), np.eye(k))  # column sums = 1/k
    lp = linprog(
        cost.ravel(), A_eq=np.r_[rows, cols], b_eq=np.r_[np.full(n, 1 / n), np.full(k, 1 / k)]
    )
    assert w.wasserstein_exact(x, y) == pytest.approx(np.sqrt(lp.fun), rel=1e-7)


def test_exact_subsamples_with_a_seed():
    x = _cloud(300, 4)
    assert w.wasserstein_exact(x, x, max_points=50) == pytest.approx(0.0, abs=1e-6)
    y = _cloud(500, 4, seed=1)
    a = w.wasserstein_exact(x, y, max_points=50, seed=2)
    assert a == w.wasserstein_exact(x, y, max_points=50, seed=2)
    assert a != w.wasserstein_exact(x, y, max_points=50, seed=3)


def test_sinkhorn_bounds_exact_from_above_and_is_scale_free():
    x, y = _cloud(80, 4), _cloud(60, 4, seed=1) + 0.5
    exact = w.wasserstein_exact(x, y)
    sink = w.wasserstein_sinkhorn(x, y)
    assert sink.converged and sink.lower - 1e-9 <= exact <= sink.value + 1e-9
    assert sink.value <= (1 + w.SINKHORN_TOLERANCE) * exact
    assert w.wasserstein_sinkhorn(x, y, tolerance=0.002).value == pytest.approx(exact, rel=0.002)
    assert w.wasserstein_sinkhorn(5 * x, 5 * y).value == pytest.approx(5 * sink.value, rel=1e-6)


@pytest.mark.parametrize(
    ("noise", "shift"),
    [(0.02, 0.0), (0.2, 0.0), (1.0, 0.0), (1.0, 4.0)],  # small gaps to a large one
)
def test_sinkhorn_error_is_bounded_relative_to_exact_ot_at_any_gap(noise, shift):
    """Matched Gaussian clouds: x and x + noise (+ a shift), against POT's exact ot.emd2."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(150, 8))
    y = x + noise * rng.normal(size=x.shape)
    y[:, 0] += shift
    exact = np.sqrt(ot.emd2(ot.unif(150), ot.unif(150), ot.dist(x, y)))
    sink = w.wasserstein_sinkhorn(x, y)
    assert sink.converged and sink.iterations > 0 and sink.marginal_error < 1e-3
    assert sink.lower - 1e-9 <= exact <= sink.value + 1e-9
    assert sink.value / exact <= 1 + w.SINKHORN_TOLERANCE
    # a regularisation fixed relative to the mean cost (the former default) is not bounded so
    m = ot.dist(x, y)
    fixed = np.sqrt(ot.sinkhorn2(ot.unif(150), ot.unif(150), m, 0.05 * m.mean()))
    if noise == 0.02:
        assert fixed / exact > 1.5


def test_sinkhorn_reports_no_convergence_when_it_runs_out(monkeypatch):
    monkeypatch.setattr(w, "SINKHORN_ITERATIONS", 10)
    monkeypatch.setattr(w, "SINKHORN_ROUNDS", 1)
    x = _cloud(100, 4)
    sink = w.wasserstein_sinkhorn(x, _cloud(100, 4, seed=1) + 0.1, tolerance=1e-4)
    assert not sink.converged and sink.iterations == 10
    assert sink.value >= w.wasserstein_exact(x, _cloud(100, 4, seed=1) + 0.1) - 1e-9


def test_sliced_matches_sorted_projections_reference():
    x, y = _cloud(50, 6), _cloud(50, 6, seed=1) * 2.0
    proj = ot.sliced.get_random_projections(6, 30, seed=4)  # d x n_projections, unit columns
    px, py = np.sort(x @ proj, axis=0), np.sort(y @ proj, axis=0)
    want = np.sqrt(np.mean((px - py) ** 2))  # equal sizes: 1-D W2 pairs sorted values
    got = w.wasserstein_sliced(x, y, n_projections=30, seed=4)
    assert got == pytest.approx(want, rel=1e-9)
    assert w.wasserstein_sliced(x, x) == pytest.approx(0.0, abs=1e-12)


def _gaussian_reference(x, y):
    """Frechet distance with scipy's general matrix square root."""
    s1, s2 = np.cov(x, rowvar=False, bias=True), np.cov(y, rowvar=False, bias=True)
    r1 = scipy.linalg.sqrtm(s1)
    cross = scipy.linalg.sqrtm(r1 @ s2 @ r1).real
    d2 = np.sum((x.mean(0) - y.mean(0)) ** 2) + np.trace(s1 + s2 - 2 * cross)
    return np.sqrt(d2)


def test_gaussian_matches_scipy_and_pot():
    x = _cloud(200, 5) @ np.diag([1, 2, 3, 0.5, 1])
    y = _cloud(150, 5, seed=1) @ np.random.default_rng(2).normal(size=(5, 5)) + 1.0
    got = w.wasserstein_gaussian(x, y)
    assert got == pytest.approx(_gaussian_reference(x, y), rel=1e-7)
    c1, c2 = np.cov(x, rowvar=False, bias=True), np.cov(y, rowvar=False, bias=True)
    pot = ot.gaussian.bures_wasserstein_distance(x.mean(0), y.mean(0), c1, c2)
    assert got == pytest.approx(float(pot), rel=1e-6)


def test_gaussian_known_cases():
    x = _cloud(100, 4)
    t = np.array([1.0, 2.0, -2.0, 0.0])
    assert w.wasserstein_gaussian(x, x) == pytest.approx(0.0, abs=1e-6)
    assert w.wasserstein_gaussian(x, x + t) == pytest.approx(3.0, rel=1e-6)
    a, b = _cloud(300, 1), _cloud(200, 1, seed=1) * 3 + 2  # 1-D: (m1-m2)^2 + (s1-s2)^2
    want = np.hypot(a.mean() - b.mean(), a.std() - b.std())
    assert w.wasserstein_gaussian(a, b) == pytest.approx(want, rel=1e-9)
    assert np.isfinite(w.wasserstein_gaussian(_cloud(5, 20), _cloud(6, 20, seed=1)))


def test_gromov_wasserstein_sees_isometries_across_dimensions():
    x = _cloud(40, 5)
    rotated = 3.0 * x @ np.linalg.qr(_cloud(5, 5, seed=1))[0]
    padded = np.c_[rotated, np.zeros((40, 3))]  # same shape in an 8-d space
    assert w.gromov_wasserstein(x, padded) == pytest.approx(0.0, abs=1e-8)
    assert w.gromov_wasserstein(x, _cloud(40, 8, seed=2) ** 3) > 1e-3


@pytest.mark.parametrize(
    "fn",
    [w.wasserstein_exact, w.wasserstein_sinkhorn, w.wasserstein_sliced, w.wasserstein_gaussian],
)
def test_same_space_measures_refuse_different_dimensions(fn):
    with pytest.raises(ValueError, match="5-d, texts 3-d"):
        fn(_cloud(10, 5), _cloud(10, 3))
