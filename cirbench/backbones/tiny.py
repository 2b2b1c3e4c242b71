"""The ``tiny`` backbone: a small open_clip ViT shipped with cirbench (``model_configs/``), warm-started
on the generated shapes data (done once, then cached).

A random tiny CLIP knows nothing about colours or shapes, and a frozen random encoder would
make every method look alike. So, once, the tiny open_clip model is trained CLIP-style
(symmetric InfoNCE, learned temperature) on the *training* images of both shapes layouts,
each paired with descriptions written from its attribute metadata by the same describer
SPN's captioner uses (several wordings per image, a random subset of its objects in each).
It never sees a modification text, a triplet or a validation image: it is a pretrained
image-text model for this world, as CLIP is for photos, and every method then trains on top
of its frozen features.
"""
from __future__ import annotations

import json
import logging
import math
import random
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import open_clip
import torch
import torch.nn.functional as F
from PIL import Image
from tqdm.auto import tqdm

from ..data import datasets
from ..data.shapes import describe
from ..errors import ConfigError
from ..files import save_torch
from ..paths import cache_dir as default_cache_dir
from .openclip import TINY_ARCH, OpenClipBackbone
from .registry import register_backbone

log = logging.getLogger("cirbench")
WARMSTART_VERSION = 1
STEPS = 300
BATCH = 256
DESCRIPTIONS_PER_IMAGE = 6


def tiny_shapes_weights(cache_dir: Optional[Path] = None, steps: int = STEPS) -> Path:
    """Path of the warm-started tiny weights, training them first if they are not cached."""
    path = default_cache_dir(cache_dir) / "weights" / f"tiny-shapes-v{WARMSTART_VERSION}-{steps}.pt"
    if path.exists():
        return path
    images: List[Path] = []
    metas: List[dict] = []
    for layout in ("fashioniq", "cirr"):
        root = datasets.shapes_root(layout, cache_dir)
        meta = json.loads((root / "metadata.json").read_text())
        data = datasets.load(f"shapes-{layout}", cache_dir=cache_dir, splits=("train",))
        for image_id in sorted(data.image_paths):
            images.append(data.image_paths[image_id])
            metas.append(meta[image_id])
    log.info("warm-starting the tiny backbone on %d generated training images (once; cached in %s)",
             len(images), path.parent)
    t0 = time.time()
    state = pretrain_tiny(images, metas, steps=steps)
    save_torch(state, path)
    log.info("warm start done in %.0fs", time.time() - t0)
    return path


def pretrain_tiny(image_files: Sequence[Path], metadata: Sequence[dict], steps: int = STEPS,
                  batch_size: int = BATCH, lr: float = 2e-3, seed: int = 0, progress: bool = True,
                  device: Optional[str] = None) -> Dict:
    """Train the tiny open_clip model on (image, description) pairs; returns its state dict (on the CPU).

    Runs on CUDA when available (``device`` overrides); the batches are drawn on the CPU either way."""
    torch.manual_seed(seed)
    rng = random.Random(seed)
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    model, _, preprocess = open_clip.create_model_and_transforms(TINY_ARCH)
    model.to(device)
    tokenizer = open_clip.get_tokenizer(TINY_ARCH)
    pixels = torch.stack([_load(p, preprocess) for p in image_files]).to(device)  # [N, 3, H, W]
    texts = [_caption(m, rng) for m in metadata for _ in range(DESCRIPTIONS_PER_IMAGE)]
    tokens = tokenizer(texts).view(len(metadata), DESCRIPTIONS_PER_IMAGE, -1).to(device)

    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.1)
    warmup = max(1, steps // 20)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps)))
    gen = torch.Generator().manual_seed(seed)
    n = len(image_files)
    model.train()
    for _ in tqdm(range(steps), desc="warm start (once)", unit="step", disable=None if progress else True, leave=False):
        idx = torch.randint(n, (min(batch_size, n),), generator=gen)
        variant = torch.randint(DESCRIPTIONS_PER_IMAGE, (len(idx),), generator=gen)
        idx, variant = idx.to(device), variant.to(device)
        img = model.encode_image(pixels[idx], normalize=True)
        txt = model.encode_text(tokens[idx, variant], normalize=True)
        logits = model.logit_scale.exp().clamp(max=100) * img @ txt.t()
        # images sharing a description are not negatives of each other: target = all matching captions
        same = (tokens[idx, variant][:, None] == tokens[idx, variant][None]).all(-1).float()
        loss = 0.5 * (_soft_ce(logits, same) + _soft_ce(logits.t(), same))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    return {k: v.cpu() for k, v in model.state_dict().items()}


def _caption(meta: dict, rng: random.Random) -> str:
    """Half the time the full description, else a short phrase naming one or two of the objects
    (as people caption the salient part of a photo), so single-object phrases such as a
    modification text's "the red circle" have something to align to."""
    if rng.random() < 0.5 or not meta["objects"]:
        return describe(meta, rng)
    objs = rng.sample(meta["objects"], k=min(len(meta["objects"]), rng.choice((1, 1, 2))))
    parts = []
    for o in objs:
        words = [o["size"]] if rng.random() < 0.5 else []
        words += [o["color"], o["shape"]]
        phrase = " ".join(words)
        if rng.random() < 0.5:
            phrase += f" at the {o['position']}"
        parts.append(phrase)
    return "a " + " and a ".join(parts)


def _soft_ce(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    targets = targets / targets.sum(1, keepdim=True)
    return -(targets * F.log_softmax(logits, dim=1)).sum(1).mean()


def _load(path: Path, preprocess) -> torch.Tensor:
    with Image.open(path) as im:
        return preprocess(im.convert("RGB"))


@register_backbone("tiny", "small open_clip ViT shipped with cirbench (64 px); weights: shapes (default, "
                   "warm-started on the generated data once and cached), random, or a local file")
def build_tiny(arch: Optional[str], weights: Optional[str], cache_dir=None) -> OpenClipBackbone:
    if arch:
        raise ConfigError("the tiny backbone takes no architecture; write just 'tiny'")
    if weights in (None, "shapes"):
        weights = str(tiny_shapes_weights(cache_dir))
    elif weights == "random":
        weights = None
    return OpenClipBackbone(TINY_ARCH, weights)


__all__ = ["build_tiny", "pretrain_tiny", "tiny_shapes_weights"]
