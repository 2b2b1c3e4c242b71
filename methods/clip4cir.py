"""CLIP4Cir baseline (Baldrati et al., CVPRW 2022 / TOMM 2023): a Combiner over frozen CLIP
features, trained with plain InfoNCE — the control every noise table needs.

Combiner, as in the paper's second stage: text and image features are projected (Linear +
ReLU + dropout), concatenated, and mixed by an MLP; a learned sigmoid gate λ blends the raw
features, and the output is ``MLP(z) + λ·text + (1-λ)·image``. Targets are the backbone's
global image embeddings. Loss: InfoNCE between the normalised composed query and the
in-batch targets.

Choices: the projection and hidden widths scale with the backbone (4×D and 8×D; the paper's
2560/5120 for RN50x4's D=640 is this same ratio); the encoders stay frozen (the paper's first
stage fine-tunes CLIP's text encoder; cirbench keeps every method on the same frozen
features so that methods differ only in their own mechanism). Inputs are L2-normalised
before the Combiner, as targets are before the loss. The paper's logit scale of
100 is temperature 0.01.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cirbench.method import Dims, Features, Method
from cirbench.registry import register_method


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

    def forward(self, image: Tensor, text: Tensor) -> Tensor:
        z = torch.cat([self.text_proj(text), self.image_proj(image)], dim=-1)
        lam = self.gate(z)
        return self.mix(z) + lam * text + (1 - lam) * image


    @classmethod
    def from_hparams(cls, dim: int, hp: "CombinerHparams") -> "Combiner":
        return cls(dim, hp.projection_ratio * dim, hp.hidden_ratio * dim, hp.dropout)


@dataclass
class CombinerHparams(Method.Hparams):
    """Settings of every method built on the Combiner (clip4cir, ncl-cir, dqe-cir), so that the
    control and the methods compared with it share one set of defaults."""

    lr: float = 1e-3
    temperature: float = 0.01
    dropout: float = 0.5
    projection_ratio: int = 4
    hidden_ratio: int = 8


@register_method("clip4cir")
class Clip4Cir(Method):
    """CLIP4Cir Combiner trained with InfoNCE (see module docstring)."""

    Hparams = CombinerHparams

    def __init__(self, dims: Dims, hparams=None):
        super().__init__(dims, hparams)
        self.combiner = Combiner.from_hparams(dims.embed, self.hp)

    def compose(self, reference: Features, text: Features) -> Tensor:
        return self.combiner(F.normalize(reference.embed, dim=-1), F.normalize(text.embed, dim=-1))
