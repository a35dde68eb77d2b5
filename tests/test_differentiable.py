"""Differentiable metric scores agree with the reference formulas, values and gradients."""

import numpy as np
import pytest
import torch

from xmodal.similarity import Metric, reference_scores
from xmodal.similarity.differentiable import torch_scores


@pytest.mark.parametrize("metric", list(Metric))
def test_values_match_reference(metric):
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(7, 5)), rng.normal(size=(4, 5))
    a[0, :2] = 0.0
    b[1, :2] = 0.0  # chi-square 0/0 terms
    got = torch_scores(torch.from_numpy(a), torch.from_numpy(b), metric).numpy()
    np.testing.assert_allclose(got, reference_scores(a, b, metric), atol=1e-6)


def _broadcast_chi_square(a, b, eps=1e-8):
    diff = a[:, None, :] - b[None, :, :]
    return -0.5 * (diff * diff / (a.abs()[:, None, :] + b.abs()[None, :, :] + eps)).sum(2)


def test_chi_square_gradient_matches_autograd_of_the_formula():
    torch.manual_seed(0)
    a = torch.randn(9, 6, dtype=torch.float64, requires_grad=True)
    b = torch.randn(5, 6, dtype=torch.float64, requires_grad=True)
    g = torch.randn(9, 5, dtype=torch.float64)
    got = torch.autograd.grad((torch_scores(a, b, "chi_square") * g).sum(), (a, b))
    want = torch.autograd.grad((_broadcast_chi_square(a, b) * g).sum(), (a, b))
    for x, y in zip(got, want, strict=True):
        torch.testing.assert_close(x, y)
    assert torch.autograd.gradcheck(
        lambda x, y: torch_scores(x, y, "chi_square"),
        (a[:3].detach().requires_grad_(), b[:2].detach().requires_grad_()),
    )
