"""Decoded images for trainable image towers: each image decoded and preprocessed once, then read as rows.

A method that fine-tunes an image tower needs pixels at every step. Decoding JPEGs and resizing them
every step (what a torch ``DataLoader`` over image files does) costs more than the tower's forward
pass on a GPU. So cirbench splits the backbone's preprocessing in two:

* the *geometry* (TargetPad, resize, centre crop: everything before ``ToTensor``), run once per image
  and stored as ``uint8`` ``[N, 3, H, W]`` in a memory-mapped ``.npy`` file under
  ``<cache>/pixels/``, keyed like the feature cache (image ids with their files' size and mtime, the
  geometry's ``repr``, the size), written atomically;
* the *normalisation* (``ToTensor``'s ``/ 255`` and ``Normalize``), done per batch on the training
  device, so a batch is one indexed read, one copy (pinned and non-blocking on CUDA) and two
  element-wise operations.

``ToTensor`` is exactly ``uint8 / 255``, so the rows give bit for bit the tensors the backbone's own
transform gives. Disk: ``N × 3 × H × W`` bytes (FashionIQ's ~74k images at 224² ≈ 11 GB; the shapes
data at 64² ≈ 100 MB).
"""
from __future__ import annotations

import logging
import os
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torchvision import transforms
from tqdm.auto import tqdm

from .errors import ConfigError, DataError
from .features import cache_key, image_listing, preprocess_id
from .files import atomic_write

log = logging.getLogger("cirbench")
PIXELS_VERSION = 1


@dataclass
class PixelSteps:
    """A preprocessing pipeline split into the per-image ``geometry`` (PIL → PIL, ending at ``size``
    = (height, width)) and the per-batch normalisation ``mean`` / ``std``."""

    geometry: Callable
    size: Tuple[int, int]
    mean: Tuple[float, ...]
    std: Tuple[float, ...]


def split_preprocess(preprocess) -> PixelSteps:
    """The geometry and normalisation of a torchvision ``Compose`` that ends with ``ToTensor`` and
    ``Normalize`` (open_clip's transforms and TargetPad's do); anything else is a clear error."""
    steps = list(getattr(preprocess, "transforms", []))
    is_tensor = [isinstance(t, transforms.ToTensor) for t in steps]  # open_clip's MaybeToTensor is one too
    is_norm = [isinstance(t, transforms.Normalize) for t in steps]
    if not any(is_tensor) or not any(is_norm):
        raise ConfigError(f"cannot cache pixels for the preprocessing {preprocess!r}: fine-tuning an image tower "
                          "needs a torchvision pipeline ending in ToTensor and Normalize")
    to_tensor, normalize = is_tensor.index(True), is_norm.index(True)
    if normalize != to_tensor + 1 or normalize != len(steps) - 1:
        raise ConfigError(f"cannot cache pixels for {preprocess!r}: ToTensor and Normalize must be its last steps")
    geometry = transforms.Compose(steps[:to_tensor])
    size = _output_size(steps[:to_tensor])
    norm = steps[normalize]
    return PixelSteps(geometry, size, tuple(float(x) for x in norm.mean), tuple(float(x) for x in norm.std))


def _output_size(steps: List) -> Tuple[int, int]:
    for step in reversed(steps):  # the last crop (or resize to a fixed size) sets the output size
        size = getattr(step, "size", None)
        if isinstance(step, (transforms.CenterCrop, transforms.Resize)) and size is not None:
            if isinstance(size, int):
                if isinstance(step, transforms.CenterCrop):
                    return size, size
                continue  # Resize(int) scales the shorter side only
            if len(size) == 1:
                return int(size[0]), int(size[0])
            return int(size[0]), int(size[1])
    raise ConfigError("cannot cache pixels: the preprocessing has no crop or resize to a fixed size")


def decode_image(path: Path, geometry: Callable, size: Tuple[int, int]) -> np.ndarray:
    """One image file through the geometry: ``uint8 [3, H, W]``."""
    try:
        with Image.open(path) as im:
            out = geometry(im.convert("RGB"))
    except OSError as exc:
        raise DataError(f"cannot read image {path}: {exc}") from None
    array = np.asarray(out.convert("RGB"), dtype=np.uint8).transpose(2, 0, 1)
    if array.shape[1:] != tuple(size):
        raise DataError(f"{path}: preprocessing gave {array.shape[1:]} pixels, expected {tuple(size)}")
    return array


