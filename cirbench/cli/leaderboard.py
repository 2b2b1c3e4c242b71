"""``cirbench leaderboard list | show | run``: paper tables and the grids that regenerate them."""
from __future__ import annotations

import time
from pathlib import Path

import click

from .options import (
    cache_dir_option,
    cell_reporter,
    color,
    data_root_option,
    device_option,
    force_option,
    format_option,
    grad_checkpointing_option,
    keep_option,
    log_option,
    no_progress_option,
    noise_seed_option,
    parse_data_roots,
    parse_ints,
    parse_noise_seed_option,
    parse_overrides,
    parse_preprocess_option,
    preprocess_option,
    set_option,
)


@click.group()
def leaderboard():
    """Paper tables: the grid that regenerates each, and the numbers the paper reports."""


@leaderboard.command("list")
@format_option()
def lb_list(fmt: str):
    """The leaderboards cirbench ships."""
    from ..leaderboards.render import render_list

    click.echo(render_list(fmt))


@leaderboard.command("show")
@click.argument("name")
@format_option()
def lb_show(name: str, fmt: str):
    """Print the paper's table exactly as reported (NAME or a leaderboard .yaml file)."""
    from ..leaderboards.render import render_paper
    from ..leaderboards.schema import load

    click.echo(render_paper(load(name), fmt))


@leaderboard.command("run")
@click.argument("name")
@data_root_option
@click.option("-m", "--method", "methods", multiple=True,
              help="Run these methods instead of the leaderboard's (names or wildcards, repeatable).")
@click.option("--weights", help="Backbone weights (open_clip tag, local file, or a BLIP-2 folder); overrides the file.")
@click.option("--backbone", help="Override the leaderboard's backbone.")
@preprocess_option("Default: the leaderboard's.")
@noise_seed_option("Default: the leaderboard's.")
@click.option("--seeds", help="Override the training seeds, e.g. 0,1,2.")
@click.option("--epochs", type=int, help="Override the epochs per run.")
@set_option
@device_option
@grad_checkpointing_option
@click.option("--out", type=click.Path(file_okay=False, path_type=Path),
              help="Where run folders go (default runs/<NAME>); finished cells found there are reused.")
@cache_dir_option
@force_option
@keep_option
@log_option
@format_option()
@no_progress_option
def lb_run(name, methods, data_roots, weights, backbone, preprocess, noise_seed, seeds, epochs, overrides, device,
           grad_checkpointing, out, cache_dir, force, keep, log, fmt, no_progress):
    """Run a leaderboard's grid (reusing finished cells), then print cirbench's numbers beside the paper's."""
    from ..devices import resolve_device
    from ..leaderboards.render import render_comparison
    from ..leaderboards.run import make_grid, preflight
    from ..leaderboards.schema import load
    from ..report.robustness import build_robustness, render_all_robustness
    from ..report.tables import build_tables, render_all
    from ..runner import Workspace, run_grid

    lb = load(name)
    roots = dict(lb.grid.get("data_root") or {})
    if data_roots:
        roots.update(parse_data_roots(data_roots, lb.real_datasets))
    grid, skipped = make_grid(lb, methods=list(methods) or None, weights=weights, backbone=backbone,
                              preprocess=parse_preprocess_option(preprocess),
                              noise_seed=parse_noise_seed_option(noise_seed), epochs=epochs, data_root=roots or None,
                              seeds=parse_ints(seeds, "--seeds") if seeds else None,
                              hparams=parse_overrides(overrides, lb.grid.get("hparams") or {}) if overrides else None)
    for m in skipped:
        click.echo(f"cirbench: method {m!r} of leaderboard {lb.name} is not installed: its rows show the paper's "
                   "numbers only", err=True)
    out = out or Path("runs") / lb.name
    ws = Workspace(cache_dir, resolve_device(device), progress=not no_progress,
                   grad_checkpointing=grad_checkpointing)
    cells = grid.cells()
    preflight(lb, grid, ws)  # missing data or weights stop here, before anything is written
    click.echo(f"cirbench leaderboard run {lb.name}: {grid.summary()} on {ws.device} -> {out}/", err=True)
    t0 = time.time()
    done = run_grid(cells, out, ws, force=force, keep=keep, log=log, report=cell_reporter(len(cells)))
    click.echo(f"finished {len(cells)} runs in {time.time() - t0:.0f}s\n", err=True)
    if lb.paper is not None:
        click.echo(render_comparison(lb, done, fmt))
    else:
        click.echo(render_all(build_tables(done), fmt))
    if len(grid.noise_rates) > 1:
        click.echo(render_all_robustness(build_robustness(done), fmt, color=color(fmt)))
