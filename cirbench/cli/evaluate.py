"""``cirbench eval``: score without training, under the same protocols, into the same run folders and tables:
the training-free baselines over any backbone, or a saved run's best model re-ranked."""
from __future__ import annotations

import json
from pathlib import Path

import click

from .options import (
    cache_dir_option,
    cell_reporter,
    data_root_option,
    device_option,
    force_option,
    format_option,
    no_progress_option,
    parse_data_roots,
    parse_preprocess_option,
    preprocess_option,
)

#: The zero-shot rows of CIR papers: image only, text only, and CLIP4Cir's sum.
ZERO_SHOT = ("zero-shot:image", "zero-shot:text", "zero-shot:sum")


@click.command("eval")
@click.option("-m", "--method", "methods", multiple=True,
              help=f"A training-free method (repeatable). Default: {', '.join(ZERO_SHOT)}.")
@click.option("-d", "--dataset", "datasets_", multiple=True,
              help="shapes-fashioniq, shapes-cirr, fashioniq or cirr (repeatable). Default: both shapes layouts.")
@click.option("--backbone", help="tiny (default), open_clip:<arch> or blip2; see `cirbench list backbones`.")
@click.option("--weights", help="Backbone weights: an open_clip pretrained tag or a local checkpoint file.")
@preprocess_option()
@data_root_option
@click.option("--run", "run_dir", type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="Instead: re-rank the val split with this run folder's best model and check that its "
                   "metrics.json is reproduced.")
@device_option
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("runs/eval"),
              show_default=True, help="Where the run folders of the scored baselines go.")
@cache_dir_option
@force_option
@format_option()
@no_progress_option
def evaluate(methods, datasets_, backbone, weights, preprocess, data_roots, run_dir, device, out, cache_dir, force,
             fmt, no_progress):
    """Score without training: zero-shot baselines over a backbone, or a saved run (--run)."""
    from ..devices import resolve_device
    from ..runner import Workspace

    ws = Workspace(cache_dir, resolve_device(device), progress=not no_progress)
    if run_dir is not None:
        _rerank(run_dir, ws, fmt)
        return
    from ..grid import Grid
    from ..report.tables import build_tables, render_all
    from ..runner import run_grid

    kw = {"methods": list(methods) or list(ZERO_SHOT), "noise_rates": [0.0], "seeds": [0], "epochs": 0,
          "backbone": backbone, "weights": weights, "preprocess": parse_preprocess_option(preprocess)}
    if datasets_:
        kw["datasets"] = list(datasets_)
    if data_roots:
        kw["data_root"] = parse_data_roots(data_roots, kw.get("datasets") or [])
    grid = Grid(**{k: v for k, v in kw.items() if v is not None})
    cells = grid.cells()
    click.echo(f"cirbench eval: {grid.summary()} on {ws.device} -> {out}/", err=True)
    done = run_grid(cells, out, ws, force=force, report=cell_reporter(len(cells)))
    click.echo(render_all(build_tables(done), fmt))


def _rerank(run_dir: Path, ws, fmt: str) -> None:
    """The run's best model ranks its val split again; its metrics must be the run's best metrics."""
    from ..errors import DataError
    from ..eval.submit import rank_run
    from ..report.tables import build_tables, render_all
    from ..runs import RunDir, RunRecord

    record = RunDir(run_dir).record()
    if record is None:
        raise DataError(f"{run_dir} holds no finished run (metrics.json with status finished); finish it first")
    _, result = rank_run(run_dir, "val", ws)
    again = RunRecord(run_dir, record.config, {**record.metrics, "best": result.metrics, "last": result.metrics})
    click.echo(render_all(build_tables([again]), fmt))
    if result.metrics != record.metrics["best"]:
        raise DataError(f"re-ranking {run_dir} gives other metrics than its metrics.json: "
                        f"{json.dumps(result.metrics)} vs {json.dumps(record.metrics['best'])}")
    click.echo(f"reproduces {RunDir(run_dir).metrics_file} exactly", err=True)
