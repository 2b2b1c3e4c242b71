"""What every backbone provides, and how a backbone's weights file is identified."""
from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Callable, List, Tuple

import torch
from torch import Tensor, nn

from ..errors import ConfigError
from ..types import Features


def file_fingerprint(path: Path) -> str:
    """Cheap identity of a (possibly multi-GB) weights file: size, mtime and a hash of its ends."""
    st = path.stat()
    h = hashlib.sha1(f"{path.resolve()}:{st.st_size}:{st.st_mtime_ns}".encode())
    with open(path, "rb") as f:
        h.update(f.read(1 << 20))
        if st.st_size > 1 << 20:
            f.seek(-(1 << 20), os.SEEK_END)
            h.update(f.read())
    return h.hexdigest()[:16]


#: the parts of a backbone a method may fine-tune (``Stage.trains``)
TOWERS: Tuple[str, ...] = ("image", "text")


class Backbone(nn.Module):
    """An image/text encoder, frozen unless a method fine-tunes one of its towers.

    ``cache_id`` identifies architecture + weights (it keys the on-disk feature cache);
    ``preprocess`` maps a PIL image to a tensor (the backbone's own transform, or the one
    ``build_backbone(..., preprocess=...)`` chose); ``embed_dim`` is the joint-space width that
    global and token features share.

    ``encode_images`` / ``encode_texts`` are the frozen path (no gradients). A backbone whose towers
    can be fine-tuned also provides the differentiable path: ``embed_images`` (normalised pixels),
    ``tokenize`` and ``embed_token_ids``, and ``tower_parameters(tower)`` for each of :data:`TOWERS`;
    the frozen path then is the differentiable one under ``torch.no_grad``.
    """

    cache_id: str
    embed_dim: int
    preprocess: Callable

    def targetpad_preprocess(self, ratio: float) -> Callable:
        """The TargetPad pipeline at ``ratio`` for this backbone's input size and normalisation
        (:func:`cirbench.backbones.preprocess.targetpad_transform`)."""
        raise ConfigError(f"the {type(self).__name__} backbone has no targetpad preprocessing; use --preprocess clip")

    def encode_images(self, pixels: Tensor, tokens: bool = False) -> Features:
        with torch.no_grad():
            return self.embed_images(pixels, tokens)

    def encode_texts(self, texts: List[str], tokens: bool = False) -> Features:
        with torch.no_grad():
            return self.embed_token_ids(self.tokenize(texts).to(self.device), tokens)

    # -- the differentiable path (backbones that can be fine-tuned) -------------------------------
    def embed_images(self, pixels: Tensor, tokens: bool = False) -> Features:
        raise self._cannot_train()

    def tokenize(self, texts: List[str]) -> Tensor:
        """Token ids ``[N, L]`` (on the CPU) that ``embed_token_ids`` reads."""
        raise self._cannot_train()

    def embed_token_ids(self, ids: Tensor, tokens: bool = False) -> Features:
        raise self._cannot_train()

    def tower_parameters(self, tower: str) -> List[nn.Parameter]:
        """The parameters of one of :data:`TOWERS`, the ones a stage that trains it updates."""
        raise self._cannot_train()

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute activations in the backward pass instead of storing them (less memory, ~30 % more
        compute), for backbones that support it."""
        raise ConfigError(f"the {type(self).__name__} backbone has no gradient checkpointing")

    def _cannot_train(self) -> ConfigError:
        return ConfigError(f"the {type(self).__name__} backbone cannot be fine-tuned (no trainable towers); "
                           "use an open_clip backbone or a method setting that keeps the backbone frozen")

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device
