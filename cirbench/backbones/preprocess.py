"""Image preprocessing choices (``--preprocess``): ``clip``, the backbone's own transform, or
``targetpad[:RATIO]``, the TargetPad pipeline of CLIP4Cir, used unchanged by SPRC, SPN and HABIT.

What CLIP4Cir does (``src/data_utils.py``, ``TargetPad`` and ``targetpad_transform``; target
ratio 1.25 in its training scripts): when the image's aspect ratio ``max(w, h) / min(w, h)`` is
below the target ratio the image is left as it is; otherwise the shorter side is zero-padded
(black), ``int((max(w, h) / ratio - side) / 2)`` pixels on each of its two ends, so the padded
image has about the target ratio. Then CLIP's steps: resize the shorter side to the model's input
size (bicubic), centre-crop a square, to tensor, normalise. FashionIQ's tall product photos thus
keep most of their length instead of losing it to the centre crop. ``targetpad:1`` pads every
image to a square (CLIP4Cir's ``squarepad``).

cirbench's choices:

* The input size, interpolation and mean/std come from the backbone (open_clip's
  ``preprocess_cfg``; BLIP-2's image processor), CLIP4Cir's constants being OpenAI CLIP's.
* BLIP-2: TargetPad, then shorter side to the processor's size and a centre crop, then the
  processor's normalisation, as SPRC (BLIP-2) does with this same ``targetpad_transform``. The
  processor's own resize squashes the image to a square, which would undo the padding's point,
  so ``clip`` keeps the processor's transform and ``targetpad`` replaces its resize.
* Images are converted to RGB before padding (cirbench's image reader does so for every
  choice), so the padding is black for every image mode; CLIP4Cir pads first and converts
  after, which gives the same result for the RGB photos of FashionIQ and CIRR.

The transform's ``repr`` names every step and the ratio (``TargetPad(target_ratio=1.25)``): it keys
the feature cache (:mod:`cirbench.features`), so clip, targetpad and two ratios never share an entry.
"""
from __future__ import annotations

from typing import Callable, Sequence, Tuple, Union

from PIL import Image, ImageOps
from torchvision import transforms

from ..errors import ConfigError
from ..runs import DEFAULT_PREPROCESS, parse_preprocess, targetpad_ratio

_INTERPOLATION = {"bicubic": transforms.InterpolationMode.BICUBIC, "bilinear": transforms.InterpolationMode.BILINEAR,
                  "nearest": transforms.InterpolationMode.NEAREST}


class TargetPad:
    """Zero-pad the shorter side of an image whose aspect ratio is at least ``target_ratio`` so that
    it has about that ratio (CLIP4Cir's TargetPad); other images pass unchanged."""

    def __init__(self, target_ratio: float):
        if not target_ratio >= 1:
            raise ConfigError(f"TargetPad's target ratio must be >= 1, got {target_ratio!r}")
        self.target_ratio = float(target_ratio)

    def padding(self, width: int, height: int) -> Tuple[int, int]:
        """(left = right, top = bottom) padding in pixels for an image of that size."""
        long_side, short_side = max(width, height), min(width, height)
        if long_side / short_side < self.target_ratio:  # ratio below the target: no padding
            return 0, 0
        wanted = long_side / self.target_ratio  # the short side that gives the target ratio
        return max(int((wanted - width) / 2), 0), max(int((wanted - height) / 2), 0)

    def __call__(self, image: Image.Image) -> Image.Image:
        x, y = self.padding(*image.size)
        if not (x or y):
            return image
        return ImageOps.expand(image, border=(x, y, x, y), fill=0)

    def __repr__(self) -> str:
        return f"TargetPad(target_ratio={self.target_ratio!r})"


def targetpad_transform(ratio: float, size: Union[int, Sequence[int]], mean: Sequence[float],
                        std: Sequence[float], interpolation: str = "bicubic") -> transforms.Compose:
    """TargetPad, shorter side resized to ``size``, centre crop to ``size``, to tensor, normalise."""
    height, width = (size, size) if isinstance(size, int) else tuple(int(s) for s in size)
    mode = _INTERPOLATION.get(str(interpolation), transforms.InterpolationMode.BICUBIC)
    return transforms.Compose([
        TargetPad(ratio),
        transforms.Resize(max(height, width), interpolation=mode),
        transforms.CenterCrop((height, width)),
        transforms.ToTensor(),
        transforms.Normalize(tuple(mean), tuple(std)),
    ])


def image_preprocessing(backbone, choice: str = DEFAULT_PREPROCESS) -> Callable:
    """The image transform of ``choice`` for ``backbone``: its own (``clip``) or its TargetPad pipeline
    (the backbone's ``targetpad_preprocess(ratio)``)."""
    ratio = targetpad_ratio(parse_preprocess(choice))
    if ratio is None:
        return backbone.preprocess
    return backbone.targetpad_preprocess(ratio)


__all__ = ["TargetPad", "image_preprocessing", "targetpad_transform"]
