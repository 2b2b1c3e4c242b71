"""The shared losses, on hand-computed examples."""
import math

import pytest
import torch
import torch.nn.functional as F

from cirbench.losses import bank_info_nce, info_nce, pairwise_kl, soft_label_nce


def test_info_nce_matches_hand_computation():
    q = F.normalize(torch.tensor([[1.0, 0.0], [0.6, 0.8]]), dim=-1)
    t = F.normalize(torch.tensor([[1.0, 0.0], [0.0, 1.0]]), dim=-1)
    tau = 0.5
    # row 0: sims (1, 0) ; row 1: sims (0.6, 0.8)
    l0 = -math.log(math.exp(1 / tau) / (math.exp(1 / tau) + math.exp(0)))
    l1 = -math.log(math.exp(0.8 / tau) / (math.exp(0.6 / tau) + math.exp(0.8 / tau)))
    assert info_nce(q, t, tau).item() == pytest.approx((l0 + l1) / 2, rel=1e-6)


def test_info_nce_prefers_aligned_pairs():
    torch.manual_seed(0)
    t = F.normalize(torch.randn(8, 16), dim=-1)
    aligned = info_nce(t, t, 0.05)
    shuffled = info_nce(t.roll(1, 0), t, 0.05)
    assert aligned < 0.1 < shuffled


def _pairs(n=6, d=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(n, d, generator=g), dim=-1), F.normalize(torch.randn(n, d, generator=g), dim=-1)


def test_soft_label_nce_is_info_nce_with_all_ones():
    q, t = _pairs()
    assert soft_label_nce(q, t, torch.ones(6), 0.07).item() == pytest.approx(info_nce(q, t, 0.07).item(), rel=1e-6)


def test_soft_label_nce_down_weights_a_label_zero_pair():
    q, t = _pairs()
    q.requires_grad_(True)
    labels = torch.tensor([1.0, 0.0, 1.0, 1.0, 0.5, 1.0])
    loss = soft_label_nce(q, t, labels, 0.07)
    per_row = F.cross_entropy(q @ t.t() / 0.07, torch.arange(6), reduction="none")
    assert loss.item() == pytest.approx((labels * per_row).sum().item() / 6, rel=1e-6)
    loss.backward()
    assert q.grad[1].abs().max() == 0  # the label-0 query is not pulled towards its target
    assert q.grad[0].abs().max() > 0
    # a label-0 pair's target still serves as a negative for the other rows
    t2 = t.clone().requires_grad_(True)
    soft_label_nce(q.detach(), t2, labels, 0.07).backward()
    assert t2.grad[1].abs().max() > 0


def test_pairwise_kl_on_a_hand_computed_example():
    q = torch.tensor([[0.6, 0.8], [1.0, 0.0]])
    p = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    n = torch.tensor([[0.0, 1.0], [0.0, 1.0]])
    # row 0 at τ = 0.5: s⁺ = 0.6, s⁻ = 0.8 -> pairwise = log(1 + e^{(0.8-0.6)/0.5}) = log(1 + e^0.4)
    # teacher softmax([1, 0] / 0.5) = [e²/(e²+1), 1/(e²+1)], student softmax([1.2, 1.6])
    pair, kl = pairwise_kl(q, p, n, 0.5, valid=torch.tensor([True, False]))
    teacher = [math.e ** 2 / (math.e ** 2 + 1), 1 / (math.e ** 2 + 1)]
    student = [1 / (1 + math.e ** 0.4), math.e ** 0.4 / (1 + math.e ** 0.4)]
    assert pair.item() == pytest.approx(math.log(1 + math.e ** 0.4), abs=1e-6)  # 0.91302
    assert kl.item() == pytest.approx(sum(t * math.log(t / s) for t, s in zip(teacher, student)), abs=1e-6)
    assert kl.item() == pytest.approx(0.5, abs=1e-5)
    # row 1 alone: the query sees the pair as the target does -> KL 0; pairwise log(1 + e^{-2})
    pair, kl = pairwise_kl(q, p, n, 0.5, valid=torch.tensor([0.0, 1.0]))
    assert pair.item() == pytest.approx(math.log(1 + math.e ** -2), abs=1e-6)
    assert kl.item() == pytest.approx(0.0, abs=1e-6)
    # no valid row: zero, not NaN
    pair, kl = pairwise_kl(q, p, n, 0.5, valid=torch.tensor([False, False]))
    assert pair.item() == 0.0 and kl.item() == 0.0


def test_bank_loss_matches_a_hand_computed_example():
    q = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    bank = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]])
    labels = torch.tensor([2, 1])
    tau = 0.5
    # query 0: sims (1, 0, 0.6), positive 0.6; query 1: sims (0, 1, 0.8), positive 1
    l0 = -(0.6 / tau) + math.log(math.exp(1 / tau) + math.exp(0) + math.exp(0.6 / tau))
    l1 = -(1 / tau) + math.log(math.exp(0) + math.exp(1 / tau) + math.exp(0.8 / tau))
    assert bank_info_nce(q, bank, labels, tau).item() == pytest.approx((l0 + l1) / 2, rel=1e-6)

    # neg_num sampled negatives: the positive is never drawn as its own negative. With every other
    # row identical, the loss is known whichever rows are drawn.
    bank = torch.tensor([[0.0, 1.0]] * 6 + [[1.0, 0.0]])
    q, labels = torch.tensor([[1.0, 0.0]]), torch.tensor([6])
    for k in (1, 3, 5):
        want = -(1 / tau) + math.log(math.exp(1 / tau) + k * math.exp(0.0))
        for _ in range(5):
            assert bank_info_nce(q, bank, labels, tau, neg_num=k).item() == pytest.approx(want, rel=1e-6)
