"""Zero-shot baselines: the training-free rows of CIR papers, over any backbone's frozen features.

``zero-shot:image`` ranks by the reference image's embedding alone, ``zero-shot:text`` by the modification
text's alone, ``zero-shot:sum`` (the default) by CLIP4Cir's "sum" combining function without training:
``normalize(image + text)`` of the backbone's *raw* (unnormalised) embeddings, as ABaldrati/CLIP4Cir's
``utils.element_wise_sum`` and ``validate.py`` compute it (the query is normalised before ranking, the targets
are the normalised global image embeddings). Nothing is trained: ``cirbench eval`` scores them, and wildcards
(``-m '*'``) leave them out of training grids.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import List

from torch import Tensor

from cirbench.errors import ConfigError
from cirbench.method import Method
from cirbench.registry import register_method
from cirbench.types import Features, Stage

COMPOSITIONS = ("image", "text", "sum")


@register_method("zero-shot")
class ZeroShot(Method):
    """Training-free: the reference image, the text, or CLIP4Cir's sum of both (see the module docstring)."""

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
        image, words = reference.embed.float(), text.embed.float()  # ranking normalises the query
        return {"image": image, "text": words, "sum": image + words}[self.hp.compose]

    def stages(self, epochs: int) -> List[Stage]:
        return []
