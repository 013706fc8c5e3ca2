import math

import pytest
import torch
import torch.nn.functional as F

from dmpo_trl.losses import dmpo_loss, pairwise_sigmoid_loss, plackett_luce_loss, sdpo_loss


def dpo(chosen, rejected, beta):
    return -F.logsigmoid(beta * (chosen - rejected))


@pytest.mark.parametrize("loss_fn", [dmpo_loss, sdpo_loss, pairwise_sigmoid_loss, plackett_luce_loss])
def test_k1_is_dpo(loss_fn):
    chosen, rejected = torch.tensor([0.3, -1.2, 2.0]), torch.tensor([[0.1], [0.5], [-3.0]])
    mask = torch.ones(3, 1, dtype=torch.bool)
    torch.testing.assert_close(loss_fn(chosen, rejected, mask, 0.7), dpo(chosen, rejected[:, 0], 0.7))


def test_hand_numbers():
    chosen = torch.tensor([1.0])
    rejected = torch.tensor([[0.0, 2.0, 4.0]])
    mask = torch.tensor([[True, True, False]])  # the 4.0 is padding
    beta = 0.5
    # DMPO: mean of real negatives is 1.0 -> -log sigmoid(0) = log 2
    assert dmpo_loss(chosen, rejected, mask, beta).item() == pytest.approx(math.log(2))
    # S-DPO: -log sigmoid(-log(exp(0.5*(0-1)) + exp(0.5*(2-1))))
    lse = math.log(math.exp(-0.5) + math.exp(0.5))
    assert sdpo_loss(chosen, rejected, mask, beta).item() == pytest.approx(-math.log(1 / (1 + math.exp(lse))))
    # sigmoid: mean of the two pairwise DPO losses
    expected = (-math.log(1 / (1 + math.exp(-0.5))) - math.log(1 / (1 + math.exp(0.5)))) / 2
    assert pairwise_sigmoid_loss(chosen, rejected, mask, beta).item() == pytest.approx(expected)


def test_padding_does_not_change_the_loss():
    chosen = torch.tensor([0.4])
    short = torch.tensor([[0.1, -0.2]])
    padded = torch.tensor([[0.1, -0.2, 123.0, -50.0]])
    for loss_fn in (dmpo_loss, sdpo_loss, pairwise_sigmoid_loss):
        a = loss_fn(chosen, short, torch.ones(1, 2, dtype=torch.bool), 1.0)
        b = loss_fn(chosen, padded, torch.tensor([[True, True, False, False]]), 1.0)
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("margin", [1e4, -1e4])
def test_sdpo_is_finite_at_extreme_margins(margin):
    chosen = torch.tensor([margin, 0.0], requires_grad=True)
    rejected = torch.tensor([[0.0, -margin / 2], [margin, 1.0]], requires_grad=True)
    mask = torch.tensor([[True, True], [True, False]])
    loss = sdpo_loss(chosen, rejected, mask, beta=1.0)
    loss.sum().backward()
    assert torch.isfinite(loss).all()
    assert torch.isfinite(chosen.grad).all() and torch.isfinite(rejected.grad).all()
    # softplus(logsumexp(z)) ~ max(0, max z) when the largest logit is huge in either direction
    largest = max(0.0 - margin, -margin / 2 - margin)
    assert loss[0].item() == pytest.approx(max(0.0, largest), abs=1e-3)


def test_plackett_luce_matches_hand_computation():
    """-log P(ranking chosen > r1 > r2) under Plackett-Luce, written out term by term; padding changes nothing."""
    beta = 0.5
    chosen, rejected = torch.tensor([1.0, 0.2]), torch.tensor([[0.0, 2.0, 9.0], [-1.0, 3.0, 0.5]])
    mask = torch.tensor([[True, True, False], [True, True, True]])
    loss = plackett_luce_loss(chosen, rejected, mask, beta)

    def by_hand(scores):
        s = [beta * x for x in scores]
        return -sum(s[i] - math.log(sum(math.exp(x) for x in s[i:])) for i in range(len(s)))

    assert loss[0].item() == pytest.approx(by_hand([1.0, 0.0, 2.0]), abs=1e-6)
    assert loss[1].item() == pytest.approx(by_hand([0.2, -1.0, 3.0, 0.5]), abs=1e-6)
    # its first term is S-DPO's loss; the rest orders the negatives
    first_term = sdpo_loss(chosen[:1], rejected[:1], mask[:1], beta)
    assert loss[0] > first_term[0]


def test_plackett_luce_is_finite_for_huge_margins():
    chosen = torch.tensor([1e4, -1e4], requires_grad=True)
    rejected = torch.tensor([[-1e4, 0.0], [1e4, 0.0]], requires_grad=True)
    loss = plackett_luce_loss(chosen, rejected, torch.tensor([[True, False], [True, True]]), beta=1.0).sum()
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(chosen.grad).all() and torch.isfinite(rejected.grad).all()
