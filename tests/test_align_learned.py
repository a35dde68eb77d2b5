"""Learned metrics: blocked gallery scoring is exact, and invalid combinations fail early."""

import numpy as np
import pytest
import torch

from xmodal.align.nets import BilinearScorer, MLPPairScorer, blocked_pair_scores
from xmodal.align.registry import build_aligner


def mlp_reference(net: MLPPairScorer, u: torch.Tensor, v: torch.Tensor) -> np.ndarray:
    """The literal definition: the MLP applied to [u, v, u*v, |u-v|] of every pair."""
    rows = []
    for ui in u:
        vi = ui.expand_as(v)
        pair = torch.cat([vi, v, vi * v, (vi - v).abs()], dim=1)
        rows.append(net.rest(net.first(pair)).squeeze(-1))
    return torch.stack(rows).numpy()


def bilinear_reference(net: BilinearScorer, u: torch.Tensor, v: torch.Tensor) -> np.ndarray:
    u = u / u.norm(dim=1, keepdim=True)
    v = v / v.norm(dim=1, keepdim=True)
    w = torch.diag(net.diag) + net.left @ net.right.T
    return np.array([[float(a @ w @ b) for b in v] for a in u])


@pytest.mark.parametrize("budget", [1, 50, 10_000_000])
@pytest.mark.parametrize("name", ["mlp", "bilinear"])
def test_blocked_scores_equal_the_pairwise_definition(name, budget):
    torch.manual_seed(0)
    net = MLPPairScorer(6, 10, 2, 0.0) if name == "mlp" else BilinearScorer(6, 3)
    with torch.no_grad():  # a non-trivial bilinear form
        for p in net.parameters():
            p.add_(0.3 * torch.randn_like(p))
    net.eval()
    u, v = torch.randn(13, 6), torch.randn(17, 6)
    with torch.no_grad():
        want = mlp_reference(net, u, v) if name == "mlp" else bilinear_reference(net, u, v)
    got = blocked_pair_scores(net, u.numpy(), v.numpy(), "cpu", budget=budget)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_mlp_scorer_block_memory_is_bounded():
    net = MLPPairScorer(4, 8, 1, 0.0).eval()
    calls = []
    original = net.forward
    net.forward = lambda u, v: calls.append(len(u) * len(v)) or original(u, v)
    blocked_pair_scores(
        net, np.zeros((30, 4), np.float32), np.zeros((40, 4), np.float32), "cpu", 64
    )
    assert max(calls) * net.pair_width() <= 64 and sum(calls) == 30 * 40


@pytest.mark.parametrize("kind", ["mlp_scorer", "bilinear"])
def test_regression_loss_with_a_learned_scorer_is_refused(kind):
    with pytest.raises(ValueError, match="learned network.*mse"):
        build_aligner(kind, loss="mse")


def test_unknown_training_or_loss_parameter_is_refused():
    with pytest.raises(ValueError, match="unknown parameter.*epoch"):
        build_aligner("linear", epoch=3)
    with pytest.raises(ValueError, match="'hinge' got unknown parameter.*temperature"):
        build_aligner("linear", loss="hinge", loss_params={"temperature": 0.1})
