"""Method registry: ``@register_method`` and ``list_methods`` with wildcards (after timm's).

Built-in methods (the ``cirbench_methods`` package, the repo's ``methods/`` folder) and
third-party ones register the same way: a package lists its module (or class) in the
``cirbench.methods`` entry-point group, cirbench imports it on first look-up, and the
``@register_method`` decorator in that module does the rest.

A method name may carry an argument, ``name:arg``: one of the class's named ``variants``
(cirbench's own configurations beside the paper's method, e.g. ``ncl-cir:robust``; ``"*"`` expands to
them too) or, failing that, the value of its ``arg_hparam`` (``spn:clip4cir``, the ablations
``dqe-cir:no-attr``; never expanded by wildcards).
"""
from __future__ import annotations

import dataclasses
import difflib
import fnmatch
import inspect
import logging
from importlib.metadata import entry_points
from typing import Dict, List, Optional, Tuple, Type

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
        _check_variants(name, cls)
        cls.name = name
        _METHODS[name] = cls
        return cls

    return wrap


def _check_variants(name: str, cls) -> None:
    """A class's ``variants`` must have plain names and override hyper-parameters it has (a bug in
    the method module otherwise, raised when it registers)."""
    fields = {f.name for f in dataclasses.fields(cls.Hparams)} if dataclasses.is_dataclass(cls.Hparams) else set()
    for variant, spec in getattr(cls, "variants", {}).items():
        if not variant or any(ch in variant for ch in ":*?[]. "):
            raise ValueError(f"method {name!r}: variant name {variant!r} must be a plain word")
        unknown = sorted(set(spec.hparams) - fields)
        if unknown:
            raise ValueError(f"method {name!r}: variant {variant!r} sets unknown hyper-parameter(s) "
                             f"{', '.join(unknown)}")


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


def list_methods(pattern: str = "*", variants: bool = False) -> List[str]:
    """Registered method names matching a shell-style wildcard, sorted; with ``variants``, each
    method's named variants (``ncl-cir:robust``) follow it, matched by their full name."""
    _load_entry_points()
    out = []
    for name in sorted(_METHODS):
        names = [name] + ([f"{name}:{v}" for v in _METHODS[name].variants] if variants else [])
        out.extend(n for n in names if fnmatch.fnmatchcase(n, pattern))
    return out


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


def resolve_name(spec: str) -> Tuple[Type, Optional[str], Optional[object]]:
    """``name`` or ``name:arg`` as (class, arg or None, the named variant or None); an argument that
    is neither a variant of the class nor a value of its ``arg_hparam`` is a clear error."""
    name, sep, arg = spec.partition(":")
    cls = get_method(name)
    if not sep:
        return cls, None, None
    variant = cls.variants.get(arg)
    if variant is None and not cls.arg_hparam:
        known = ", ".join(f"{name}:{v}" for v in cls.variants)
        raise ConfigError(f"method {name!r} has no variant {arg!r} (got {spec!r}); "
                          + (f"its variants: {known}" if known else "it takes no ':argument'")
                          + " (`cirbench list methods`)")
    return cls, arg, variant


def expand_methods(patterns: List[str]) -> List[str]:
    """Expand names and wildcards (``"*"``, ``"clip*"``) into registered names and their named
    variants (``ncl-cir:robust``), keeping order.

    A name may carry an argument after a colon (``spn:clip4cir``, ``ncl-cir:robust``): the part
    before the colon must be registered and the argument a variant or an ``arg_hparam`` value of
    it (:func:`resolve_name`); the whole string is kept.
    """
    out: List[str] = []
    for pat in patterns:
        if any(ch in pat for ch in "*?["):
            names = [n for n in list_methods(pat, variants=True)  # training-free methods are named, not matched
                     if not get_method(n.partition(":")[0]).training_free]
            if not names:
                raise ConfigError(f"no registered method matches {pat!r} (registered: {', '.join(list_methods())}; "
                                  "`cirbench list methods`)")
        else:
            resolve_name(pat)
            names = [pat]
        out.extend(n for n in names if n not in out)
    return out
