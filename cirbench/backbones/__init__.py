"""Backbones: frozen encoders that turn images and texts into :class:`~cirbench.method.Features`.

``build_backbone(spec, weights)`` follows open_clip's factory: ``spec`` names an
architecture, ``weights`` is a pretrained tag or a local file; ``preprocess`` picks the image
transform, ``clip`` (the backbone's own) or ``targetpad[:RATIO]`` (:mod:`.preprocess`).

============================  ==========================================================
spec                          weights
============================  ==========================================================
``tiny``                      ``shapes`` (default: warm-started on the generated shapes
                              data, built once and cached), ``random``, or a local file
``open_clip:<arch>``          an open_clip pretrained tag (``openai``, ...) or a local
                              checkpoint file; none = random init (with a warning)
``blip2``                     a local folder in the Hugging Face transformers format
                              (e.g. a copy of ``Salesforce/blip2-itm-vit-g``)
============================  ==========================================================
"""
from __future__ import annotations

from typing import Dict, List, Optional

from ..errors import ConfigError
from ..runs import DEFAULT_PREPROCESS, parse_preprocess
from .base import Backbone
from .preprocess import image_preprocessing
from .registry import DESCRIPTIONS, FACTORIES


def list_backbones() -> Dict[str, str]:
    """Backbone spec prefix -> description, sorted."""
    _import_builtin()
    return dict(sorted(DESCRIPTIONS.items()))


def build_backbone(spec: str, weights: Optional[str] = None, cache_dir=None,
                   preprocess: str = DEFAULT_PREPROCESS) -> Backbone:
    """Build the backbone named by ``spec`` (see the module docstring), with the image
    preprocessing ``preprocess`` (checked before anything is built)."""
    _import_builtin()
    preprocess = parse_preprocess(preprocess)
    prefix, _, arch = spec.partition(":")
    if prefix not in FACTORIES:
        raise ConfigError(
            f"unknown backbone {spec!r}; known: {', '.join(sorted(FACTORIES))} (`cirbench list backbones`). "
            "For any open_clip model write open_clip:<arch>, e.g. open_clip:ViT-B-32."
        )
    backbone = FACTORIES[prefix](arch or None, weights, cache_dir)
    backbone.preprocess = image_preprocessing(backbone, preprocess)
    return backbone


def _import_builtin() -> None:
    from . import blip2, openclip, tiny  # noqa: F401  (they register themselves; transformers loads lazily)


__all__: List[str] = ["build_backbone", "list_backbones"]
