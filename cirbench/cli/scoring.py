"""Scoring and submitting: ``cirbench score`` and ``cirbench submit cirr``."""
from __future__ import annotations

import json
from pathlib import Path

import click

from ..report.tables import FORMATS
from .options import cache_dir_option, device_option, format_option


def _categories(values) -> list:
    return [c for v in values for c in v.replace(" ", "").split(",") if c]


@click.command()
@click.option("--dataset", type=click.Choice(["fashioniq", "cirr"]), required=True, help="Annotation layout.")
@click.option("--annotations", type=click.Path(path_type=Path), required=True,
              help="Dataset folder with captions/ and image_splits/ (no images needed).")
@click.option("--split", default="val", show_default=True, help="Split the predictions rank.")
@click.option("--predictions", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help='FashionIQ: {"<category>/<index>": [ids]}; CIRR: the official {"version": "rc2", '
                   '"metric": "recall", "<pairid>": [names]}.')
@click.option("--subset-predictions", type=click.Path(dir_okay=False, path_type=Path),
              help="CIRR: the recall_subset file; without it Rsubset@K and Avg are n/a (null in --json).")
@click.option("--categories", multiple=True, metavar="CAT[,CAT]",
              help="FashionIQ: score only these categories (default: all three).")
@click.option("--exclude-reference", is_flag=True,
              help="FashionIQ: drop each query's reference from its ranking first (CIRR always does).")
@click.option("--allow-missing", is_flag=True,
              help="Score only the queries the file ranks (e.g. a run that skipped queries with missing images).")
@click.option("--json", "as_json", is_flag=True, help="Print the metrics object alone, as JSON.")
@format_option(FORMATS[:2])
def score(dataset, annotations, split, predictions, subset_predictions, categories, exclude_reference,
          allow_missing, as_json, fmt):
    """Score a prediction file against annotation files with the FashionIQ / CIRR protocol."""
    from tabulate import tabulate

    from ..eval.predictions import score_file
    from ..report.tables import COLUMNS

    result = score_file(dataset, annotations, split, predictions, subset_predictions,
                        _categories(categories) or None, exclude_reference, allow_missing)
    for note in result.notes:  # stderr, so that --json output stays the metrics alone
        click.echo(f"note: {note}", err=True)
    if as_json:
        click.echo(json.dumps(result.metrics, indent=1))
        return
    columns = [c for c in COLUMNS[dataset] if c.path[0] in result.metrics]
    row = []
    for c in columns:
        value = result.metrics
        for key in c.path:
            value = value[key]
        row.append("n/a" if value is None else f"{value:.2f}")
    protocol = ("reference dropped" if dataset == "cirr" or exclude_reference else "reference kept")
    click.echo(f"{predictions.name}: {dataset} {split}, {result.n_queries} queries, {protocol}")
    style = "simple_outline" if fmt == "terminal" else "github"
    click.echo(tabulate([row], [c.header for c in columns], tablefmt=style, disable_numparse=True,
                        colalign=("right",) * len(columns)))


@click.group()
def submit():
    """Write test-server submission files from a trained run."""


@submit.command("cirr")
@click.option("--run", "run_dir", type=click.Path(exists=True, file_okay=False, path_type=Path), required=True,
              help="A finished CIRR run folder (holds config.json and best_model.pt).")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Folder for test1_pred_ranks_recall.json and test1_pred_ranks_recall_subset.json.")
@device_option
@cache_dir_option
def submit_cirr_cmd(run_dir: Path, out: Path, device: str, cache_dir):
    """Rank CIRR test1 with a run's best model; write and check the two server files."""
    from ..devices import resolve_device
    from ..eval.submit import submit_cirr
    from ..runner import Workspace

    written = submit_cirr(run_dir, out, Workspace(cache_dir, resolve_device(device), progress=False))
    for metric, path in written.items():
        click.echo(f"{metric:<14} {path}  ({path.stat().st_size:,} bytes)")
    click.echo("both files match the official demo files' structure; upload them to the CIRR test server")
