"""What every backbone provides, and how a backbone's weights file is identified."""
from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Callable, List

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


class Backbone(nn.Module):
    """A frozen image/text encoder.

    ``cache_id`` identifies architecture + weights (it keys the on-disk feature cache);
    ``preprocess`` maps a PIL image to a tensor (the backbone's own transform, or the one
    ``build_backbone(..., preprocess=...)`` chose); ``embed_dim`` is the joint-space width that
    global and token features share.
    """

    cache_id: str
    embed_dim: int
    preprocess: Callable

    def targetpad_preprocess(self, ratio: float) -> Callable:
        """The TargetPad pipeline at ``ratio`` for this backbone's input size and normalisation
        (:func:`cirbench.backbones.preprocess.targetpad_transform`)."""
        raise ConfigError(f"the {type(self).__name__} backbone has no targetpad preprocessing; use --preprocess clip")

    def encode_images(self, pixels: Tensor, tokens: bool = False) -> Features:
        raise NotImplementedError

    def encode_texts(self, texts: List[str], tokens: bool = False) -> Features:
        raise NotImplementedError

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device
