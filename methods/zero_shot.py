"""Zero-shot baselines: the training-free rows of CIR papers, over any backbone's frozen features.

``zero-shot:image`` ranks by the reference image's embedding alone, ``zero-shot:text`` by the modification
text's alone, ``zero-shot:sum`` (the default) by the sum of the L2-normalised image and text embeddings, CLIP4Cir's
"sum" combining function without training (Baldrati et al., the "Image only" / "Text only" / "Image + Text"
rows of CLIP4Cir's and Pic2Word's tables). Targets are the backbone's global image embeddings. Nothing is
trained: ``cirbench eval`` scores them, and wildcards (``-m '*'``) leave them out of training grids.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import List

import torch.nn.functional as F
from torch import Tensor

from cirbench.errors import ConfigError
from cirbench.method import Method
from cirbench.registry import register_method
from cirbench.types import Features, Stage

COMPOSITIONS = ("image", "text", "sum")


@register_method("zero-shot")
class ZeroShot(Method):
    """Training-free: the reference image, the text, or their normalised sum (see the module docstring)."""

    training_free = True
    arg_hparam = "compose"

    @dataclass
    class Hparams:
        compose: str = "sum"  # image | text | sum

    def __init__(self, dims, hparams=None):
        super().__init__(dims, hparams)
        if self.hp.compose not in COMPOSITIONS:
            raise ConfigError(f"zero-shot compose must be one of {', '.join(COMPOSITIONS)}, got {self.hp.compose!r}")

    def compose(self, reference: Features, text: Features) -> Tensor:
        image, words = F.normalize(reference.embed.float(), dim=-1), F.normalize(text.embed.float(), dim=-1)
        return {"image": image, "text": words, "sum": image + words}[self.hp.compose]

    def stages(self, epochs: int) -> List[Stage]:
        return []
