"""Losses shared by methods (methods import these instead of writing their own copies)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def info_nce(query: Tensor, target: Tensor, temperature: float) -> Tensor:
    """Batch InfoNCE: query i's positive is target i, the other targets are its negatives.

    Both inputs are expected L2-normalised, shape [B, D].
    """
    logits = query @ target.t() / temperature
    labels = torch.arange(query.shape[0], device=query.device)
    return F.cross_entropy(logits.float(), labels)


def soft_label_nce(query: Tensor, target: Tensor, labels: Tensor, temperature: float) -> Tensor:
    """InfoNCE in which row i's positive pair counts with its soft label ``labels[i]`` in [0, 1].

    ``sum_i labels_i * CE_i / B``: exactly :func:`info_nce` when every label is 1; a pair whose label
    is 0 contributes no pull towards its (probably wrong) target, while its target still serves as a
    negative for the other rows. Normalised by the batch size, not by the labels' sum, so a batch
    that the filter thinks is mostly noise moves the model less (NCL-CIR's soft-label NCE).
    """
    logits = query @ target.t() / temperature
    rows = torch.arange(query.shape[0], device=query.device)
    per_sample = F.cross_entropy(logits.float(), rows, reduction="none")
    return (labels.to(per_sample.dtype) * per_sample).mean()


def pairwise_kl(query: Tensor, positive: Tensor, negative: Tensor, temperature: float,
                valid: "Tensor | None" = None) -> "tuple[Tensor, Tensor]":
    """Pairwise preference loss and KL term for one (positive, negative) pair per query (DQE-CIR).

    All inputs L2-normalised, [B, D]. With s⁺ = q·p and s⁻ = q·n:

    * pairwise: ``-log σ((s⁺ − s⁻) / τ)`` — the query prefers its target to the negative;
    * KL: ``KL(t ‖ softmax([s⁺, s⁻] / τ))`` where the teacher ``t = softmax([p·p, p·n] / τ)`` is how
      the target itself sees the pair: a negative close to the target keeps part of the mass, so
      the query is aligned with the target's view rather than pushed to reject a related image.

    ``valid`` [B] (bool or 0/1) masks queries without a negative; returns the two means over
    valid rows (zero when none is valid), without a host sync.
    """
    q, p, n = query.float(), positive.float(), negative.float()
    student = torch.stack([(q * p).sum(-1), (q * n).sum(-1)], -1) / temperature
    teacher = torch.stack([(p * p).sum(-1), (p * n).sum(-1)], -1) / temperature
    pair = F.softplus(student[:, 1] - student[:, 0])  # = -log σ(s⁺ − s⁻)
    t_log = teacher.log_softmax(-1)
    kl = (t_log.exp() * (t_log - student.log_softmax(-1))).sum(-1)
    w = torch.ones_like(pair) if valid is None else valid.to(pair.dtype)
    count = w.sum().clamp_min(1.0)
    return (w * pair).sum() / count, (w * kl).sum() / count


def bank_info_nce(query: Tensor, bank: Tensor, labels: Tensor, temperature: float, neg_num: int = 0) -> Tensor:
    """InfoNCE of each query against a static bank of candidates (SPN's stage 2).

    ``query`` [B, D] and ``bank`` [N, D] L2-normalised; ``labels`` [B]: each query's positive row in
    the bank. ``neg_num`` 0 (or >= N-1): every other bank row is a negative (cross-entropy over the
    whole bank). ``neg_num`` > 0: per query, ``neg_num`` negatives drawn uniformly without replacement
    from the other N-1 rows (torch's global RNG, on the bank's device), the positive in column 0.
    """
    n = bank.shape[0]
    q, b = query.float(), bank.float()
    if neg_num <= 0 or neg_num >= n - 1:
        return F.cross_entropy(q @ b.t() / temperature, labels)
    draw = torch.rand(q.shape[0], n - 1, device=bank.device).topk(neg_num, dim=1).indices
    draw = draw + (draw >= labels[:, None]).long()  # skip the positive's own row
    candidates = torch.cat([labels[:, None], draw], dim=1)
    logits = torch.einsum("bd,bkd->bk", q, b[candidates]) / temperature
    return F.cross_entropy(logits, torch.zeros(q.shape[0], dtype=torch.long, device=q.device))
