"""CLIP4Cir baseline (Baldrati et al., CVPRW 2022 / TOMM 2023): a Combiner over frozen CLIP
features, trained with plain InfoNCE — the control every noise table needs.

The query is the paper's second-stage Combiner (:mod:`cirbench_methods.combiner`) over the
L2-normalised reference and text embeddings; targets are the backbone's global image embeddings.
Loss: InfoNCE between the normalised composed query and the in-batch targets; the paper's logit
scale of 100 is temperature 0.01.

Choice: the encoders stay frozen (the paper's first stage fine-tunes CLIP's text encoder; cirbench
keeps every method on the same frozen features so that methods differ only in their own mechanism).
"""
from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from cirbench.method import Method
from cirbench.registry import register_method
from cirbench.types import Dims, Features
from cirbench_methods.combiner import Combiner, CombinerHparams


@register_method("clip4cir")
class Clip4Cir(Method):
    """CLIP4Cir Combiner trained with InfoNCE (see module docstring)."""

    Hparams = CombinerHparams

    def __init__(self, dims: Dims, hparams=None):
        super().__init__(dims, hparams)
        self.combiner = Combiner.from_hparams(dims.embed, self.hp)

    def compose(self, reference: Features, text: Features) -> Tensor:
        return self.combiner(F.normalize(reference.embed, dim=-1), F.normalize(text.embed, dim=-1))
