"""cirbench from Python: the same grids as ``cirbench run``, the same reader as ``cirbench table``, the
same scorer as ``cirbench score``. ``import cirbench`` stays light; each function imports what it needs.

>>> import cirbench
>>> runs = cirbench.run(methods=["clip4cir"], datasets=["shapes-cirr"], noise_rates=[0, 0.5], epochs=2,
...                     weights="random", out="runs")                                  # doctest: +SKIP
>>> [(r.method, r.noise["rate"], r.metrics["best"]["Avg"]) for r in cirbench.load_runs("runs")]  # doctest: +SKIP
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Union

PathLike = Union[str, Path]


def run(methods: Optional[Sequence[str]] = None, datasets: Optional[Sequence[str]] = None,
        noise_type: Optional[str] = None, noise_rates: Optional[Sequence[float]] = None,
        noise_seed: Union[int, str, None] = None, seeds: Optional[Sequence[int]] = None,
        backbone: Optional[str] = None, weights: Optional[str] = None, preprocess: Optional[str] = None,
        data_root: Optional[Dict[str, PathLike]] = None, epochs: Optional[int] = None,
        batch_size: Optional[int] = None, hparams: Optional[Dict[str, Dict[str, Any]]] = None,
        exclude_reference: Optional[bool] = None, train_limit: Optional[int] = None, out: PathLike = "runs",
        cache_dir: Optional[PathLike] = None, device: str = "auto", force: bool = False, keep: str = "checkpoints",
        log: str = "none", progress: bool = True, grad_checkpointing: bool = False, report=None) -> list:
    """Train and evaluate a grid, as ``cirbench run`` does with the same options (``None`` takes the
    embedded benchmark's value; ``hparams`` is ``{method: {key: value}}`` as ``--set``); returns the
    :class:`cirbench.runs.RunRecord` of every cell, finished cells found under ``out`` reused.
    ``report(i, cell, metrics, seconds)`` is called after each cell."""
    from .devices import resolve_device
    from .grid import Grid
    from .runner import Workspace, run_grid

    given = {"methods": methods, "datasets": datasets, "noise_type": noise_type, "noise_rates": noise_rates,
             "noise_seed": noise_seed, "seeds": seeds, "backbone": backbone, "weights": weights,
             "preprocess": preprocess, "epochs": epochs, "batch_size": batch_size, "hparams": hparams,
             "exclude_reference": exclude_reference, "train_limit": train_limit,
             "data_root": {k: str(v) for k, v in (data_root or {}).items()} or None}
    grid = Grid(**{k: (list(v) if isinstance(v, (tuple, list)) else v) for k, v in given.items() if v is not None})
    cells = grid.cells()
    ws = Workspace(Path(cache_dir) if cache_dir else None, resolve_device(device), progress=progress,
                   grad_checkpointing=grad_checkpointing)
    return run_grid(cells, Path(out), ws, force=force, keep=keep, log=log, **({"report": report} if report else {}))


def load_runs(runs_dir: PathLike):
    """Every finished run under ``runs_dir`` (:class:`cirbench.runs.RunRecords`: a list of RunRecord, with
    ``skipped`` and ``unreadable`` folders), as ``cirbench table`` reads them."""
    from .runs import read_runs

    return read_runs(runs_dir)


def tables(runs: Sequence, which: str = "best") -> dict:
    """The paper-style tables of ``runs`` (name -> :class:`cirbench.report.tables.TableData`)."""
    from .report.tables import build_tables

    return build_tables(runs, which=which)


def score(dataset: str, annotations: PathLike, predictions: PathLike, split: str = "val",
          subset_predictions: Optional[PathLike] = None, categories: Optional[Sequence[str]] = None,
          exclude_reference: bool = False, allow_missing: bool = False):
    """Score a prediction file against annotation files, as ``cirbench score`` does: the result's
    ``metrics`` (FashionIQ per category and average; CIRR Recall@K, Rsubset@K, Avg) and ``n_queries``."""
    from .eval.predictions import score_file

    return score_file(dataset, Path(annotations), split, Path(predictions),
                      Path(subset_predictions) if subset_predictions else None, categories, exclude_reference,
                      allow_missing)


__all__: List[str] = ["load_runs", "run", "score", "tables"]