class PixelTable:
    """Decoded images for a list of image ids, row ``i`` belonging to ``keys[i]``; ``batch`` gives
    normalised float tensors on a device. ``prefetch(rows)`` gathers the next batch's rows (and pins
    them, on CUDA) in a background thread while the device works on the current one."""

    def __init__(self, keys: Sequence[str], array: np.ndarray, steps: PixelSteps):
        self.keys = list(keys)
        self.row: Dict[str, int] = {k: i for i, k in enumerate(self.keys)}
        self.array, self.steps = array, steps
        self._stats: Dict[torch.device, Tuple[Tensor, Tensor]] = {}
        self._pool: Optional[ThreadPoolExecutor] = None
        self._pending: Optional[Tuple[np.ndarray, bool, Future]] = None

    def __len__(self) -> int:
        return len(self.keys)

    def _gather(self, index: np.ndarray, pin: bool) -> Tensor:
        pixels = torch.from_numpy(np.ascontiguousarray(self.array[index]))
        return pixels.pin_memory() if pin else pixels

    def prefetch(self, rows: Tensor, device: torch.device) -> None:
        """Start gathering ``rows`` for the next ``batch`` call."""
        if self._pool is None:
            self._pool = ThreadPoolExecutor(1, thread_name_prefix="cirbench-pixels")
        index, pin = rows.detach().cpu().numpy(), device.type == "cuda"
        self._pending = (index, pin, self._pool.submit(self._gather, index, pin))

    def batch(self, rows: Tensor, device: torch.device) -> Tensor:
        """Normalised pixels ``[B, 3, H, W]`` (float32) of ``rows`` on ``device``."""
        index, pin = rows.detach().cpu().numpy(), device.type == "cuda"
        pending, self._pending = self._pending, None
        if pending is not None and pending[1] == pin and np.array_equal(pending[0], index):
            pixels = pending[2].result()
        else:
            pixels = self._gather(index, pin)
        pixels = pixels.to(device, non_blocking=True)
        if device not in self._stats:
            shape = (1, -1, 1, 1)
            self._stats[device] = (torch.tensor(self.steps.mean, device=device).view(shape),
                                   torch.tensor(self.steps.std, device=device).view(shape))
        mean, std = self._stats[device]
        return (pixels.float() / 255 - mean) / std


def pixel_table(preprocess, ids: Sequence[str], paths: Dict[str, Path], cache_dir: Path,
                progress: bool = True) -> PixelTable:
    """The images ``ids`` decoded through ``preprocess``'s geometry, from the pixel cache when it has
    them (each image is decoded once per cache entry)."""
    steps = split_preprocess(preprocess)
    ids = list(ids)
    key = cache_key({"v": PIXELS_VERSION, "geometry": preprocess_id(steps.geometry), "size": list(steps.size),
                     "images": image_listing(ids, paths)})
    path = Path(cache_dir) / "pixels" / f"px-{key}.npy"
    shape = (len(ids), 3, *steps.size)
    if path.exists():
        try:
            array = np.load(path, mmap_mode="r")
            if array.shape == shape and array.dtype == np.uint8:
                return PixelTable(ids, array, steps)
        except (OSError, ValueError) as exc:
            log.warning("ignoring unreadable pixel cache %s (%s)", path, exc)

    def write(tmp: Path) -> None:
        out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=shape)
        with open(tmp, "r+b") as f:  # reserve the blocks now: a full disk is an OSError here, not a SIGBUS later
            os.posix_fallocate(f.fileno(), 0, os.fstat(f.fileno()).st_size)
        for i, image in enumerate(tqdm(ids, desc="decoding images (once)", unit="image", leave=False,
                                       disable=None if progress else True)):
            out[i] = decode_image(paths[image], steps.geometry, steps.size)
        out.flush()
        del out

    log.info("decoding %d images once into %s (%.1f MB)", len(ids), path.parent, np.prod(shape) / 2**20)
    atomic_write(path, write)
    return PixelTable(ids, np.load(path, mmap_mode="r"), steps)


__all__ = ["PixelSteps", "PixelTable", "decode_image", "pixel_table", "split_preprocess"]
