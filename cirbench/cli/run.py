"""``cirbench run``: train and evaluate a grid, then print its tables."""
from __future__ import annotations

import time
from pathlib import Path

import click

from .options import (
    cache_dir_option,
    cell_reporter,
    data_root_option,
    device_option,
    force_option,
    format_option,
    grad_checkpointing_option,
    keep_option,
    log_option,
    no_progress_option,
    noise_seed_option,
    noise_type_option,
    parse_data_roots,
    parse_floats,
    parse_ints,
    parse_noise_seed_option,
    parse_overrides,
    parse_preprocess_option,
    preprocess_option,
    set_option,
)


@click.command()
@click.option("-m", "--method", "methods", multiple=True, help="Method name or wildcard (repeatable). Default: all registered.")
@click.option("-d", "--dataset", "datasets_", multiple=True,
              help="shapes-fashioniq, shapes-cirr, fashioniq or cirr (repeatable). Default: both shapes layouts.")
@noise_type_option(help="How training triplets are corrupted. Default: mixed (TME thirds).")
@click.option("--noise-rates", help="Comma-separated rates in [0, 1]. Default: 0,0.2,0.5,0.8.")
@noise_seed_option()
@click.option("--seeds", help="Comma-separated training seeds. Default: 0.")
@click.option("--backbone", help="tiny (default), open_clip:<arch> or blip2; see `cirbench list backbones`.")
@click.option("--weights", help="Backbone weights: an open_clip pretrained tag or a local checkpoint file "
              "(blip2: a local folder in the transformers format).")
@preprocess_option()
@data_root_option
@click.option("--epochs", type=int, help="Training epochs per run. Default: 10 (2 with --quick).")
@click.option("--batch-size", type=int, help="Default: 128.")
@set_option
@click.option("--exclude-reference", is_flag=True, default=None,
              help="FashionIQ: remove the reference from the gallery (default keeps it, as CLIP4Cir/SPRC).")
@device_option
@grad_checkpointing_option
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("runs"), show_default=True,
              help="Where run folders go; finished cells found there are skipped.")
@cache_dir_option
@click.option("--spec", type=click.Path(dir_okay=False, path_type=Path),
              help="YAML grid spec (same names as these options; options given here win).")
@click.option("--quick", is_flag=True, help="A one-minute smoke run: 2 epochs, noise 0 and 0.5, 1,200 triplets.")
@force_option
@keep_option
@log_option
@format_option()
@no_progress_option
def run(methods, datasets_, noise_type, noise_rates, noise_seed, seeds, backbone, weights, preprocess, data_roots,
        epochs, batch_size, overrides, exclude_reference, device, grad_checkpointing, out, cache_dir, spec, quick,
        force, keep, log, fmt, no_progress):
    """Train and evaluate a grid of methods × datasets × noise rates × seeds, then print the tables.

    With no options: every registered method on both generated shapes layouts at mixed noise
    0, 0.2, 0.5 and 0.8 — offline, on the CPU, in minutes.
    """
    from ..devices import resolve_device
    from ..grid import QUICK, Grid, load_spec
    from ..report.tables import build_tables, render_all
    from ..runner import Workspace, run_grid

    kw = load_spec(spec) if spec else {}
    if quick:
        kw.setdefault("epochs", QUICK["epochs"])
        kw.setdefault("noise_rates", QUICK["rates"])
        kw.setdefault("train_limit", QUICK["train_limit"])
    given = {
        "methods": list(methods) or None, "datasets": list(datasets_) or None, "noise_type": noise_type,
        "noise_rates": parse_floats(noise_rates, "--noise-rates") if noise_rates else None,
        "noise_seed": parse_noise_seed_option(noise_seed),
        "seeds": parse_ints(seeds, "--seeds") if seeds else None, "backbone": backbone, "weights": weights,
        "preprocess": parse_preprocess_option(preprocess),
        "epochs": epochs, "batch_size": batch_size, "exclude_reference": exclude_reference,
    }
    kw.update({k: v for k, v in given.items() if v is not None})
    if data_roots:
        kw["data_root"] = parse_data_roots(data_roots, kw.get("datasets") or [])
    if overrides:
        kw["hparams"] = parse_overrides(overrides, kw.get("hparams") or {})
    grid = Grid(**kw)
    cells = grid.cells()

    ws = Workspace(cache_dir, resolve_device(device), progress=not no_progress,
                   grad_checkpointing=grad_checkpointing)
    click.echo(f"cirbench run: {grid.summary()} on {ws.device} -> {out}/", err=True)

    t0 = time.time()
    done = run_grid(cells, out, ws, force=force, keep=keep, log=log, report=cell_reporter(len(cells)))
    click.echo(f"finished {len(cells)} runs in {time.time() - t0:.0f}s\n", err=True)
    click.echo(render_all(build_tables(done), fmt))
