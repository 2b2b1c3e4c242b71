"""Leaderboard files: one YAML file per table to regenerate, with the numbers the paper reports;
finding, loading and validating them.

A leaderboard file (``cirbench/leaderboards/<name>.yaml``, installed with the package)::

    name: spn-fashioniq                  # = the file name
    title: ...
    source: {paper: ..., arxiv: "2404.11317", table: "Table 2"}   # paper required; venue optional
    grid: {methods: [...], datasets: [...], noise: {...}, seeds: [...], backbone: ..., ...}
    paper:                               # optional (shapes-noise has none)
      layout: fashioniq                  # the metric layout of the reported numbers
      split: val                         # the split the paper reports
      reference_in_gallery: false        # optional: the paper's FashionIQ gallery protocol
      columns: [Dress R@10, ...]         # headers of cirbench's tables (cirbench.report.tables.COLUMNS)
      rows:
        - {method: CLIP4Cir, backbone: CLIP, values: [...], ours: clip4cir, noise: 0.2,
           approximation: "why cirbench's run is not the paper's model"}
    notes: [...]

``grid`` takes the keys of a ``cirbench run --spec`` file. ``values`` are the paper's numbers
as printed (``null`` where the paper gives none). ``ours`` names the cirbench method that
reimplements the row; rows without it are shown as the paper's numbers only. ``noise`` is the
row's training noise rate (absent: clean). ``approximation`` says why cirbench's row is not the
model the paper ran (a frozen-feature head where the paper fine-tuned, another backbone); such
rows are printed as approximations, never as regenerated. ``reference_in_gallery`` (absent: not
stated) is compared with the protocol cirbench's runs used.

Running a leaderboard's grid is :mod:`cirbench.leaderboards.run`; printing it beside the paper,
:mod:`cirbench.leaderboards.render`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional

from ..data import datasets
from ..data.noise import NOISE_TYPES
from ..errors import ConfigError
from ..files import read_yaml
from ..grid import spec_from_mapping
from ..paths import LEADERBOARDS_DIR
from ..report.tables import COLUMNS

_TOP_KEYS = {"name", "title", "source", "grid", "paper", "notes"}
_SOURCE_KEYS = {"paper", "arxiv", "venue", "table"}
_PAPER_KEYS = {"layout", "split", "columns", "rows", "reference_in_gallery"}
_PAPER_REQUIRED = {"layout", "split", "columns", "rows"}
_ROW_KEYS = {"method", "backbone", "values", "ours", "noise", "approximation"}

@dataclass
class PaperRow:
    method: str
    values: List[Optional[float]]
    backbone: Optional[str] = None
    ours: Optional[str] = None
    noise: Optional[float] = None
    approximation: Optional[str] = None  # why cirbench's row is not the paper's model

    @property
    def rate(self) -> float:
        return float(self.noise or 0.0)


@dataclass
class PaperTable:
    layout: str
    split: str
    columns: List[str]
    rows: List[PaperRow]
    reference_in_gallery: Optional[bool] = None  # the paper's FashionIQ gallery protocol, when stated


@dataclass
class Leaderboard:
    name: str
    title: str
    source: Dict[str, str]
    grid: Dict[str, Any]
    paper: Optional[PaperTable] = None
    notes: List[str] = field(default_factory=list)
    path: Optional[Path] = None

    @property
    def citation(self) -> str:
        s = self.source
        parts = [s["paper"], f"arXiv {s['arxiv']}" if s.get("arxiv") else "", s.get("venue", ""), s.get("table", "")]
        return ", ".join(p for p in parts if p)

    @property
    def real_datasets(self) -> List[str]:
        return [d for d in self.grid.get("datasets", []) if not datasets.is_generated(d)]


# ---------------------------------------------------------------------------- finding and loading

def available() -> Dict[str, Path]:
    """Leaderboard name -> file, sorted by name."""
    return {p.stem: p for p in sorted(LEADERBOARDS_DIR.glob("*.yaml"))}


def load(name_or_path) -> Leaderboard:
    """A leaderboard by name (``spn-fashioniq``) or from a YAML file path, validated."""
    text, files = str(name_or_path), available()
    path = files.get(text) or Path(text).expanduser()
    if text not in files and not (text.endswith((".yaml", ".yml")) or path.is_file()):
        raise ConfigError(f"unknown leaderboard {text!r}; available: {', '.join(files) or 'none'} "
                          "(`cirbench leaderboard list`), or give the path of a .yaml file")
    return parse(read_yaml(path, "leaderboard file", ConfigError), path)


def _fail(where: str, msg: str):
    raise ConfigError(f"{where}: {msg}")


def _keys(obj: Any, allowed: set, required: set, where: str, what: str) -> dict:
    if not isinstance(obj, dict):
        _fail(where, f"{what} must be a mapping, got {type(obj).__name__}")
    unknown = sorted(set(obj) - allowed)
    if unknown:
        _fail(where, f"unknown key {', '.join(map(repr, unknown))} in {what}; valid keys: {', '.join(sorted(allowed))}")
    missing = sorted(required - set(obj))
    if missing:
        _fail(where, f"{what} lacks the required key {', '.join(map(repr, missing))}")
    return obj


def parse(raw: Any, path: Path) -> Leaderboard:
    """Validate a parsed leaderboard file; every error names the file and the bad key."""
    path = Path(path)
    where = f"leaderboard {path.name}"
    _keys(raw, _TOP_KEYS, {"name", "title", "source", "grid"}, where, "the file")
    if raw["name"] != path.stem:
        _fail(where, f"'name' is {raw['name']!r} but the file is {path.name}: they must agree")
    source = _keys(raw["source"], _SOURCE_KEYS, {"paper"}, where, "'source'")
    grid = _check_grid(spec_from_mapping(raw["grid"], f"{where}: 'grid'"), where)
    notes = raw.get("notes") or []
    if not isinstance(notes, list) or not all(isinstance(n, str) for n in notes):
        _fail(where, "'notes' must be a list of strings")
    paper = None
    if raw.get("paper") is not None:
        if not source.get("table"):
            _fail(where, "'source' must name the 'table' the paper numbers come from")
        paper = _parse_paper(raw["paper"], grid, where)
    return Leaderboard(raw["name"], str(raw["title"]), {k: str(v) for k, v in source.items()}, grid, paper,
                       notes, path)


def _check_grid(grid: Dict[str, Any], where: str) -> Dict[str, Any]:
    """What can be checked without the methods being installed (Grid.validate checks the rest at run time)."""
    for d in grid.get("datasets", []):
        try:
            datasets.layout_of(d)
        except ConfigError as exc:
            _fail(where, f"'grid.datasets': {exc}")
    if grid.get("noise_type", "mixed") not in NOISE_TYPES:
        _fail(where, f"'grid.noise.type' is {grid['noise_type']!r}; choose from {', '.join(NOISE_TYPES)}")
    for r in grid.get("noise_rates", []):
        if not is_number(r) or not 0 <= r <= 1:
            _fail(where, f"'grid.noise.rates' must be numbers in [0, 1], got {r!r}")
    for key in ("seeds", "methods"):
        kind = int if key == "seeds" else str
        if not all(isinstance(x, kind) and not isinstance(x, bool) for x in grid.get(key, [])):
            _fail(where, f"'grid.{key}' must be a list of {kind.__name__}s")
    for key in ("epochs", "batch_size"):
        if key in grid and (not isinstance(grid[key], int) or grid[key] < 1):
            _fail(where, f"'grid.{key}' must be a positive integer, got {grid[key]!r}")
    return grid


def _parse_paper(raw: Any, grid: Dict[str, Any], where: str) -> PaperTable:
    _keys(raw, _PAPER_KEYS, _PAPER_REQUIRED, where, "'paper'")
    reference = raw.get("reference_in_gallery")
    if reference is not None and not isinstance(reference, bool):
        _fail(where, f"'paper.reference_in_gallery' must be true or false, got {reference!r}")
    layout = raw["layout"]
    if layout not in COLUMNS:
        _fail(where, f"'paper.layout' is {layout!r}; choose from {', '.join(COLUMNS)}")
    for d in grid.get("datasets", []):
        if datasets.layout_of(d) != layout:
            _fail(where, f"'grid.datasets' has {d!r} ({datasets.layout_of(d)} layout) but 'paper.layout' is {layout}")
    headers = [c.header for c in COLUMNS[layout]]
    columns = raw["columns"]
    if not isinstance(columns, list) or not columns:
        _fail(where, "'paper.columns' must be a non-empty list of column headers")
    for c in columns:
        if c not in headers:
            _fail(where, f"'paper.columns' has {c!r}, not a {layout} column; valid: {', '.join(headers)}")
    if len(set(columns)) != len(columns):
        _fail(where, "'paper.columns' lists a column twice")
    if not isinstance(raw["rows"], list) or not raw["rows"]:
        _fail(where, "'paper.rows' must be a non-empty list")
    literal = [m for m in grid.get("methods", ["*"]) if not any(ch in m for ch in "*?[")]
    wildcard = len(literal) < len(grid.get("methods", ["*"]))
    rows, seen = [], set()
    for i, r in enumerate(raw["rows"]):
        at = f"'paper.rows[{i}]'"
        _keys(r, _ROW_KEYS, {"method", "values"}, where, at)
        values = r["values"]
        if not isinstance(values, list) or len(values) != len(columns):
            n = len(values) if isinstance(values, list) else "no list of"
            _fail(where, f"{at}.values has {n} numbers, expected {len(columns)} (one per column: {', '.join(columns)})")
        if not all(v is None or is_number(v) for v in values):
            _fail(where, f"{at}.values must be numbers (or null where the paper gives none), got {values!r}")
        noise = r.get("noise")
        if noise is not None and (not is_number(noise) or not 0 <= noise <= 1):
            _fail(where, f"{at}.noise must be a rate in [0, 1], got {noise!r}")
        ours = r.get("ours")
        if ours is not None and (not isinstance(ours, str) or (ours not in literal and not wildcard)):
            _fail(where, f"{at}.ours is {ours!r}, which 'grid.methods' does not run ({', '.join(literal)})")
        approximation = r.get("approximation")
        if approximation is not None and (not isinstance(approximation, str) or not approximation.strip()):
            _fail(where, f"{at}.approximation must say, in words, why cirbench's row is not the paper's model")
        if approximation is not None and ours is None:
            _fail(where, f"{at}.approximation describes cirbench's row, but the row has no 'ours'")
        key = (str(r["method"]), float(noise or 0))
        if key in seen:
            _fail(where, f"{at} repeats method {key[0]!r} at noise {key[1]:g}")
        seen.add(key)
        rows.append(PaperRow(str(r["method"]), [None if v is None else float(v) for v in values],
                             None if r.get("backbone") is None else str(r["backbone"]), ours,
                             None if noise is None else float(noise), approximation))
    return PaperTable(layout, str(raw["split"]), list(columns), rows, reference)


def is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and not math.isnan(x)


__all__ = ["Leaderboard", "PaperRow", "PaperTable", "available", "is_number", "load", "parse"]
