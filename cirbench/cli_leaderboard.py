"""``cirbench leaderboard list | show | run``, ``cirbench robustness`` and ``cirbench plot``."""
from __future__ import annotations

import sys
import time
from pathlib import Path

import click

from .cli import FORMATS, _data_roots, _device, _ints, cli
from .errors import ConfigError


@cli.group()
def leaderboard():
    """Paper tables: the grid that regenerates each, and the numbers the paper reports."""


@leaderboard.command("list")
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="terminal", show_default=True)
def lb_list(fmt: str):
    """The leaderboards cirbench ships."""
    from .leaderboards import render_list

    click.echo(render_list(fmt))


@leaderboard.command("show")
@click.argument("name")
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="terminal", show_default=True)
def lb_show(name: str, fmt: str):
    """Print the paper's table exactly as reported (NAME or a leaderboard .yaml file)."""
    from .leaderboards import load, render_paper

    click.echo(render_paper(load(name), fmt))


@leaderboard.command("run")
@click.argument("name")
@click.option("--data-root", "data_roots", multiple=True, metavar="[NAME=]DIR",
              help="Folder of the real dataset the leaderboard needs (NAME=DIR for several).")
@click.option("-m", "--method", "methods", multiple=True,
              help="Run these methods instead of the leaderboard's (names or wildcards, repeatable).")
@click.option("--weights", help="Backbone weights (open_clip tag, local file, or a BLIP-2 folder); overrides the file.")
@click.option("--backbone", help="Override the leaderboard's backbone.")
@click.option("--seeds", help="Override the training seeds, e.g. 0,1,2.")
@click.option("--epochs", type=int, help="Override the epochs per run.")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True)
@click.option("--out", type=click.Path(file_okay=False, path_type=Path),
              help="Where run folders go (default runs/<NAME>); finished cells found there are reused.")
@click.option("--cache-dir", type=click.Path(file_okay=False, path_type=Path),
              help="Generated data, warm-started weights, features. Default: $CIRBENCH_CACHE or ~/.cache/cirbench.")
@click.option("--force", is_flag=True, help="Start cells again whose folder holds a run with other settings.")
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="terminal", show_default=True)
@click.option("--no-progress", is_flag=True, help="No progress bars.")
def lb_run(name, methods, data_roots, weights, backbone, seeds, epochs, device, out, cache_dir, force, fmt, no_progress):
    """Run a leaderboard's grid (reusing finished cells), then print cirbench's numbers beside the paper's."""
    from . import leaderboards as lbs
    from .robustness import build_robustness, render_all_robustness
    from .runs import Workspace
    from .tables import build_tables, render

    lb = lbs.load(name)
    roots = dict(lb.grid.get("data_root") or {})
    if data_roots:
        roots.update(_data_roots(data_roots, lb.real_datasets))
    grid, skipped = lbs.make_grid(lb, methods=list(methods) or None, weights=weights, backbone=backbone,
                                  epochs=epochs, data_root=roots or None,
                                  seeds=_ints(seeds, "--seeds") if seeds else None)
    for m in skipped:
        click.echo(f"cirbench: method {m!r} of leaderboard {lb.name} is not installed: its rows show the paper's "
                   "numbers only", err=True)
    out = out or Path("runs") / lb.name
    ws = Workspace(cache_dir, _device(device), progress=not no_progress)
    n = len(grid.cells())
    lbs.preflight(lb, grid, ws)  # missing data or weights stop here, before anything is written
    click.echo(f"cirbench leaderboard run {lb.name}: {n} runs ({len(grid.methods)} methods × {len(grid.datasets)} "
               f"datasets × {len(grid.noise_rates)} noise rates × {len(grid.seeds)} seeds) on {ws.device} -> {out}/",
               err=True)
    t0 = time.time()
    done = lbs.run(lb, grid, out, ws, force=force, echo=lambda s: click.echo(s, err=True), checked=True)
    click.echo(f"finished {n} runs in {time.time() - t0:.0f}s\n", err=True)
    if lb.paper is not None:
        click.echo(lbs.render_comparison(lb, done, fmt))
    else:
        for table in build_tables(done).values():
            click.echo(render(table, fmt))
    if len(grid.noise_rates) > 1:
        click.echo(render_all_robustness(build_robustness(done), fmt, color=_color(fmt)))


def _color(fmt: str) -> bool:
    return fmt == "terminal" and sys.stdout.isatty()


@cli.command()
@click.argument("runs_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="terminal", show_default=True)
@click.option("--which", type=click.Choice(["best", "last"]), default="best", show_default=True)
def robustness(runs_dir: Path, fmt: str, which: str):
    """Noise-robustness table: methods × noise rates, mean ± std of FashionIQ avg R@10 / CIRR Avg."""
    from .robustness import build_robustness, render_all_robustness
    from .tables import collect_runs

    runs = collect_runs(runs_dir)
    if not runs:
        raise ConfigError(f"no finished runs under {runs_dir} (each run folder holds a metrics.json)")
    click.echo(render_all_robustness(build_robustness(runs, which), fmt, color=_color(fmt)))


@cli.command()
@click.argument("runs_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="Image file to write (.png, .pdf or .svg).")
@click.option("--which", type=click.Choice(["best", "last"]), default="best", show_default=True)
@click.option("--dpi", type=int, default=150, show_default=True)
def plot(runs_dir: Path, out: Path, which: str, dpi: int):
    """Plot Recall vs noise rate per method (error bars over seeds), one panel per dataset layout."""
    from .plots import plot_runs
    from .tables import collect_runs

    if out.suffix.lower() not in (".png", ".pdf", ".svg"):
        raise ConfigError(f"--out {out}: use a .png, .pdf or .svg file name")
    runs = collect_runs(runs_dir)
    if not runs:
        raise ConfigError(f"no finished runs under {runs_dir} (each run folder holds a metrics.json)")
    click.echo(f"wrote {plot_runs(runs, out, which, dpi)}")
