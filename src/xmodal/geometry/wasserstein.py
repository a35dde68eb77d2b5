"""Wasserstein-type distances between the image cloud and the text cloud.

Each cloud is the uniform empirical measure on its rows (images once each, all captions), and
the ground cost is the squared Euclidean distance, so every same-space value is a W2 distance
(the square root of the optimal cost) in the units of the embeddings. Inputs above the stated
`max_points` per side are subsampled with `xmodal.geometry.measures.subsample` (seeded); the
sizes a caller reports are `min(len, max_points)`.

Sample-based W2 (exact, Sinkhorn) carries sampling noise that grows with the dimension: two
independent 1000-point samples of one uniform distribution on the 512-d unit sphere are about
1.3 apart (2 is the diameter). Compare such values only at equal n and dimension.

POT (`ot`) is imported inside each function: importing it imports every backend it finds
(torch, scikit-learn, scipy.stats), seconds that a caller of the other measures never needs.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from xmodal.geometry.measures import require_same_dim, subsample

EXACT_POINTS = 1000
EXACT_ITERATIONS = 10_000_000
#: first regularisation, as a fraction of the mean pairwise cost; annealed from there
SINKHORN_START = 0.05
#: the certified value may exceed the exact W2 by at most this fraction
SINKHORN_TOLERANCE = 0.05
SINKHORN_ROUNDS = 6
SINKHORN_ITERATIONS = 1000
SINKHORN_MARGINAL_ERROR = 1e-5
ABSORB_EVERY = 10
SLICED_PROJECTIONS = 200


def _clouds(
    images: np.ndarray, texts: np.ndarray, max_points: int, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    import ot

    x = np.asarray(subsample(images, max_points, seed), np.float64)
    y = np.asarray(subsample(texts, max_points, seed), np.float64)
    return x, y, ot.unif(len(x)), ot.unif(len(y))


def wasserstein_exact(
    images: np.ndarray, texts: np.ndarray, *, max_points: int = EXACT_POINTS, seed: int = 0
) -> float:
    """Exact W2 by network simplex (POT `ot.emd2`). Cost about O(n^3) time and n^2 memory at
    n = max_points per side: ~0.5 s at 1000, ~4 s at 2000 on 2 cores."""
    import ot

    require_same_dim(images, texts, "Wasserstein distance")
    x, y, a, b = _clouds(images, texts, max_points, seed)
    cost, log = ot.emd2(a, b, ot.dist(x, y), numItermax=EXACT_ITERATIONS, log=True)
    if log["warning"]:  # an unconverged simplex gives a too-small cost: never report it
        raise RuntimeError(f"exact Wasserstein at n={len(x)} did not converge: {log['warning']}")
    return float(np.sqrt(max(cost, 0.0)))


@dataclass(frozen=True)
class Sinkhorn:
    """An entropic W2 with a certificate. `lower` <= W2 <= `value` always hold for these
    samples (weak duality, and a feasible plan); `converged` when value <= lower * (1 +
    tolerance), so the value is at most `tolerance` above the exact W2. `reg` is the last
    regularisation (squared embedding units), `iterations` the total over every round,
    `marginal_error` the L1 distance of the entropic plan's row sums to the uniform ones."""

    value: float
    lower: float
    reg: float
    iterations: int
    marginal_error: float
    converged: bool


def wasserstein_sinkhorn(
    images: np.ndarray,
    texts: np.ndarray,
    *,
    tolerance: float = SINKHORN_TOLERANCE,
    max_points: int = EXACT_POINTS,
    seed: int = 0,
) -> Sinkhorn:
    """Entropic W2, certified: a stabilised Sinkhorn run whose regularisation is annealed
    (4x smaller per round, warm-started) until the cost of its plan, rounded onto the exact
    marginals (Altschuler et al. 2017), is within `tolerance` of a dual lower bound (the
    potentials made feasible by c-transforms). The error is thus bounded relative to W2
    itself, small gap or large; a fixed regularisation is not (it biases a small W2 most).

    Each round is at most SINKHORN_ITERATIONS O(n^2) iterations at n = max_points per side;
    ~2-10 s at 1000 on 2 cores, more when the clouds nearly coincide."""
    import ot

    require_same_dim(images, texts, "Wasserstein distance")
    if tolerance <= 0:
        raise ValueError(f"tolerance must be > 0, got {tolerance}")
    x, y, a, b = _clouds(images, texts, max_points, seed)
    m = ot.dist(x, y)
    reg = SINKHORN_START * float(m.mean()) or 1.0
    f, g = np.zeros(len(x)), np.zeros(len(y))
    iterations, upper, lower, error = 0, np.inf, 0.0, np.inf
    for _ in range(SINKHORN_ROUNDS):
        f, g, steps, error = _sinkhorn_log(a, b, m, reg, f, g)
        iterations += steps
        upper = float((_round_plan(_plan(a, b, m, reg, f, g), a, b) * m).sum())
        lower = max(lower, _dual_bound(a, b, m, f))
        if np.sqrt(upper) <= np.sqrt(max(lower, 0.0)) * (1 + tolerance):
            break
        reg /= 4
    value, low = np.sqrt(max(upper, 0.0)), np.sqrt(max(lower, 0.0))
    return Sinkhorn(
        value=float(value),
        lower=float(low),
        reg=reg,
        iterations=iterations,
        marginal_error=error,
        converged=bool(value <= low * (1 + tolerance)),
    )


