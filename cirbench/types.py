"""The data every part of cirbench passes around: backbone features, training batches, layer sizes
and training stages. A leaf: it imports nothing of cirbench, so backbones, the training loop and
methods can all use it without importing each other."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterable, Optional, Tuple

import torch
from torch import Tensor, nn


@dataclass
class Features:
    """Backbone outputs for a batch of images or texts, in the joint embedding space.

    ``embed`` [B, D] is the global embedding (not normalised). ``tokens`` [B, T, D] are the
    token features projected into the same space (images: global token first, then patches;
    texts: start token, words, end token), present only for methods with ``needs_tokens``;
    ``mask`` [B, T] marks real (non-padding) tokens. ``extra`` [B, K] is what the method's
    ``text_side_features`` derived from the raw texts (texts only; ``None`` otherwise).
    """

    embed: Tensor
    tokens: Optional[Tensor] = None
    mask: Optional[Tensor] = None
    extra: Optional[Tensor] = None

    def __getitem__(self, rows) -> "Features":
        pick = lambda t: None if t is None else t[rows]  # noqa: E731
        return Features(self.embed[rows], pick(self.tokens), pick(self.mask), pick(self.extra))

    def __len__(self) -> int:
        return self.embed.shape[0]

    def to(self, device, dtype: Optional[torch.dtype] = None) -> "Features":
        move = lambda t: None if t is None else t.to(device, dtype if t.is_floating_point() else None)  # noqa: E731
        return Features(move(self.embed), move(self.tokens), move(self.mask), move(self.extra))


@dataclass
class Batch:
    """A training batch: features of references, texts and targets, and where they came from.

    ``index`` holds the triplets' positions in the training set (for per-triplet state such as
    clean probabilities); ``target_rows`` the targets' rows in the image table (to spot the
    same target twice in a batch).
    """

    index: Tensor
    reference: Features
    text: Features
    target: Features
    target_rows: Tensor


@dataclass
class Stage:
    """One training stage: which parameters train, with which loss, for how long.

    ``parameters`` and ``loss`` are callables so that a stage can freeze parts that earlier
    stages trained (SPN's stage 2); ``loss(batch, ctx)`` gets the batch and the training loop's
    ``TrainContext``. ``lr`` / ``batch_size`` default to the run's. ``trains`` names the backbone
    towers the stage fine-tunes besides ``parameters`` (``("text",)``, ``("image", "text")``;
    :mod:`cirbench.towers`). ``from_best``: the stage starts from the weights of the best epoch so
    far instead of the last (CLIP4Cir's Combiner stage starts from the best fine-tuned CLIP).
    ``annotated_only``: the stage trains on the dataset's triplets, not on those the method generated
    (SPN4CIR adds its positives in stage 2 only).
    """

    name: str
    epochs: int
    parameters: Callable[[], Iterable[nn.Parameter]]
    loss: Callable[[Batch, Any], Tensor]
    lr: Optional[float] = None
    batch_size: Optional[int] = None
    trains: Tuple[str, ...] = ()
    from_best: bool = False
    annotated_only: bool = False


@dataclass
class Dims:
    """Sizes a method needs to build its layers: the joint embedding width and the token width
    (0 when the run has no token features)."""

    embed: int
    tokens: int = 0

    @classmethod
    def of(cls, features: Features) -> "Dims":
        """The sizes of a feature table's rows."""
        return cls(embed=features.embed.shape[1], tokens=0 if features.tokens is None else features.tokens.shape[-1])


__all__ = ["Batch", "Dims", "Features", "Stage"]
