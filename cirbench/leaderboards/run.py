"""Running a leaderboard: its grid with the user's overrides, and the checks that stop a run that
cannot succeed (missing data or weights) before anything is written.

Methods the grid names but this install does not register are skipped with a warning
(leaderboards pick methods up as they land).
"""
from __future__ import annotations

from typing import List, Tuple

from ..data import datasets
from ..errors import ConfigError, DataError
from ..grid import Grid
from ..registry import expand_methods, list_methods
from .schema import Leaderboard


def make_grid(lb: Leaderboard, **overrides) -> Tuple[Grid, List[str]]:
    """The leaderboard's grid with CLI overrides (``None`` values ignored), and the methods the file
    names that this install does not register (skipped; methods given as overrides must exist)."""
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
    """Fail before anything is written: hyper-parameters valid, real data present and readable, backbone
    buildable."""
    from ..runner import resolve_method  # here: listing leaderboards needs no torch
    for name in grid.datasets:
        if datasets.is_generated(name):
            continue
        root = grid.data_root.get(name)
        if not root:
            raise ConfigError(f"leaderboard {lb.name} needs the real {name} dataset, and no --data-root was given: "
                              f"download {datasets.DOWNLOADS[name]}, then run: cirbench leaderboard run {lb.name} "
                              f"--data-root {name}=DIR")
    needs_weights = grid.backbone != "tiny" and not grid.weights
    if needs_weights:
        raise ConfigError(f"leaderboard {lb.name} runs backbone {grid.backbone!r}, which needs pretrained weights: "
                          "pass --weights (an open_clip tag or local file; for blip2 a local transformers folder)")
    cells = grid.cells()
    for cell in cells:  # hyper-parameters first: a typo costs no data loading or warm start
        resolve_method(cell)
    for cell in {c.dataset: c for c in cells}.values():
        try:
            ws.dataset(cell)
        except DataError as exc:
            if datasets.is_generated(cell.dataset):
                raise
            raise DataError(f"{exc} (leaderboard {lb.name} needs {datasets.DOWNLOADS[cell.dataset]})") from None
    ws.backbone(cells[0])


__all__ = ["make_grid", "preflight"]