def _sinkhorn_log(
    a: np.ndarray, b: np.ndarray, m: np.ndarray, reg: float, f: np.ndarray, g: np.ndarray
) -> tuple[np.ndarray, np.ndarray, int, float]:
    """Sinkhorn on potentials (f, g) in cost units, plan a_i b_j exp((f_i + g_j - M_ij) / reg):
    scaling iterations on a kernel stabilised by the potentials, absorbed into them every
    ABSORB_EVERY steps (Schmitzer 2019), so small reg neither underflows nor needs an
    exponential per step. Stops when the row sums are within SINKHORN_MARGINAL_ERROR (L1)."""
    error, step = np.inf, 0
    while step < SINKHORN_ITERATIONS:
        kernel = np.exp((f[:, None] + g[None, :] - m) / reg)
        u, v = np.ones(len(a)), np.ones(len(b))
        for _ in range(ABSORB_EVERY):
            u = 1.0 / (kernel @ (b * v))
            v = 1.0 / (kernel.T @ (a * u))
        step += ABSORB_EVERY
        if not (np.isfinite(u).all() and np.isfinite(v).all()):
            raise FloatingPointError(f"Sinkhorn diverged at reg={reg:.3g}")
        f, g = f + reg * np.log(u), g + reg * np.log(v)
        error = float(np.abs(a * u * (kernel @ (b * v)) - a).sum())
        if error <= SINKHORN_MARGINAL_ERROR:
            break
    return f, g, step, error


def _plan(
    a: np.ndarray, b: np.ndarray, m: np.ndarray, reg: float, f: np.ndarray, g: np.ndarray
) -> np.ndarray:
    return a[:, None] * b[None, :] * np.exp((f[:, None] + g[None, :] - m) / reg)


def _round_plan(p: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The nearby plan with exactly the marginals a and b (Altschuler et al. 2017, Alg. 2)."""
    p = p * np.minimum(a / np.maximum(p.sum(1), 1e-300), 1.0)[:, None]
    p = p * np.minimum(b / np.maximum(p.sum(0), 1e-300), 1.0)[None, :]
    ea, eb = a - p.sum(1), b - p.sum(0)
    missing = ea.sum()
    return p + np.outer(ea, eb) / missing if missing > 0 else p


def _dual_bound(a: np.ndarray, b: np.ndarray, m: np.ndarray, f: np.ndarray) -> float:
    """<a, f'> + <b, g'> for feasible potentials (f' + g' <= M): a lower bound on the cost."""
    g = (m - f[:, None]).min(0)
    f = (m - g[None, :]).min(1)
    return float(a @ f + b @ g)


def wasserstein_sliced(
    images: np.ndarray,
    texts: np.ndarray,
    *,
    n_projections: int = SLICED_PROJECTIONS,
    max_points: int = 10_000,
    seed: int = 0,
) -> float:
    """Sliced W2 (POT `ot.sliced_wasserstein_distance`): root mean square over `n_projections`
    random unit directions (seeded) of the 1-D W2 between the projected clouds. A translation by
    t gives about ||t|| / sqrt(d), not ||t||. O(n_projections * n log n)."""
    import ot

    require_same_dim(images, texts, "Wasserstein distance")
    x, y, a, b = _clouds(images, texts, max_points, seed)
    return float(ot.sliced_wasserstein_distance(x, y, a, b, n_projections, p=2, seed=seed))


def wasserstein_gaussian(images: np.ndarray, texts: np.ndarray) -> float:
    """Closed-form W2 between Gaussians fitted to each cloud (Frechet / Bures-Wasserstein):
    sqrt(||mu1 - mu2||^2 + tr(S1 + S2 - 2 (S1^1/2 S2 S1^1/2)^1/2)), with maximum-likelihood
    covariances. Matrix roots via symmetric eigendecompositions, negative round-off eigenvalues
    clipped to 0, so rank-deficient covariances (n < d) stay finite. Uses every row:
    O((n + m) d^2 + d^3)."""
    require_same_dim(images, texts, "Gaussian Wasserstein distance")
    x, y = np.asarray(images, np.float64), np.asarray(texts, np.float64)
    mu1, mu2 = x.mean(0), y.mean(0)
    s1 = np.cov(x, rowvar=False, bias=True).reshape(x.shape[1], -1)
    s2 = np.cov(y, rowvar=False, bias=True).reshape(y.shape[1], -1)
    r1 = _psd_sqrt(s1)
    cross = np.sqrt(np.clip(np.linalg.eigvalsh(r1 @ s2 @ r1), 0.0, None)).sum()
    w2 = np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2.0 * cross
    return float(np.sqrt(max(w2, 0.0)))


def _psd_sqrt(s: np.ndarray) -> np.ndarray:
    w, v = np.linalg.eigh(s)
    return (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T


def gromov_wasserstein(
    images: np.ndarray, texts: np.ndarray, *, max_points: int = EXACT_POINTS, seed: int = 0
) -> float:
    """Gromov-Wasserstein discrepancy (POT `ot.gromov.gromov_wasserstein2`, square loss) between
    the clouds' Euclidean distance matrices, each divided by its largest entry, so spaces of any
    dimension and scale compare: sum (C1_ik - C2_jl)^2 P_ij P_kl at a local optimum P.
    0 for isometric clouds (up to scale) found by the solver; nonconvex, so an upper bound.
    O(n^3) per iteration at n = max_points per side: ~3 s at 1000."""
    import ot

    x, y, a, b = _clouds(images, texts, max_points, seed)
    c1, c2 = _unit_distances(x), _unit_distances(y)
    return float(ot.gromov.gromov_wasserstein2(c1, c2, a, b, loss_fun="square_loss"))


def _unit_distances(x: np.ndarray) -> np.ndarray:
    import ot

    d = ot.dist(x, x, metric="euclidean")
    top = d.max()
    return d / top if top > 0 else d
