"""CLIP4Cir (Baldrati et al., CVPRW 2022 / TOMM 2023): a Combiner over CLIP features, trained with
InfoNCE — the control every noise table needs — and, with ``finetune``, the paper's two stages.

* ``finetune=none`` (default): the paper's second stage alone, over the frozen backbone. The query is the
  Combiner (:mod:`cirbench_methods.combiner`) over the L2-normalised reference and text embeddings; targets are
  the backbone's global image embeddings. Loss: InfoNCE between the normalised composed query and the in-batch
  targets; the paper's logit scale of 100 is temperature 0.01.
* ``finetune=text`` / ``both`` / ``image``: stage 1 (``finetune``, ``clip_fine_tune.py``) trains those CLIP
  towers with the element-wise sum as composition, ``normalize(reference + text)``, against the normalised
  targets, cross-entropy over in-batch targets at logit scale 100 (``finetune_temperature`` 0.01), AdamW at
  ``finetune_lr`` 2e-6 for ``finetune_epochs`` (0: the run's epochs; the paper's README: 100) at
  ``finetune_batch_size`` (0: the run's; the paper: 128); validation ranks with the sum and the
  gallery the trained towers embed. Stage 2 (``main``, ``combiner_train.py``) starts from the best stage-1
  epoch (the paper trains its Combiner over the best fine-tuned CLIP), freezes the towers and trains the
  Combiner over the fine-tuned features. The best epoch over both stages is the run's model; a buffer
  records which composition it ranks with. ``combiner=false`` stops after stage 1: the fine-tuned CLIP with
  the sum, the "CLIP4Cir" base of SPN's CLIP rows (``spn:clip4cir`` then fine-tunes its text tower).

Choices: the defaults (AdamW, ``lr`` 1e-3, ``weight_decay`` 1e-2, with the run's batch 128 and 10 epochs) suit
the small embedded benchmark; CLIP4Cir's own Combiner training (ABaldrati/CLIP4Cir ``combiner_train.py`` and its
README command) uses Adam at lr 2e-5 without weight decay, batch 4096, 300 epochs, TargetPad 1.25. The
real-data leaderboards set those values (AdamW with ``weight_decay`` 0 is Adam). Stage 1 uses the method's
``weight_decay`` (the paper: AdamW's default 1e-2) and AdamW's default eps (the paper: 1e-7).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

from cirbench.errors import ConfigError
from cirbench.losses import info_nce
from cirbench.method import Method
from cirbench.registry import register_method
from cirbench.types import Batch, Dims, Features, Stage
from cirbench_methods.combiner import Combiner, CombinerHparams

#: ``finetune`` values and the CLIP towers stage 1 trains
FINETUNE: Dict[str, Tuple[str, ...]] = {"none": (), "text": ("text",), "image": ("image",), "both": ("image", "text")}
FINETUNE_STAGE = "finetune"


@register_method("clip4cir")
class Clip4Cir(Method):
    """CLIP4Cir: optional CLIP fine-tuning with the sum composition, then the Combiner (see module docstring)."""

    @dataclass
    class Hparams(CombinerHparams):
        finetune: str = "none"  # none | text | image | both: the towers stage 1 trains
        finetune_epochs: int = 0  # 0: the run's epochs
        finetune_lr: float = 2e-6
        finetune_batch_size: int = 0  # 0: the run's batch size (CLIP4Cir: 128 in stage 1, 4096 in stage 2)
        finetune_temperature: float = 0.01
        combiner: bool = True  # with finetune: false = stage 1 alone, the fine-tuned CLIP with the sum (SPN's base)

    def __init__(self, dims: Dims, hparams=None):
        super().__init__(dims, hparams)
        if self.hp.finetune not in FINETUNE:
            raise ConfigError(f"clip4cir.finetune must be one of {', '.join(FINETUNE)}, got {self.hp.finetune!r}")
        for name in ("finetune_epochs", "finetune_batch_size"):
            if getattr(self.hp, name) < 0:
                raise ConfigError(f"clip4cir.{name} must be >= 0, got {getattr(self.hp, name)}")
        self.towers = FINETUNE[self.hp.finetune]
        # stage 1 alone (combiner=false) is the fine-tuned CLIP with the sum: no Combiner to build
        self.combiner = Combiner.from_hparams(dims.embed, self.hp) if self.hp.combiner or not self.towers else None
        if self.towers:  # True while the query is stage 1's sum: saved with the weights, so a model from
            # either stage ranks with its own composition; `_sum` mirrors it on the host (no device sync per step)
            self.register_buffer("sum_composition", torch.tensor(True))
            self._sum = True
            self.register_load_state_dict_post_hook(lambda module, _: module._sync_sum())

    def _sync_sum(self) -> None:
        self._sum = bool(self.sum_composition)

    def stages(self, epochs: int) -> List[Stage]:
        if not self.towers:
            return [Stage("main", epochs, self.parameters, self.loss)]
        stage1 = Stage(FINETUNE_STAGE, self.hp.finetune_epochs or epochs, lambda: [], self.sum_loss,
                       lr=self.hp.finetune_lr, batch_size=self.hp.finetune_batch_size or None, trains=self.towers)
        if not self.hp.combiner:
            return [stage1]
        return [stage1, Stage("main", epochs, self.combiner.parameters, self.loss, from_best=True)]

    def on_epoch_start(self, ctx) -> None:
        if self.towers and ctx.stage in (FINETUNE_STAGE, "main"):  # a wrapper's later stage keeps the last one
            self.sum_composition.fill_(ctx.stage == FINETUNE_STAGE)
            self._sum = ctx.stage == FINETUNE_STAGE

    def compose(self, reference: Features, text: Features) -> Tensor:
        if self.towers and self._sum:
            return reference.embed + text.embed  # normalised by every caller: CLIP4Cir's element_wise_sum
        return self.combiner(F.normalize(reference.embed, dim=-1), F.normalize(text.embed, dim=-1))

    def sum_loss(self, batch: Batch, ctx) -> Tensor:
        """Stage 1: cross-entropy of the normalised sum against the normalised in-batch targets."""
        query = F.normalize(batch.reference.embed + batch.text.embed, dim=-1)
        target = F.normalize(batch.target.embed, dim=-1)
        return info_nce(query, target, self.hp.finetune_temperature)
