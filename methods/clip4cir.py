"""CLIP4Cir baseline (Baldrati et al., CVPRW 2022 / TOMM 2023): a Combiner over frozen CLIP
features, trained with plain InfoNCE — the control every noise table needs.

The query is the paper's second-stage Combiner (:mod:`cirbench_methods.combiner`) over the
L2-normalised reference and text embeddings; targets are the backbone's global image embeddings.
Loss: InfoNCE between the normalised composed query and the in-batch targets; the paper's logit
scale of 100 is temperature 0.01.

Choices: the encoders stay frozen (the paper's first stage fine-tunes CLIP; cirbench keeps every
method on the same frozen features so that methods differ only in their own mechanism). The defaults
(AdamW, ``lr`` 1e-3, ``weight_decay`` 1e-2, with the run's batch 128 and 10 epochs) suit the small
embedded benchmark; CLIP4Cir's own Combiner training (ABaldrati/CLIP4Cir ``combiner_train.py`` and its
README command) uses Adam at lr 2e-5 without weight decay, batch 4096, 300 epochs, TargetPad 1.25. The
real-data leaderboards set those values (AdamW with ``weight_decay`` 0 is Adam).
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
