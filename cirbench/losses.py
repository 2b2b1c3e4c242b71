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
