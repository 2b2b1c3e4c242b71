"""open_clip backbones (``open_clip:<arch>``, and the model behind ``tiny``), through open_clip's own factory."""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import List, Optional

import open_clip
import torch
from torch import Tensor, nn

from ..errors import ConfigError
from ..types import Features
from .base import Backbone, file_fingerprint
from .registry import register_backbone

log = logging.getLogger("cirbench")
CONFIG_DIR = Path(__file__).with_name("model_configs")
TINY_ARCH = "cirbench-tiny"
open_clip.add_model_config(CONFIG_DIR)


class OpenClipBackbone(Backbone):
    """An open_clip CLIP model used frozen; token features are projected into the joint space."""

    def __init__(self, arch: str, weights: Optional[str]):
        super().__init__()
        pretrained = weights
        if weights is not None and Path(weights).expanduser().exists():
            pretrained = str(Path(weights).expanduser())
            weights_id = "file:" + file_fingerprint(Path(pretrained))
        elif weights is not None and any(s in weights for s in ("/", os.sep, ".pt", ".bin", ".safetensors")):
            raise ConfigError(f"weights file {weights!r} does not exist; pass an existing file or an open_clip tag")
        else:
            weights_id = f"tag:{weights}" if weights else "random:seed0"
        if weights is None:
            torch.manual_seed(0)  # random weights, but the same ones every time
        try:
            model, _, preprocess = open_clip.create_model_and_transforms(arch, pretrained=pretrained)
        except RuntimeError as exc:  # open_clip: unknown model / unknown tag / bad file
            raise ConfigError(f"open_clip could not build {arch!r} with weights {weights!r}: {exc}") from None
        if not hasattr(model, "token_embedding"):
            raise ConfigError(f"open_clip model {arch!r} has a custom text tower; cirbench supports CLIP-style ones")
        self.model = model.eval().requires_grad_(False)
        self.preprocess = preprocess
        self.tokenizer = open_clip.get_tokenizer(arch)
        self.arch = arch
        self.cache_id = f"open_clip:{arch}:{weights_id}"
        self.embed_dim = int(model.text_projection.shape[1] if isinstance(model.text_projection, Tensor)
                             else model.text_projection.out_features)

    @torch.no_grad()
    def encode_images(self, pixels: Tensor, tokens: bool = False) -> Features:
        visual = self.model.visual
        visual.output_tokens = tokens
        out = visual(pixels)
        if not tokens:
            return Features(out)
        pooled, patch = out
        if visual.proj is not None:
            patch = patch @ visual.proj
        return Features(pooled, torch.cat([pooled[:, None], patch], dim=1))

    @torch.no_grad()
    def encode_texts(self, texts: List[str], tokens: bool = False) -> Features:
        m = self.model
        ids = self.tokenizer(texts).to(self.device)
        x = m.token_embedding(ids) + m.positional_embedding
        x = m.ln_final(m.transformer(x, attn_mask=m.attn_mask))
        x = self._project(x)
        eot = ids.argmax(dim=-1)  # CLIP's end-of-text token has the largest id
        pooled = x[torch.arange(x.shape[0], device=x.device), eot]
        if not tokens:
            return Features(pooled)
        mask = torch.arange(ids.shape[1], device=ids.device)[None] <= eot[:, None]
        return Features(pooled, x, mask)

    def _project(self, x: Tensor) -> Tensor:
        proj = self.model.text_projection
        return proj(x) if isinstance(proj, nn.Module) else x @ proj


@register_backbone("open_clip", "any open_clip CLIP model: open_clip:<arch> (open_clip.list_models()); "
                   "weights: a pretrained tag or a local checkpoint file")
def build_open_clip(arch: Optional[str], weights: Optional[str], cache_dir=None) -> OpenClipBackbone:
    if not arch:
        raise ConfigError("name the architecture: open_clip:<arch>, e.g. open_clip:ViT-B-32")
    if arch not in open_clip.list_models():
        raise ConfigError(f"open_clip has no model {arch!r}; see open_clip.list_models()")
    if weights is None:
        log.warning("open_clip:%s with random weights; pass --weights TAG_OR_FILE for pretrained ones", arch)
    return OpenClipBackbone(arch, weights)
