"""Method registry: ``@register_method`` and ``list_methods`` with wildcards (after timm's).

Built-in methods (the ``cirbench_methods`` package, the repo's ``methods/`` folder) and
third-party ones register the same way: a package lists its module (or class) in the
``cirbench.methods`` entry-point group, cirbench imports it on first look-up, and the
``@register_method`` decorator in that module does the rest.
"""
from __future__ import annotations

import difflib
import fnmatch
import inspect
import logging
from importlib.metadata import entry_points
from typing import Dict, List, Type

from .errors import ConfigError

ENTRY_POINT_GROUP = "cirbench.methods"
log = logging.getLogger("cirbench")

_METHODS: Dict[str, type] = {}
_entry_points_loaded = False


def register_method(name: str):
    """Class decorator: make a :class:`cirbench.method.Method` subclass available as ``name``."""

    def wrap(cls):
        if name in _METHODS and _METHODS[name] is not cls:
            raise ValueError(f"method {name!r} is registered twice ({_METHODS[name]} and {cls})")
        cls.name = name
        _METHODS[name] = cls
        return cls

    return wrap


def _load_entry_points() -> None:
    global _entry_points_loaded
    if _entry_points_loaded:
        return
    _entry_points_loaded = True
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        try:
            obj = ep.load()
        except Exception as exc:  # a broken plug-in must not take the others down
            log.warning("could not load cirbench method %r from %s: %s", ep.name, ep.value, exc)
            continue
        if inspect.isclass(obj) and ep.name not in _METHODS:
            register_method(ep.name)(obj)


def list_methods(pattern: str = "*") -> List[str]:
    """Registered method names matching a shell-style wildcard, sorted."""
    _load_entry_points()
    return sorted(n for n in _METHODS if fnmatch.fnmatchcase(n, pattern))


def get_method(name: str) -> Type:
    """The class registered as ``name``; a clear error with suggestions otherwise."""
    _load_entry_points()
    if name not in _METHODS:
        close = difflib.get_close_matches(name, _METHODS, n=3)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise ConfigError(
            f"unknown method {name!r}.{hint} Registered methods: {', '.join(sorted(_METHODS)) or 'none'} "
            "(`cirbench list methods`)."
        )
    return _METHODS[name]


def expand_methods(patterns: List[str]) -> List[str]:
    """Expand names and wildcards (``"*"``, ``"clip*"``) into registered names, keeping order.

    A name may carry an argument after a colon (``spn:clip4cir``): the part before the colon
    must be registered, the whole string is kept.
    """
    out: List[str] = []
    for pat in patterns:
        if any(ch in pat for ch in "*?["):
            names = list_methods(pat)
            if not names:
                raise ConfigError(f"no registered method matches {pat!r} (registered: {', '.join(list_methods())})")
        else:
            get_method(pat.split(":", 1)[0])
            names = [pat]
        out.extend(n for n in names if n not in out)
    return out
