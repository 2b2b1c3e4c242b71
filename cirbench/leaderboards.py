"""Leaderboards: one YAML file per table to regenerate, with the numbers the paper reports.

A leaderboard file (``leaderboards/<name>.yaml``; the folder is installed as the
``cirbench_leaderboards`` package)::

    name: spn-fashioniq                  # = the file name
    title: ...
    source: {paper: ..., arxiv: "2404.11317", table: "Table 2"}   # paper required; venue optional
    grid: {methods: [...], datasets: [...], noise: {...}, seeds: [...], backbone: ..., ...}
    paper:                               # optional (shapes-noise has none)
      layout: fashioniq                  # the metric layout of the reported numbers
      split: val                         # the split the paper reports
      columns: [Dress R@10, ...]         # headers of cirbench's tables (cirbench.tables.COLUMNS)
      rows:
        - {method: CLIP4Cir, backbone: CLIP, values: [...], ours: clip4cir, noise: 0.2}
    notes: [...]

``grid`` takes the keys of a ``cirbench run --spec`` file. ``values`` are the paper's numbers
as printed (``null`` where the paper gives none). ``ours`` names the cirbench method that
reimplements the row; rows without it are shown as the paper's numbers only. ``noise`` is the
row's training noise rate (absent: clean).

Decisions: the comparison is laid out paper row / cirbench row / difference row, under the
paper's own columns, so it reads like the paper's table; methods the grid names but this install
does not register are skipped with a warning (leaderboards pick methods up as they land); a
real-data grid checks its data and builds its backbone before the first cell, so a missing
dataset stops the run before anything is written.
"""
from __future__ import annotations

import csv
import io
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import yaml

from . import datasets
from .errors import CirbenchError, ConfigError, DataError
from .grid import Grid, spec_from_mapping
from .noise import NOISE_TYPES
from .tables import COLUMNS, TableData, _cell, _latex_escape, build_tables, render_text

log = logging.getLogger("cirbench")

_TOP_KEYS = {"name", "title", "source", "grid", "paper", "notes"}
_SOURCE_KEYS = {"paper", "arxiv", "venue", "table"}
_PAPER_KEYS = {"layout", "split", "columns", "rows"}
_ROW_KEYS = {"method", "backbone", "values", "ours", "noise"}

#: What to download for each real dataset, and how to lay it out (printed when it is missing).
DOWNLOADS = {
    "fashioniq": (
        "FashionIQ: the annotations (captions/, image_splits/) from github.com/XiaoxiaoGuo/fashion-iq and "
        "the product images (the release lists their URLs). Lay it out as\n"
        "    DIR/captions/cap.{dress,shirt,toptee}.{train,val,test}.json\n"
        "    DIR/image_splits/split.{dress,shirt,toptee}.{train,val,test}.json\n"
        "    DIR/images/<id>.png (or .jpg)"),
    "cirr": (
        "CIRR: the annotations from github.com/Cuberick-Orion/CIRR (cirr/captions, cirr/image_splits) and the "
        "NLVR2 raw images they index (requested from the NLVR2 authors). Lay it out as\n"
        "    DIR/cirr/captions/cap.rc2.{train,val,test1}.json\n"
        "    DIR/cirr/image_splits/split.rc2.{train,val,test1}.json\n"
        "    DIR/train/<n>/*.png   DIR/dev/*.png   DIR/test1/*.png"),
}


@dataclass
class PaperRow:
    method: str
    values: List[Optional[float]]
    backbone: Optional[str] = None
    ours: Optional[str] = None
    noise: Optional[float] = None

    @property
    def rate(self) -> float:
        return float(self.noise or 0.0)


@dataclass
class PaperTable:
    layout: str
    split: str
    columns: List[str]
    rows: List[PaperRow]


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

def leaderboards_dir() -> Path:
    """The installed leaderboard files (package ``cirbench_leaderboards``, the repo's ``leaderboards/``)."""
    try:
        import cirbench_leaderboards

        return Path(cirbench_leaderboards.__file__).resolve().parent
    except ImportError:  # a source checkout that was not installed
        return Path(__file__).resolve().parents[1] / "leaderboards"


