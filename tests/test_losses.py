import math

import pytest
import torch

from xmodal.align.losses import (
    MSE,
    HingeRanking,
    InfoNCE,
    ListMLE,
    ListNet,
    build_loss,
)
from xmodal.similarity.differentiable import torch_scores
from xmodal.similarity.metrics import Metric

EYE2 = torch.eye(2, dtype=torch.bool)


def test_infonce_hand_computed():
    scores = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    loss = InfoNCE(temperature=1.0)(scores, EYE2)
    assert loss.item() == pytest.approx(math.log(1 + math.exp(-1)), rel=1e-6)


def test_infonce_leaves_other_positives_out_of_the_denominator():
    # two captions of image 0 (rows 0, 1) and one of image 1 (row 2)
    scores = torch.tensor([[2.0, 0.0], [1.0, 0.5], [0.0, 1.0]])
    pos = torch.tensor([[True, False], [True, False], [False, True]])
    loss = InfoNCE(temperature=1.0)(scores, pos)
    nll = lambda p, negs: -p + math.log(math.exp(p) + sum(math.exp(n) for n in negs))  # noqa: E731
    rows = (nll(2, [0]) + nll(1, [0.5]) + nll(1, [0])) / 3
    # column 0 (image 0): positives 2 and 1, negative 0; column 1: positive 1, negatives 0, 0.5
    cols = ((nll(2, [0]) + nll(1, [0])) / 2 + nll(1, [0, 0.5])) / 2
    assert loss.item() == pytest.approx(0.5 * (rows + cols), rel=1e-6)


def test_hinge_hand_computed_hardest_and_sum():
    scores = torch.tensor([[0.5, 0.6, 0.4], [0.1, 0.8, 0.7], [0.0, 0.2, 0.9]])
    pos = torch.eye(3, dtype=torch.bool)
    m = 0.2
    # row violations: pos 0.5 vs 0.6, 0.4 -> 0.3, 0.1 ; pos 0.8 vs 0.1, 0.7 -> 0, 0.1 ;
    # pos 0.9 vs 0, 0.2 -> 0, 0
    # column violations: pos 0.5 vs 0.1, 0.0 -> 0, 0 ; pos 0.8 vs 0.6, 0.2 -> 0, 0 ;
    # pos 0.9 vs 0.4, 0.7 -> 0, 0
    hardest = HingeRanking(margin=m, hardest=True)(scores, pos)
    summed = HingeRanking(margin=m, hardest=False)(scores, pos)
    assert hardest.item() == pytest.approx(0.5 * (0.3 + 0.1) / 3, abs=1e-6)
    assert summed.item() == pytest.approx(0.5 * (0.3 + 0.1 + 0.1) / 3, abs=1e-6)


def test_listnet_binary_hand_computed():
    scores = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    loss = ListNet(temperature=1.0)(scores, EYE2)
    assert loss.item() == pytest.approx(-math.log(math.e / (math.e + 1)), rel=1e-6)


def test_listnet_graded_targets_softmax_of_relevance():
    scores = torch.tensor([[1.0, 0.0, 0.5]])
    pos = torch.tensor([[True, False, False]])
    rel = torch.tensor([[1.0, 0.0, 0.5]])
    loss = ListNet(temperature=1.0, graded=True, target_temperature=1.0).rows(scores, pos, rel)
    target = torch.softmax(rel, 1)
    assert loss.item() == pytest.approx(-(target * torch.log_softmax(scores, 1)).sum().item())


def test_listmle_plackett_luce_hand_computed():
    # one row, two positives (scores 1 and 2) and one negative (0): the positives go first,
    # the better-scored one first: -log(e^2/(e^2+e^1+e^0)) - log(e^1/(e^1+e^0))
    scores = torch.tensor([[1.0, 0.0, 2.0]])
    pos = torch.tensor([[True, False, True]])
    got = ListMLE(temperature=1.0).rows(scores, pos, None)
    want = -math.log(math.e**2 / (math.e**2 + math.e + 1)) - math.log(math.e / (math.e + 1))
    assert got.item() == pytest.approx(want, rel=1e-6)


def test_listmle_graded_orders_by_relevance_up_to_top_k():
    scores = torch.tensor([[0.0, 1.0, 2.0]])
    pos = torch.tensor([[True, False, False]])
    rel = torch.tensor([[1.0, 0.2, 0.5]])  # target order: 0, 2, 1
    got = ListMLE(temperature=1.0, graded=True, top_k=2).rows(scores, pos, rel)
    want = -math.log(1 / (1 + math.e + math.e**2)) - math.log(math.e**2 / (math.e**2 + math.e))
    assert got.item() == pytest.approx(want, rel=1e-6)


def test_mse_hand_computed():
    assert MSE()(torch.tensor([[1.0, 2.0]]), torch.tensor([[0.0, 0.0]])).item() == 2.5


@pytest.mark.parametrize("name", ["infonce", "hinge", "listnet", "listmle"])
@pytest.mark.parametrize("metric", list(Metric))
def test_gradients_reach_every_parameter(name, metric):
    torch.manual_seed(0)
    params = {"graded": True} if name in ("listnet", "listmle") else {}
    loss_fn = build_loss(name, **params)
    proj_t, proj_i = torch.nn.Linear(5, 4), torch.nn.Linear(6, 4)
    texts, images = torch.randn(6, 5), torch.randn(3, 6)
    owner = torch.tensor([0, 0, 1, 1, 2, 2])
    pos = owner[:, None] == torch.arange(3)[None, :]
    rel = torch.rand(6, 3)
    scores = torch_scores(proj_t(texts), proj_i(images), metric)
    loss_fn(scores, pos, rel).backward()
    params = [*proj_t.parameters(), *proj_i.parameters(), *loss_fn.parameters()]
    for p in params:
        assert p.grad is not None and p.grad.abs().sum() > 0


def test_temperature_is_clamped():
    loss_fn = InfoNCE(temperature=1e-4, max_scale=100.0)
    assert loss_fn.temperature.value == pytest.approx(0.01)


def test_bad_loss_name_or_parameter_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown loss 'triplet'"):
        build_loss("triplet")
    with pytest.raises(ValueError, match="'infonce' got unknown parameter.*margin"):
        build_loss("infonce", margin=0.2)
