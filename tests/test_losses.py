import math

import pytest
import torch
import torch.nn.functional as F

from cirbench.losses import info_nce


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
