"""The backbone registry: ``@register_backbone(prefix)`` maps a spec prefix (``tiny``, ``open_clip``,
``blip2``) to a factory ``f(arch, weights, cache_dir) -> Backbone``. Built-in backbones register
themselves here when :mod:`cirbench.backbones` imports them."""
from __future__ import annotations

from typing import Callable, Dict

from .base import Backbone

FACTORIES: Dict[str, Callable[..., Backbone]] = {}
DESCRIPTIONS: Dict[str, str] = {}


def register_backbone(prefix: str, description: str):
    """Register a factory ``f(arch, weights, cache_dir) -> Backbone`` for specs ``prefix[:arch]``."""

    def wrap(fn):
        FACTORIES[prefix] = fn
        DESCRIPTIONS[prefix] = description
        return fn

    return wrap


__all__ = ["DESCRIPTIONS", "FACTORIES", "register_backbone"]
