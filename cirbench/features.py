"""Features of the frozen backbone, computed once and cached on disk.

A cache entry is keyed by the backbone (architecture + weights), its preprocessing, whether
tokens are kept, and the exact list of inputs (image ids with their files' size and mtime, or
the texts), so a grid of runs encodes each image once. Entries are written atomically.
The preprocessing enters the key as its ``repr`` (every torchvision step and
:class:`~cirbench.backbones.preprocess.TargetPad` name their settings, so ``clip``,
``targetpad:1.25`` and ``targetpad:1.5`` are three entries), with any memory address (``<function
f at 0x...>``, a plain function among the steps) removed so that the key is the same in every
process.
Global features are stored in float32, token features in float16; what a run uses is always
what the cache holds, so a cached and a fresh run compute the same numbers.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Sequence

import torch
from PIL import Image
from torch import Tensor
from tqdm.auto import tqdm

from .backbones.base import Backbone
from .devices import autocast
from .errors import DataError
from .files import save_torch
from .types import Features

log = logging.getLogger("cirbench")
CACHE_VERSION = 1
_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+")


@dataclass
class FeatureTable:
    """Features for a list of keys (image ids or texts), row ``i`` belonging to ``keys[i]``."""

    keys: List[str]
    features: Features

    def __post_init__(self):
        self.row: Dict[str, int] = {k: i for i, k in enumerate(self.keys)}

    def rows(self, keys: Sequence[str]) -> Tensor:
        return torch.tensor([self.row[k] for k in keys], dtype=torch.long)

    def to(self, device) -> "FeatureTable":
        return FeatureTable(self.keys, self.features.to(device))

    def __len__(self) -> int:
        return len(self.keys)


def cache_key(payload: dict) -> str:
    """A short hash of a JSON-able payload: the name of a cache entry."""
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:24]


def image_listing(ids: Sequence[str], paths: Dict[str, Path]) -> str:
    """Digest of image ids with their files' path, size and mtime: a cache entry over these images
    is stale when any file changes."""
    listing = hashlib.sha256()
    for i in ids:
        st = paths[i].stat()
        listing.update(f"{i}\t{paths[i]}\t{st.st_size}\t{st.st_mtime_ns}\n".encode())
    return listing.hexdigest()


def preprocess_id(preprocess) -> str:
    """The part of an image cache key that names the preprocessing: its ``repr`` without memory
    addresses, the same in every process."""
    return _ADDRESS.sub("", repr(preprocess))


def _load_or_compute(path: Path, compute) -> Features:
    if path.exists():
        try:
            blob = torch.load(path, map_location="cpu", weights_only=True)
            return Features(blob["embed"], blob.get("tokens"), blob.get("mask"))
        except Exception as exc:  # a truncated or foreign file: recompute
            log.warning("ignoring unreadable feature cache %s (%s)", path, exc)
    feats = compute()
    feats = Features(
        feats.embed.float().cpu(),
        None if feats.tokens is None else feats.tokens.half().cpu(),
        None if feats.mask is None else feats.mask.cpu(),
    )
    blob = {"embed": feats.embed}
    if feats.tokens is not None:
        blob["tokens"] = feats.tokens
    if feats.mask is not None:
        blob["mask"] = feats.mask
    save_torch(blob, path)
    return feats


def concat_features(parts: List[Features]) -> Features:
    """Rows of several feature batches, one after another (each field kept when the parts have it)."""
    cat = lambda xs: None if xs[0] is None else torch.cat(xs)  # noqa: E731
    return Features(cat([p.embed for p in parts]), cat([p.tokens for p in parts]), cat([p.mask for p in parts]),
                    cat([p.extra for p in parts]))


class _ImageFiles(torch.utils.data.Dataset):
    def __init__(self, paths: List[Path], preprocess):
        self.paths, self.preprocess = paths, preprocess

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, i):
        try:
            with Image.open(self.paths[i]) as im:
                return self.preprocess(im.convert("RGB"))
        except OSError as exc:
            raise DataError(f"cannot read image {self.paths[i]}: {exc}") from None


def image_features(backbone: Backbone, ids: Sequence[str], paths: Dict[str, Path], *, tokens: bool,
                   cache_dir: Path, batch_size: int = 256, desc: str = "encoding images",
                   progress: bool = True) -> FeatureTable:
    """Features of the images ``ids`` (files in ``paths``), from the cache when possible."""
    ids = list(ids)
    files = [paths[i] for i in ids]
    key = cache_key({"v": CACHE_VERSION, "backbone": backbone.cache_id,
                     "preprocess": preprocess_id(backbone.preprocess), "tokens": tokens,
                     "images": image_listing(ids, paths)})

    def compute() -> Features:
        workers = 0 if len(files) < 2000 else min(8, max(1, (os.cpu_count() or 2) - 1))
        loader = torch.utils.data.DataLoader(_ImageFiles(files, backbone.preprocess), batch_size=batch_size,
                                             num_workers=workers, pin_memory=backbone.device.type == "cuda")
        parts = []
        for pixels in tqdm(loader, desc=desc, unit="batch", leave=False, disable=None if progress else True):
            with autocast(backbone.device):
                parts.append(backbone.encode_images(pixels.to(backbone.device, non_blocking=True), tokens=tokens))
        return concat_features(parts)

    return FeatureTable(ids, _load_or_compute(Path(cache_dir) / "features" / f"img-{key}.pt", compute))


def text_features(backbone: Backbone, texts: Sequence[str], *, tokens: bool, cache_dir: Path,
                  batch_size: int = 512, desc: str = "encoding texts", progress: bool = True) -> FeatureTable:
    """Features of the distinct ``texts`` (order kept), from the cache when possible."""
    texts = list(dict.fromkeys(texts))
    digest = hashlib.sha256("\n".join(texts).encode()).hexdigest()
    key = cache_key({"v": CACHE_VERSION, "backbone": backbone.cache_id, "tokens": tokens, "texts": digest})

    def compute() -> Features:
        parts = []
        for start in tqdm(range(0, len(texts), batch_size), desc=desc, unit="batch", leave=False,
                          disable=None if progress else True):
            with autocast(backbone.device):
                parts.append(backbone.encode_texts(texts[start:start + batch_size], tokens=tokens))
        if tokens:  # pad every batch to the same length before concatenating
            width = max(p.tokens.shape[1] for p in parts)
            parts = [_pad(p, width) for p in parts]
        return concat_features(parts)

    feats = _load_or_compute(Path(cache_dir) / "features" / f"txt-{key}.pt", compute)
    if feats.mask is not None:  # trim padding no text uses
        used = int(feats.mask.any(0).nonzero().max()) + 1
        feats = Features(feats.embed, feats.tokens[:, :used], feats.mask[:, :used])
    return FeatureTable(texts, feats)


def _pad(f: Features, width: int) -> Features:
    extra = width - f.tokens.shape[1]
    if extra == 0:
        return f
    tokens = torch.nn.functional.pad(f.tokens, (0, 0, 0, extra))
    mask = torch.nn.functional.pad(f.mask, (0, extra), value=False)
    return Features(f.embed, tokens, mask)
