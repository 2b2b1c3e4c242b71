"""What every backbone provides."""
from __future__ import annotations

from typing import Callable, List

import torch
from torch import Tensor, nn

from ..method import Features


class Backbone(nn.Module):
    """A frozen image/text encoder.

    ``cache_id`` identifies architecture + weights (it keys the on-disk feature cache);
    ``preprocess`` maps a PIL image to a tensor; ``embed_dim`` is the joint-space width that
    global and token features share.
    """

    cache_id: str
    embed_dim: int
    preprocess: Callable

    def encode_images(self, pixels: Tensor, tokens: bool = False) -> Features:
        raise NotImplementedError

    def encode_texts(self, texts: List[str], tokens: bool = False) -> Features:
        raise NotImplementedError

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device
