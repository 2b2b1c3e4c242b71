"""Fine-tuning backbone towers inside the one training loop.

A method says per stage which towers of the backbone it trains (``Stage.trains``: ``("text",)``,
``("image", "text")``; :data:`cirbench.backbones.base.TOWERS`). For such a cell the runner gives the
method its own copy of the backbone (``method.backbone``, so checkpoints and ``best_model.pt`` hold
its weights) and :class:`TrainableTowers` does the rest for :func:`cirbench.training.fit`:

* **Inputs.** A trained image tower reads decoded pixels (:mod:`cirbench.pixels`, each image decoded
  once per cache); a trained text tower reads token ids, tokenised once. Towers a stage does not
  train keep coming from the feature tables, as for every frozen method.
* **Gradients reach exactly the declared towers**: before each stage every backbone parameter is
  frozen and those of the stage's towers are unfrozen; the optimizer holds the stage's own
  parameters plus those towers'.
* **Features follow the weights.** After an epoch that trained a tower, the feature tables the
  training set, the validation and the method's hooks read (image table: gallery, bank, negative
  pools; text table) are re-embedded with the current towers (``refresh``), so evaluation ranks a
  gallery embedded by the trained towers, and a later frozen stage (CLIP4Cir's Combiner stage)
  trains over the fine-tuned features. Only changed towers are re-embedded.
"""
from __future__ import annotations

import copy
from typing import Iterable, List, Optional, Sequence, Set

import torch
from torch import Tensor, nn

from .backbones.base import TOWERS, Backbone
from .errors import ConfigError
from .features import FeatureTable, concat_features
from .pixels import PixelTable, pixel_table
from .types import Features, Stage


def trained_towers(stages: Iterable[Stage]) -> Set[str]:
    """Every tower some stage trains (checked against :data:`TOWERS`)."""
    out: Set[str] = set()
    for stage in stages:
        unknown = sorted(set(stage.trains) - set(TOWERS))
        if unknown:
            raise ConfigError(f"stage {stage.name!r} trains unknown tower(s) {', '.join(unknown)}; "
                              f"towers: {', '.join(TOWERS)}")
        out |= set(stage.trains)
    return out


class TrainableTowers:
    """The fine-tuned backbone of one cell and the inputs of its towers (see the module docstring).

    ``images`` / ``texts`` are the cell's own feature tables: ``refresh`` replaces their features in
    place, so every holder of the tables sees the re-embedded ones."""

    def __init__(self, backbone: Backbone, towers: Set[str], images: FeatureTable, texts: FeatureTable,
                 tokens: bool):
        self.backbone, self.towers, self.tokens = backbone, set(towers), tokens
        self.images, self.texts = images, texts
        self.trains: Sequence[str] = ()
        self.stale: Set[str] = set()  # towers whose weights changed since the tables were embedded
        self.pixels: Optional[PixelTable] = None
        self.token_ids: Optional[Tensor] = None

    @classmethod
    def attach(cls, method: nn.Module, backbone: Backbone, towers: Set[str], images: FeatureTable,
               texts: FeatureTable, image_paths, tokens: bool, cache_dir, progress: bool = True,
               grad_checkpointing: bool = False) -> "TrainableTowers":
        """Give ``method`` its own copy of ``backbone`` (``method.backbone``, frozen until a stage
        trains a tower) and own copies of the feature tables; returns the towers' helper."""
        own = copy.deepcopy(backbone).requires_grad_(False)
        if grad_checkpointing:
            own.set_grad_checkpointing(True)
        method.backbone = own
        images = FeatureTable(images.keys, images.features)
        texts = FeatureTable(texts.keys, texts.features)
        out = cls(own, towers, images, texts, tokens)
        if "image" in towers:
            out.pixels = pixel_table(own.preprocess, images.keys, image_paths, cache_dir, progress)
        if "text" in towers:
            out.token_ids = own.tokenize(texts.keys).to(images.features.embed.device)
        return out

    # -- the training loop's calls ----------------------------------------------------------------
    def start_stage(self, stage: Stage) -> None:
        """Freeze the backbone but the stage's towers; re-embed tables whose towers changed."""
        self.refresh()
        self.backbone.requires_grad_(False)
        self.trains = tuple(stage.trains)
        for tower in self.trains:
            for p in self.backbone.tower_parameters(tower):
                p.requires_grad_(True)

    def parameters(self, trains: Sequence[str]) -> List[nn.Parameter]:
        return [p for tower in trains for p in self.backbone.tower_parameters(tower)]

    def trained(self) -> None:
        """The current stage's towers took optimiser steps: their tables are stale."""
        self.stale |= set(self.trains)

    def mark_all_stale(self) -> None:
        """Weights came from a checkpoint: every trained tower's table must be re-embedded."""
        self.stale |= self.towers

    # -- inputs of a batch --------------------------------------------------------------------------
    def prefetch(self, rows: Tensor) -> None:
        """Image-table ``rows`` (on the host) of the next batch, when this stage trains the image tower."""
        if "image" in self.trains:
            self.pixels.prefetch(rows, self.images.features.embed.device)

    def image_features(self, rows: Tensor) -> Features:
        """Features of image-table ``rows`` from the (trainable) image tower, with gradients."""
        device = self.images.features.embed.device
        return self.backbone.embed_images(self.pixels.batch(rows, device), tokens=self.tokens)

    def text_features(self, rows: Tensor) -> Features:
        """Features of text-table ``rows`` from the (trainable) text tower, with gradients; the
        table's ``extra`` (the method's text-side features) rides along."""
        out = self.backbone.embed_token_ids(self.token_ids[rows], tokens=self.tokens)
        extra = self.texts.features.extra
        return Features(out.embed, out.tokens, out.mask, None if extra is None else extra[rows])

    # -- re-embedding -------------------------------------------------------------------------------
    @torch.no_grad()
    def refresh(self, chunk: int = 256) -> None:
        """Re-embed the tables of the stale towers with the current weights (eval mode)."""
        if not self.stale:
            return
        was_training = self.backbone.training
        self.backbone.eval()
        if "image" in self.stale:
            rows = torch.arange(len(self.images))
            parts = [self.image_features(rows[s:s + chunk]) for s in range(0, len(rows), chunk)]
            self.images.features = _stored(concat_features(parts), self.images.features)
        if "text" in self.stale:
            rows = torch.arange(len(self.texts), device=self.token_ids.device)
            parts = [self.text_features(rows[s:s + chunk]) for s in range(0, len(rows), chunk)]
            self.texts.features = _stored(concat_features(parts), self.texts.features)
        self.backbone.train(was_training)
        self.stale.clear()


def _stored(new: Features, old: Features) -> Features:
    """``new`` in the storage of ``old``: float32 global features, tokens in the table's dtype and
    width (the frozen tables trim text padding no text uses), the same ``extra``."""
    tokens, mask = new.tokens, new.mask
    if old.tokens is not None and tokens is not None:
        width = old.tokens.shape[1]
        tokens, mask = tokens[:, :width].to(old.tokens.dtype), None if mask is None else mask[:, :width]
    return Features(new.embed.float(), tokens, mask, old.extra)


__all__ = ["TrainableTowers", "trained_towers"]
