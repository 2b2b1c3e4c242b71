"""A benchmark grid: methods × datasets × noise rates × seeds, from CLI options or a YAML spec.

The spec file uses the same names as ``cirbench run``'s options::

    methods: [clip4cir, ncl-cir]        # names or wildcards, default: every registered method
    datasets: [shapes-fashioniq, shapes-cirr]
    noise: {type: mixed, rates: [0, 0.2, 0.5, 0.8], seed: 0}   # seed: same = each cell's training seed
    seeds: [0, 1, 2]
    backbone: tiny                      # or open_clip:ViT-B-32
    weights: null                       # pretrained tag or local file
    preprocess: clip                    # or targetpad / targetpad:1.25 (CLIP4Cir's TargetPad)
    data_root: {fashioniq: /data/fashionIQ_dataset, cirr: /data/cirr_dataset}
    epochs: 10
    batch_size: 128
    hparams: {clip4cir: {lr: 0.001}}
    exclude_reference: false
"""
from __future__ import annotations

import copy
import functools
import itertools
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Union

from .data import datasets
from .data.noise import NOISE_TYPES
from .errors import ConfigError
from .files import read_yaml
from .paths import LEADERBOARDS_DIR
from .registry import expand_methods
from .runs import NOISE_SEED_SAME, RunSpec, parse_noise_seed, parse_preprocess

QUICK = {"epochs": 2, "rates": [0.0, 0.5], "train_limit": 1200}
#: The embedded benchmark: the leaderboard whose grid ``cirbench run`` runs with no arguments.
EMBEDDED_BENCHMARK = LEADERBOARDS_DIR / "shapes-noise.yaml"


@functools.lru_cache(maxsize=None)
def _defaults() -> Dict[str, Any]:
    return load_spec(EMBEDDED_BENCHMARK, key="grid")


def default_spec() -> Dict[str, Any]:
    """The embedded benchmark's grid (what ``cirbench run`` runs with no arguments), as Grid keyword
    arguments: the ``grid:`` of ``cirbench/leaderboards/shapes-noise.yaml``, so the two are one and
    the same."""
    return copy.deepcopy(_defaults())


def _default(key: str, fallback: Any = None):
    return lambda: default_spec().get(key, fallback)


@dataclass
class Grid:
    """Fields left out take the embedded benchmark's values (:func:`default_spec`)."""

    methods: List[str] = field(default_factory=_default("methods", ["*"]))
    datasets: List[str] = field(default_factory=_default("datasets"))
    noise_type: str = field(default_factory=_default("noise_type", "mixed"))
    noise_rates: List[float] = field(default_factory=_default("noise_rates"))
    noise_seed: Union[int, str] = field(default_factory=_default("noise_seed", 0))  # or "same"
    seeds: List[int] = field(default_factory=_default("seeds", [0]))
    backbone: str = field(default_factory=_default("backbone", "tiny"))
    weights: Optional[str] = field(default_factory=_default("weights"))
    preprocess: str = field(default_factory=_default("preprocess", "clip"))
    data_root: Dict[str, str] = field(default_factory=dict)
    epochs: int = field(default_factory=_default("epochs", 10))
    batch_size: int = field(default_factory=_default("batch_size", 128))
    hparams: Dict[str, Dict[str, Any]] = field(default_factory=dict)
    exclude_reference: bool = False
    train_limit: Optional[int] = None

    def validate(self) -> "Grid":
        if self.noise_type not in NOISE_TYPES:
            raise ConfigError(f"unknown noise type {self.noise_type!r}; choose from {', '.join(NOISE_TYPES)}")
        for r in self.noise_rates:
            if not isinstance(r, (int, float)) or isinstance(r, bool) or math.isnan(r) or not 0 <= r <= 1:
                raise ConfigError(f"noise rate must be a number in [0, 1], got {r!r}")
        for d in self.datasets:
            datasets.layout_of(d)
        for key in self.data_root:
            if key not in datasets.DATASETS or datasets.is_generated(key):
                raise ConfigError(f"data_root names {key!r}, which is not a real dataset (fashioniq, cirr)")
        for key in ("epochs", "batch_size"):
            if not isinstance(getattr(self, key), int) or isinstance(getattr(self, key), bool):
                raise ConfigError(f"{key} must be a whole number, got {getattr(self, key)!r}")
        if self.epochs < 0 or (self.epochs == 0 and not self._training_free()):
            raise ConfigError(f"epochs must be a positive integer, got {self.epochs}"
                              + (" (0 is for training-free methods: cirbench eval)" if self.epochs == 0 else ""))
        if self.batch_size < 2:
            raise ConfigError(f"batch_size must be an integer >= 2, got {self.batch_size}")
        for key in ("methods", "datasets", "noise_rates", "seeds"):
            if not getattr(self, key):
                raise ConfigError(f"{key} is empty: give at least one")
        for seed in self.seeds:
            if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
                raise ConfigError(f"training seeds must be whole numbers >= 0, got {seed!r}")
        for key in ("methods", "datasets"):
            if not all(isinstance(x, str) for x in getattr(self, key)):
                raise ConfigError(f"{key} must be names, got {getattr(self, key)!r}")
        self.methods = expand_methods(self.methods)
        names = set(self.methods) | {m.split(":")[0] for m in self.methods}
        for name in self.hparams:
            if name not in names:
                raise ConfigError(f"hparams given for {name!r}, which is not in this grid's methods "
                                  f"({', '.join(self.methods)}); write METHOD.KEY=VALUE for one of them, or add "
                                  f"{name} to the methods (-m)")
        return self

    def _training_free(self) -> bool:
        """Whether every method of the grid trains nothing (``zero-shot:*``)."""
        from .registry import get_method

        return bool(self.methods) and all(get_method(m.partition(":")[0]).training_free
                                          for m in expand_methods(self.methods))

    def summary(self) -> str:
        """"32 runs (4 methods × 2 datasets × 4 noise rates × 1 seeds)"; the grid must be validated."""
        n = len(self.methods) * len(self.datasets) * len(self.noise_rates) * len(self.seeds)
        return (f"{n} runs ({len(self.methods)} methods × {len(self.datasets)} datasets × "
                f"{len(self.noise_rates)} noise rates × {len(self.seeds)} seeds)")

    def hparams_for(self, method: str) -> Dict[str, Any]:
        """A cell's overrides: those given for the method's base name (``spn``), then those for
        the full name (``spn:clip4cir``), which win."""
        base = method.split(":")[0]
        return {**self.hparams.get(base, {}), **self.hparams.get(method, {})}

    def cells(self) -> List[RunSpec]:
        """Every cell, resolved. ``noise_seed: same`` gives each noisy cell its training seed as noise
        seed (``noise_seed_same``); a clean cell draws no noise, so it stays the plain clean cell
        (noise seed 0) that a fixed-seed grid writes too, and the two grids share it."""
        self.validate()
        preprocess = parse_preprocess(self.preprocess, "preprocess")
        noise_seed = parse_noise_seed(self.noise_seed, "noise seed")
        same = noise_seed == NOISE_SEED_SAME
        out = []
        for dataset, method, rate, seed in itertools.product(self.datasets, self.methods, self.noise_rates, self.seeds):
            from_seed = same and float(rate) > 0
            out.append(RunSpec(
                method=method, dataset=dataset, noise_type=self.noise_type, noise_rate=float(rate),
                noise_seed=seed if from_seed else (0 if same else noise_seed), seed=seed,
                backbone=self.backbone, weights=self.weights,
                epochs=self.epochs, batch_size=self.batch_size, hparams=self.hparams_for(method),
                data_root=self.data_root.get(dataset), exclude_reference=self.exclude_reference,
                train_limit=self.train_limit, preprocess=preprocess, noise_seed_same=from_seed,
            ))
        return out