def available() -> Dict[str, Path]:
    """Leaderboard name -> file, sorted by name."""
    return {p.stem: p for p in sorted(leaderboards_dir().glob("*.yaml"))}


def load(name_or_path) -> Leaderboard:
    """A leaderboard by name (``spn-fashioniq``) or from a YAML file path, validated."""
    text, files = str(name_or_path), available()
    path = files.get(text) or Path(text).expanduser()
    if text not in files and not (text.endswith((".yaml", ".yml")) or path.is_file()):
        raise ConfigError(f"unknown leaderboard {text!r}; available: {', '.join(files) or 'none'} "
                          "(`cirbench leaderboard list`), or give the path of a .yaml file")
    if not path.is_file():
        raise ConfigError(f"leaderboard file {path} does not exist")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"leaderboard {path.name} is not valid YAML: {exc}") from None
    return parse(raw, path)


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


def _number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and not math.isnan(x)


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
        if not _number(r) or not 0 <= r <= 1:
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
    _keys(raw, _PAPER_KEYS, _PAPER_KEYS, where, "'paper'")
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
        if not all(v is None or _number(v) for v in values):
            _fail(where, f"{at}.values must be numbers (or null where the paper gives none), got {values!r}")
        noise = r.get("noise")
        if noise is not None and (not _number(noise) or not 0 <= noise <= 1):
            _fail(where, f"{at}.noise must be a rate in [0, 1], got {noise!r}")
        ours = r.get("ours")
        if ours is not None and (not isinstance(ours, str) or (ours not in literal and not wildcard)):
            _fail(where, f"{at}.ours is {ours!r}, which 'grid.methods' does not run ({', '.join(literal)})")
        key = (str(r["method"]), float(noise or 0))
        if key in seen:
            _fail(where, f"{at} repeats method {key[0]!r} at noise {key[1]:g}")
        seen.add(key)
        rows.append(PaperRow(str(r["method"]), [None if v is None else float(v) for v in values],
                             None if r.get("backbone") is None else str(r["backbone"]), ours,
                             None if noise is None else float(noise)))
    return PaperTable(layout, str(raw["split"]), list(columns), rows)


# ---------------------------------------------------------------------------- the grid

def make_grid(lb: Leaderboard, **overrides) -> Tuple[Grid, List[str]]:
    """The leaderboard's grid with CLI overrides (``None`` values ignored), and the methods the file
    names that this install does not register (skipped; methods given as overrides must exist)."""
    from .registry import expand_methods, list_methods

    kw = dict(lb.grid)
    kw.update({k: v for k, v in overrides.items() if v is not None})
    registered = set(list_methods())
    wanted = kw.get("methods", ["*"])
    skipped = [] if overrides.get("methods") else [
        m for m in wanted if not any(ch in m for ch in "*?[") and m.split(":")[0] not in registered]
    kw["methods"] = [m for m in wanted if m not in skipped]
    if not kw["methods"]:
        raise ConfigError(f"leaderboard {lb.name}: none of its methods ({', '.join(wanted)}) is installed "
                          "(`cirbench list methods`)")
    grid = Grid(**{**kw, "hparams": {}})
    names = expand_methods(grid.methods)  # hyper-parameters of methods not run (skipped, -m) are left out
    grid.hparams = {k: v for k, v in (kw.get("hparams") or {}).items() if k in names or k.split(":")[0] in names}
    grid.validate()
    return grid, skipped


def preflight(lb: Leaderboard, grid: Grid, ws) -> None:
    """Fail before anything is written: real data present and readable, backbone buildable."""
    for name in grid.datasets:
        if datasets.is_generated(name):
            continue
        root = grid.data_root.get(name)
        if not root:
            raise ConfigError(f"leaderboard {lb.name} needs the real {name} dataset, and no --data-root was given.\n"
                              f"Download {DOWNLOADS[name]}\nthen run: cirbench leaderboard run {lb.name} "
                              f"--data-root {name}=DIR")
    needs_weights = grid.backbone != "tiny" and not grid.weights
    if needs_weights:
        raise ConfigError(f"leaderboard {lb.name} runs backbone {grid.backbone!r}, which needs pretrained weights: "
                          "pass --weights (an open_clip tag or local file; for blip2 a local transformers folder)")
    for cell in {c.dataset: c for c in grid.cells()}.values():
        try:
            ws.dataset(cell)
        except DataError as exc:
            if datasets.is_generated(cell.dataset):
                raise
            raise DataError(f"{exc}\nleaderboard {lb.name} needs {DOWNLOADS[cell.dataset]}") from None
    ws.backbone(grid.cells()[0])


