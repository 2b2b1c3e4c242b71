"""CLIP4Cir's Combiner (Baldrati et al., CVPRW 2022 / TOMM 2023, second stage) and its
hyper-parameters, shared by every method built on it (clip4cir, ncl-cir, dqe-cir), so that the
control and the methods compared with it share one set of defaults.

Text and image features are projected (Linear + ReLU + dropout), concatenated, and mixed by an
MLP; a learned sigmoid gate λ blends the raw features, and the output is
``MLP(z) + λ·text + (1-λ)·image``.

Choice: the projection and hidden widths scale with the backbone (4×D and 8×D; the paper's
2560/5120 for RN50x4's D=640 is this same ratio).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
from torch import Tensor, nn

from cirbench.method import Method


@dataclass
class CombinerHparams(Method.Hparams):
    """Settings of every method built on the Combiner."""

    lr: float = 1e-3
    temperature: float = 0.01
    dropout: float = 0.5
    projection_ratio: int = 4
    hidden_ratio: int = 8


class Combiner(nn.Module):
    """CLIP4Cir's Combiner: gated residual blend of text and image plus a learned MLP term."""

    def __init__(self, dim: int, projection: int, hidden: int, dropout: float = 0.5):
        super().__init__()
        self.text_proj = nn.Sequential(nn.Linear(dim, projection), nn.ReLU(), nn.Dropout(dropout))
        self.image_proj = nn.Sequential(nn.Linear(dim, projection), nn.ReLU(), nn.Dropout(dropout))
        self.mix = nn.Sequential(nn.Linear(2 * projection, hidden), nn.ReLU(), nn.Dropout(dropout),
                                 nn.Linear(hidden, dim))
        self.gate = nn.Sequential(nn.Linear(2 * projection, hidden), nn.ReLU(), nn.Dropout(dropout),
                                  nn.Linear(hidden, 1), nn.Sigmoid())

    @classmethod
    def from_hparams(cls, dim: int, hp: CombinerHparams) -> "Combiner":
        return cls(dim, hp.projection_ratio * dim, hp.hidden_ratio * dim, hp.dropout)

    def project(self, image: Tensor, text: Tensor) -> Tensor:
        """``z`` [B, 2·projection]: the projected text and image features that ``mix`` and ``gate`` read
        (DQE-CIR's attribute heads read them too)."""
        return torch.cat([self.text_proj(text), self.image_proj(image)], dim=-1)

    def forward(self, image: Tensor, text: Tensor, projected: Optional[Tensor] = None) -> Tensor:
        """The composed query; ``projected`` is ``project(image, text)`` when the caller has it already."""
        z = self.project(image, text) if projected is None else projected
        lam = self.gate(z)
        return self.mix(z) + lam * text + (1 - lam) * image


__all__ = ["Combiner", "CombinerHparams"]
