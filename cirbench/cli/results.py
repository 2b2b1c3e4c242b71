"""Commands over finished run folders: ``cirbench table``, ``results``, ``robustness``, ``plot``."""
from __future__ import annotations

import json
from pathlib import Path

import click

from ..errors import ConfigError
from .options import (
    color,
    format_option,
    note_left_out,
    read_runs_or_fail,
    runs_dir_argument,
    which_option,
)


@click.command()
@runs_dir_argument
@format_option()
@which_option
@click.option("--detection", is_flag=True,
              help="Add the noise-detection columns (AUROC, AP, precision/recall at 0.5, selected vs clean "
                   "fraction, AUROC per noise type) of methods with clean probabilities, last epoch.")
def table(runs_dir: Path, fmt: str, which: str, detection: bool):
    """Rebuild the result tables from run folders (mean ± std over seeds)."""
    from ..report.tables import COLUMNS, DETECTION_COLUMNS, build_tables, render_all

    extra = {layout: DETECTION_COLUMNS for layout in COLUMNS} if detection else None
    runs = read_runs_or_fail(runs_dir)
    click.echo(render_all(build_tables(runs, which=which, extra_columns=extra), fmt))
    note_left_out(runs)


@click.command()
@runs_dir_argument
@format_option()
@which_option
def robustness(runs_dir: Path, fmt: str, which: str):
    """Noise-robustness table: methods × noise rates, mean ± std of FashionIQ avg R@10 / CIRR Avg."""
    from ..report.robustness import build_robustness, render_all_robustness

    runs = read_runs_or_fail(runs_dir)
    click.echo(render_all_robustness(build_robustness(runs, which), fmt, color=color(fmt)))
    note_left_out(runs)


@click.command()
@runs_dir_argument
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="Image file to write (.png, .pdf or .svg).")
@which_option
@click.option("--dpi", type=int, default=150, show_default=True)
def plot(runs_dir: Path, out: Path, which: str, dpi: int):
    """Plot Recall vs noise rate per method (error bars over seeds), one panel per dataset layout."""
    from ..report.plots import plot_runs

    if out.suffix.lower() not in (".png", ".pdf", ".svg"):
        raise ConfigError(f"--out {out}: use a .png, .pdf or .svg file name")
    runs = read_runs_or_fail(runs_dir)
    click.echo(f"wrote {plot_runs(runs, out, which, dpi)}")
    note_left_out(runs)


@click.command()
@runs_dir_argument
@click.option("--json", "as_json", is_flag=True,
              help="One JSON document of every finished run: its folder, config.json and metrics.json (with "
                   "provenance), plus the folders left out and why.")
def results(runs_dir: Path, as_json: bool):
    """List the finished runs under RUNS_DIR (one line each), or write them all as one JSON document."""
    from ..eval.evaluation import primary_value
    from ..version import __version__

    runs = read_runs_or_fail(runs_dir)
    if as_json:
        click.echo(json.dumps({
            "cirbench": __version__, "runs_dir": str(runs_dir),
            "runs": [{"dir": str(r.dir.relative_to(runs_dir)), "config": r.config, "metrics": r.metrics} for r in runs],
            "left_out": {**{str(d.relative_to(runs_dir)): why for d, why in runs.unreadable.items()},
                         **{str(d.relative_to(runs_dir)): "not finished" for d in runs.unfinished}},
        }, indent=1))
        return
    for r in runs:
        try:
            value = primary_value(r.layout, r.metrics["best"])
        except (KeyError, TypeError):  # a run of another layout, or without best metrics
            value = None
        of = f" of {r.metrics['epochs_run']}" if "epochs_run" in r.metrics else ""
        click.echo(f"{r.dir.relative_to(runs_dir)}  best {'-' if value is None else f'{value:.2f}'}"
                   f"  (epoch {r.metrics.get('best_epoch', '?')}{of})")
    note_left_out(runs)