def run(lb: Leaderboard, grid: Grid, out: Path, ws, force: bool = False,
        echo: Callable[[str], None] = print, checked: bool = False) -> List[dict]:
    """Run (or finish, or reuse) every cell; returns the runs as ``{"dir", "config", "metrics"}``.
    ``checked``: :func:`preflight` has been called already."""
    import time

    from .runs import execute

    cells = grid.cells()
    if not checked:
        preflight(lb, grid, ws)
    done = []
    for i, cell in enumerate(cells, 1):
        t = time.time()
        metrics = execute(cell, out, ws, force=force)
        done.append({"dir": Path(out) / cell.dirname(), "config": cell.to_dict(), "metrics": metrics})
        echo(f"[{i}/{len(cells)}] {cell.dirname()}  ({time.time() - t:.1f}s)")
    return done


# ---------------------------------------------------------------------------- rendering

def _num(v: Optional[float], latex: bool = False) -> str:
    return ("--" if latex else "-") if v is None else f"{v:.2f}"


def _noise_text(rate: float, noise_type: str) -> str:
    return "clean" if rate == 0 else f"{noise_type} {rate:g}"


def _table_out(title: str, headers: List[str], body: List[List[str]], fmt: str, left: int) -> str:
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(headers)
        writer.writerows(body)
        return out.getvalue()
    if fmt == "latex":
        body = [[_latex_escape(c) if j < left else c for j, c in enumerate(row)] for row in body]
    return render_text(title, headers, body, fmt, left=left)


def render_paper(lb: Leaderboard, fmt: str = "terminal") -> str:
    """The paper's table exactly as reported, with which rows cirbench reimplements."""
    if lb.paper is None:
        g = lb.grid
        return (f"{lb.name}: {lb.title}\nNo paper numbers: {lb.source['paper']}.\n"
                f"Grid: methods {', '.join(g.get('methods', ['*']))}; datasets {', '.join(g.get('datasets', []))}; "
                f"noise {g.get('noise_type', 'mixed')} at {', '.join(f'{r:g}' for r in g.get('noise_rates', []))}; "
                f"seeds {', '.join(map(str, g.get('seeds', [])))}; backbone {g.get('backbone')}\n")
    p = lb.paper
    latex = fmt == "latex"
    has_backbone = any(r.backbone for r in p.rows)
    has_noise = any(r.noise is not None for r in p.rows)
    noise_type = lb.grid.get("noise_type", "mixed")
    headers = ["Method", *["Backbone"] * has_backbone, *["Noise"] * has_noise, "In cirbench", *p.columns]
    body = [[r.method, *[r.backbone or ""] * has_backbone, *[_noise_text(r.rate, noise_type)] * has_noise,
             r.ours or "no (paper only)", *(_num(v, latex) for v in r.values)] for r in p.rows]
    title = f"{lb.name}: {lb.title}. {lb.citation}; {p.split} split; as reported (percent)"
    text = _table_out(title, headers, body, fmt, left=len(headers) - len(p.columns))
    return text + _notes(lb, fmt)


def _notes(lb: Leaderboard, fmt: str) -> str:
    if not lb.notes or fmt == "csv":
        return ""
    if fmt == "latex":
        return "".join(f"% {n}\n" for n in lb.notes)
    return "".join(f"- {n}\n" for n in lb.notes)