_SPEC_KEYS = {"methods", "datasets", "noise", "seeds", "backbone", "weights", "preprocess", "data_root", "epochs",
              "batch_size", "hparams", "exclude_reference", "train_limit"}
_NOISE_KEYS = {"type", "rates", "seed"}


def load_spec(path: Path, key: Optional[str] = None) -> Dict[str, Any]:
    """Read a YAML spec into Grid keyword arguments, naming any unknown or malformed key; ``key``
    reads the spec under that key of the file (a leaderboard's ``grid``)."""
    raw = read_yaml(path, "spec file", ConfigError) or {}
    if key is not None:
        raw = raw.get(key) if isinstance(raw, dict) else None
    return spec_from_mapping(raw, f"spec file {path}" + (f", '{key}'" if key else ""))


def spec_from_mapping(raw: Any, where: str) -> Dict[str, Any]:
    """A spec already parsed (a dict, e.g. a leaderboard's ``grid:``) into Grid keyword arguments;
    errors start with ``where``."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{where} must be a mapping of option names to values")
    unknown = sorted(set(raw) - _SPEC_KEYS)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)}; valid: {', '.join(sorted(_SPEC_KEYS))}")
    kw: Dict[str, Any] = {k: v for k, v in raw.items() if k != "noise"}
    noise = raw.get("noise") or {}
    if not isinstance(noise, dict) or set(noise) - _NOISE_KEYS:
        raise ConfigError(f"{where}: 'noise' takes {', '.join(sorted(_NOISE_KEYS))}")
    for src, dst in (("type", "noise_type"), ("rates", "noise_rates"), ("seed", "noise_seed")):
        if src in noise:
            kw[dst] = noise[src]
    if "noise_seed" in kw:
        kw["noise_seed"] = parse_noise_seed(kw["noise_seed"], f"{where}: 'noise.seed'")
    if "preprocess" in kw:
        kw["preprocess"] = parse_preprocess(kw["preprocess"], f"{where}: 'preprocess'")
    for key in ("methods", "datasets", "noise_rates", "seeds"):
        if key in kw and not isinstance(kw[key], list):
            kw[key] = [kw[key]]
    if "data_root" in kw and not isinstance(kw["data_root"], dict):
        raise ConfigError(f"{where}: data_root must map dataset names to folders")
    return kw
