"""open_clip backbones (``open_clip:<arch>``, and the model behind ``tiny``), through open_clip's own factory.

Token features (methods with ``needs_tokens``), the global embedding first, then:

* ViT image towers: the patch tokens open_clip returns (after ``ln_post``), times ``proj``, the
  projection of the class token.
* ResNet image towers (``ModifiedResNet``: RN50, RN50x4, ...): the attention pool's input grid,
  ``H·W`` tokens, each projected as the pool projects its output: positional embedding added, then
  ``v_proj`` and ``c_proj``. The pool's output is, per head, an attention-weighted mean of exactly
  these value vectors (before ``c_proj``), so a grid token is what the pool would output if it
  attended to that position alone: the tokens live in the joint space of the global embedding.
  This is MaskCLIP's reading of CLIP's ResNet (Zhou et al., ECCV 2022, dense features from the
  value path); CLIP and open_clip define no token output for ResNets, so the choice is ours.
* Other towers (timm models): refused with a message at the first encoded batch.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import List, Optional

import open_clip
import torch
import torch.nn.functional as F
from open_clip.modified_resnet import ModifiedResNet
from torch import Tensor, nn

from ..errors import ConfigError, first_line
from ..types import Features
from .base import TOWERS, Backbone, file_fingerprint
from .registry import register_backbone

log = logging.getLogger("cirbench")
CONFIG_DIR = Path(__file__).with_name("model_configs")
TINY_ARCH = "cirbench-tiny"
open_clip.add_model_config(CONFIG_DIR)


#: Buffers of OpenAI's CLIP state dict that open_clip's model does not have.
_OPENAI_ONLY = ("input_resolution", "context_length", "vocab_size")


def clip4cir_state(path: Path) -> Optional[dict]:
    """The CLIP weights of a CLIP4Cir checkpoint, ``{"epoch": N, "CLIP": state_dict}`` as ABaldrati/CLIP4Cir's
    ``utils.save_model`` writes a fine-tuned model (the key is the model's class name, ``CLIP``; the state
    dict is OpenAI's, whose parameter names open_clip keeps); None for any other file."""
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:
        return None
    if not (isinstance(blob, dict) and isinstance(blob.get("CLIP"), dict)):
        return None
    return {k: v for k, v in blob["CLIP"].items() if k not in _OPENAI_ONLY}


def _load_state(arch: str, state: dict, path: str):
    model, _, preprocess = open_clip.create_model_and_transforms(arch)
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise ConfigError(f"the CLIP4Cir checkpoint {path} does not fit open_clip:{arch} ({first_line(exc)}); pass the "
                          "architecture it was fine-tuned from (e.g. --backbone open_clip:RN50x4)") from None
    return model, preprocess


class OpenClipBackbone(Backbone):
    """An open_clip CLIP model, frozen or with chosen towers fine-tuned; token features are projected into the
    joint space."""

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
        except RuntimeError as exc:  # open_clip: unknown model / unknown tag / weights of another model
            state = clip4cir_state(Path(pretrained)) if weights_id.startswith("file:") else None
            if state is not None:  # a CLIP4Cir checkpoint: its fine-tuned CLIP under "CLIP"
                model, preprocess = _load_state(arch, state, pretrained)
            else:
                raise ConfigError(f"open_clip could not build {arch!r} with weights {weights!r}: {exc}; pass a tag "
                                  f"of open_clip.list_pretrained() for {arch} or a local checkpoint file") from None
        except Exception as exc:  # a local file that is not a torch checkpoint: empty, random bytes, truncated
            if not weights_id.startswith("file:"):
                raise
            reason = "it is empty" if Path(pretrained).stat().st_size == 0 else type(exc).__name__
            raise ConfigError(f"weights file {pretrained} is not a checkpoint torch can read ({reason}); pass "
                              "an open_clip checkpoint file or a pretrained tag") from None
        if not hasattr(model, "token_embedding"):
            raise ConfigError(f"open_clip model {arch!r} has a custom text tower; cirbench supports CLIP-style ones")
        self.model = model.eval().requires_grad_(False)
        self.preprocess = preprocess
        self.tokenizer = open_clip.get_tokenizer(arch)
        self.arch = arch
        self.cache_id = f"open_clip:{arch}:{weights_id}"
        self.embed_dim = int(model.text_projection.shape[1] if isinstance(model.text_projection, Tensor)
                             else model.text_projection.out_features)

    def targetpad_preprocess(self, ratio: float):
        from .preprocess import targetpad_transform

        visual = self.model.visual
        cfg = getattr(visual, "preprocess_cfg", None) or {}
        return targetpad_transform(ratio, cfg.get("size", visual.image_size),
                                   cfg.get("mean", getattr(visual, "image_mean", None) or open_clip.OPENAI_DATASET_MEAN),
                                   cfg.get("std", getattr(visual, "image_std", None) or open_clip.OPENAI_DATASET_STD),
                                   cfg.get("interpolation", "bicubic"))

    def tower_parameters(self, tower: str) -> List[nn.Parameter]:
        """``image``: the whole visual tower. ``text``: token and positional embeddings, the transformer,
        the final LayerNorm and the text projection (the text tower SPN fine-tunes); ``logit_scale``
        belongs to neither (cirbench's losses set their own temperature)."""
        m = self.model
        if tower == "image":
            return list(m.visual.parameters())
        if tower == "text":
            parts = [m.token_embedding, m.transformer, m.ln_final]
            params = [p for part in parts for p in part.parameters()]
            params.append(m.positional_embedding)
            proj = m.text_projection
            params += list(proj.parameters()) if isinstance(proj, nn.Module) else [proj]
            return params
        raise ConfigError(f"unknown tower {tower!r}; towers: {', '.join(TOWERS)}")

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.model.set_grad_checkpointing(enable)  # open_clip's own: both towers' residual blocks

    def embed_images(self, pixels: Tensor, tokens: bool = False) -> Features:
        visual = self.model.visual
        if not tokens:
            if hasattr(visual, "output_tokens"):
                visual.output_tokens = False
            return Features(visual(pixels))
        if isinstance(visual, ModifiedResNet):
            return _resnet_tokens(visual, pixels)
        if not hasattr(visual, "output_tokens"):
            raise ConfigError(f"open_clip model {self.arch!r} has a {type(visual).__name__} image tower; token "
                              "features (methods with needs_tokens) need a ViT or a ResNet (ModifiedResNet) tower")
        visual.output_tokens = True
        pooled, patch = visual(pixels)
        if visual.proj is not None:
            patch = patch @ visual.proj
        return Features(pooled, torch.cat([pooled[:, None], patch], dim=1))

    def tokenize(self, texts: List[str]) -> Tensor:
        return self.tokenizer(list(texts))

    def embed_token_ids(self, ids: Tensor, tokens: bool = False) -> Features:
        m = self.model
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


def _resnet_tokens(visual: ModifiedResNet, pixels: Tensor) -> Features:
    """The global embedding and the attention pool's input grid projected into the joint space
    (see the module docstring): ``[B, 1 + H·W, D]``."""
    x = visual.layer4(visual.layer3(visual.layer2(visual.layer1(visual.stem(pixels)))))  # [B, C, H, W]
    pool = visual.attnpool
    pooled = pool(x)
    grid = x.flatten(2).transpose(1, 2)  # [B, H·W, C], positions in the pool's order
    grid = grid + pool.positional_embedding[1:].to(grid.dtype)  # row 0 belongs to the pool's mean token
    values = F.linear(grid, pool.v_proj.weight, pool.v_proj.bias)
    projected = F.linear(values, pool.c_proj.weight, pool.c_proj.bias)
    return Features(pooled, torch.cat([pooled[:, None], projected.to(pooled.dtype)], dim=1))


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