def compare(lb: Leaderboard, runs: Sequence[dict], which: str = "best") -> List[Tuple[TableData, List[List[Any]]]]:
    """Paper rows beside cirbench's, per cirbench table (dataset × backbone × protocol).

    Each comparison row is ``[method, rate, kind, values]`` with kind one of "paper",
    "paper only", "paper (not run)", "cirbench", "difference", "cirbench only"; cirbench values are
    ``(mean, std)``, the others numbers or None.
    """
    if lb.paper is None:
        return []
    p = lb.paper
    out = []
    for table in build_tables(runs, which=which).values():
        if table.layout != p.layout:
            continue
        index = {c.header: i for i, c in enumerate(table.columns)}
        ours = {(r.method, r.noise_rate): r for r in table.rows}
        used = set()
        rows: List[List[Any]] = []
        for pr in p.rows:
            mine = ours.get((pr.ours, pr.rate)) if pr.ours else None
            if mine is None:
                rows.append([pr.method, pr.rate, "paper (not run)" if pr.ours else "paper only", pr.values])
                continue
            used.add((mine.method, mine.noise_rate))
            cells = [mine.cells[index[c]][:2] for c in p.columns]
            diff = [None if v is None or m is None else m - v for v, (m, _) in zip(pr.values, cells)]
            rows += [[pr.method, pr.rate, "paper", pr.values], [mine.method, pr.rate, "cirbench", cells],
                     [mine.method, pr.rate, "difference", diff]]
        for key, r in ours.items():
            if key not in used:
                rows.append([r.method, r.noise_rate, "cirbench only", [r.cells[index[c]][:2] for c in p.columns]])
        out.append((table, rows))
    return out


_KIND_TEXT = {"paper": "paper", "paper only": "paper only (not in cirbench)",
              "paper (not run)": "paper (cirbench method not installed)", "cirbench": "cirbench",
              "difference": "cirbench - paper", "cirbench only": "cirbench only (no paper number)"}


def render_comparison(lb: Leaderboard, runs: Sequence[dict], fmt: str = "terminal", which: str = "best") -> str:
    """The paper's table with cirbench's numbers and the difference under each implemented row."""
    p = lb.paper
    if p is None:
        return ""
    latex = fmt == "latex"
    noise_type = lb.grid.get("noise_type", "mixed")
    texts = []
    for table, rows in compare(lb, runs, which):
        has_noise = any(r[1] for r in rows)
        headers = ["Method", *["Noise"] * has_noise, "Numbers", *p.columns]
        body = []
        for method, rate, kind, values in rows:
            if kind in ("cirbench", "cirbench only"):
                cells = [_cell(m, s, latex) for m, s in values]
            elif kind == "difference":
                cells = [("--" if latex else "-") if d is None else f"{d:+.2f}" for d in values]
            else:
                cells = [_num(v, latex) for v in values]
            body.append([method, *[_noise_text(rate, noise_type)] * has_noise, _KIND_TEXT[kind], *cells])
        title = (f"{lb.name}: cirbench beside {lb.citation}. Paper: {p.split} split, as reported. "
                 f"cirbench: {table.title}. Difference = cirbench - paper")
        texts.append(_table_out(title, headers, body, fmt, left=len(headers) - len(p.columns)) + _notes(lb, fmt))
    return "\n".join(texts)


def render_list(fmt: str = "terminal") -> str:
    """Every leaderboard: name, what it regenerates, the grid's size, the data it needs."""
    body = []
    for name in available():
        try:
            lb = load(name)
        except CirbenchError as exc:
            body.append([name, f"invalid: {exc}", "", "", ""])
            continue
        g = lb.grid
        methods = g.get("methods", ["*"])
        size = (f"{'all' if methods == ['*'] else len(methods)} methods x {len(g.get('datasets', []))} datasets x "
                f"{len(g.get('noise_rates', []))} rates x {len(g.get('seeds', []))} seeds")
        data = ", ".join(lb.real_datasets) or "generated (offline)"
        s = lb.source
        ref = f"arXiv {s['arxiv']}" if s.get("arxiv") else s.get("venue", s["paper"]).split(";")[0]
        where = f"{ref}, {s['table']}" if lb.paper else "cirbench's embedded benchmark"
        body.append([name, lb.title, where, size, data])
    headers = ["Name", "Table", "Source", "Grid", "Data"]
    return _table_out(f"Leaderboards in {leaderboards_dir()}", headers, body, fmt, left=len(headers))
