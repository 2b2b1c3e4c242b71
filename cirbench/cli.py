"""The ``cirbench`` command line."""
from __future__ import annotations

import logging
import sys
import time
from pathlib import Path
from typing import List, Optional

import click

from .errors import CirbenchError, ConfigError

log = logging.getLogger("cirbench")
FORMATS = ["terminal", "markdown", "latex", "csv"]


def _setup_logging(quiet: bool) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("cirbench: %(message)s"))
    log.handlers[:] = [handler]
    log.setLevel(logging.WARNING if quiet else logging.INFO)
    log.propagate = False
    # open_clip warns "No pretrained weights loaded" through the root logger whenever a model is
    # built before its weights are loaded; cirbench says itself when weights are random.
    logging.getLogger().setLevel(logging.ERROR)


def _floats(text: str, what: str) -> List[float]:
    try:
        return [float(x) for x in text.replace(" ", "").split(",") if x]
    except ValueError:
        raise ConfigError(f"{what} must be comma-separated numbers, got {text!r}") from None


def _ints(text: str, what: str) -> List[int]:
    try:
        return [int(x) for x in text.replace(" ", "").split(",") if x]
    except ValueError:
        raise ConfigError(f"{what} must be comma-separated integers, got {text!r}") from None


def _device(choice: str) -> str:
    import torch

    if choice == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if choice == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda asked for, but torch sees no CUDA GPU; use --device cpu or auto")
    return choice


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="cirbench")
@click.option("-q", "--quiet", is_flag=True, help="Only warnings and results.")
def cli(quiet: bool) -> None:
    """cirbench: composed image retrieval methods under one protocol, with honest label-noise tests.

    Start with `cirbench run` (an embedded benchmark, offline, on the CPU), then
    `cirbench table runs/` to rebuild the tables from the run folders.
    """
    _setup_logging(quiet)


@cli.command()
@click.option("-m", "--method", "methods", multiple=True, help="Method name or wildcard (repeatable). Default: all registered.")
@click.option("-d", "--dataset", "datasets_", multiple=True,
              help="shapes-fashioniq, shapes-cirr, fashioniq or cirr (repeatable). Default: both shapes layouts.")
@click.option("--noise-type", type=click.Choice(["mixed", "reference", "text", "target", "partial"]),
              help="How training triplets are corrupted. Default: mixed (TME thirds).")
@click.option("--noise-rates", help="Comma-separated rates in [0, 1]. Default: 0,0.2,0.5,0.8.")
@click.option("--noise-seed", type=int, help="Seed of the noise draw (separate from --seeds). Default: 0.")
@click.option("--seeds", help="Comma-separated training seeds. Default: 0.")
@click.option("--backbone", help="tiny (default), open_clip:<arch> or blip2; see `cirbench list backbones`.")
@click.option("--weights", help="Backbone weights: an open_clip pretrained tag or a local checkpoint file "
              "(blip2: a local folder in the transformers format).")
@click.option("--data-root", "data_roots", multiple=True, metavar="[NAME=]DIR",
              help="Folder of a real dataset; NAME=DIR when running fashioniq and cirr together.")
@click.option("--epochs", type=int, help="Training epochs per run. Default: 10 (2 with --quick).")
@click.option("--batch-size", type=int, help="Default: 128.")
@click.option("--set", "overrides", multiple=True, metavar="METHOD.KEY=VALUE",
              help="Override a method hyper-parameter, e.g. --set clip4cir.lr=5e-4 (repeatable).")
@click.option("--exclude-reference", is_flag=True, default=None,
              help="FashionIQ: remove the reference from the gallery (default keeps it, as CLIP4Cir/SPRC).")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True)
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("runs"), show_default=True,
              help="Where run folders go; finished cells found there are skipped.")
@click.option("--cache-dir", type=click.Path(file_okay=False, path_type=Path),
              help="Generated data, warm-started weights, features. Default: $CIRBENCH_CACHE or ~/.cache/cirbench.")
@click.option("--spec", type=click.Path(dir_okay=False, path_type=Path),
              help="YAML grid spec (same names as these options; options given here win).")
@click.option("--quick", is_flag=True, help="A one-minute smoke run: 2 epochs, noise 0 and 0.5, 1,200 triplets.")
@click.option("--force", is_flag=True, help="Start cells again whose folder holds a run with other settings.")
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="terminal", show_default=True)
@click.option("--no-progress", is_flag=True, help="No progress bars.")
def run(methods, datasets_, noise_type, noise_rates, noise_seed, seeds, backbone, weights, data_roots, epochs,
        batch_size, overrides, exclude_reference, device, out, cache_dir, spec, quick, force, fmt, no_progress):
    """Train and evaluate a grid of methods × datasets × noise rates × seeds, then print the tables.

    With no options: every registered method on both generated shapes layouts at mixed noise
    0, 0.2, 0.5 and 0.8 — offline, on the CPU, in minutes.
    """
    from .grid import QUICK, Grid, load_spec
    from .runs import Workspace, execute, read_metrics

    kw = load_spec(spec) if spec else {}
    if quick:
        kw.setdefault("epochs", QUICK["epochs"])
        kw.setdefault("noise_rates", QUICK["rates"])
        kw.setdefault("train_limit", QUICK["train_limit"])
    given = {
        "methods": list(methods) or None, "datasets": list(datasets_) or None, "noise_type": noise_type,
        "noise_rates": _floats(noise_rates, "--noise-rates") if noise_rates else None, "noise_seed": noise_seed,
        "seeds": _ints(seeds, "--seeds") if seeds else None, "backbone": backbone, "weights": weights,
        "epochs": epochs, "batch_size": batch_size, "exclude_reference": exclude_reference,
    }
    kw.update({k: v for k, v in given.items() if v is not None})
    if data_roots:
        kw["data_root"] = _data_roots(data_roots, kw.get("datasets") or [])
    if overrides:
        kw["hparams"] = _overrides(overrides, kw.get("hparams") or {})
    grid = Grid(**kw)
    cells = grid.cells()

    ws = Workspace(cache_dir, _device(device), progress=not no_progress)
    click.echo(f"cirbench run: {len(cells)} runs ({len(grid.methods)} methods × {len(grid.datasets)} datasets × "
               f"{len(grid.noise_rates)} noise rates × {len(grid.seeds)} seeds) on {ws.device} -> {out}/", err=True)
    t0 = time.time()
    done = []
    for i, cell in enumerate(cells, 1):
        t = time.time()
        metrics = execute(cell, out, ws, force=force)
        done.append({"dir": out / cell.dirname(), "config": cell.to_dict(), "metrics": metrics})
        click.echo(f"[{i}/{len(cells)}] {cell.dirname()}  {_headline(metrics)}  ({time.time() - t:.1f}s)", err=True)
    click.echo(f"finished {len(cells)} runs in {time.time() - t0:.0f}s\n", err=True)
    _print_tables(done, fmt)


def _headline(metrics: dict) -> str:
    from .evaluation import primary_value

    layout = metrics["config"]["layout"]
    name = "avg R@10" if layout == "fashioniq" else "Avg"
    return f"{name} {primary_value(layout, metrics['best']):.2f}"


def _print_tables(runs: list, fmt: str, which: str = "best", detection: bool = False) -> None:
    from .tables import COLUMNS, DETECTION_COLUMNS, build_tables, render

    extra = {layout: DETECTION_COLUMNS for layout in COLUMNS} if detection else None
    for table in build_tables(runs, which=which, extra_columns=extra).values():
        click.echo(render(table, fmt))
        click.echo()


def _data_roots(items, names) -> dict:
    out = {}
    real = [n for n in names if n in ("fashioniq", "cirr")]
    for item in items:
        name, sep, path = item.partition("=")
        if not sep:
            if len(real) != 1:
                raise ConfigError("--data-root DIR is ambiguous: write --data-root fashioniq=DIR / cirr=DIR, "
                                  "and pass -d for the real dataset(s)")
            name, path = real[0], item
        out[name] = path
    return out


def _overrides(items, base: dict) -> dict:
    out = {k: dict(v) for k, v in base.items()}
    for item in items:
        key, sep, value = item.partition("=")
        method, dot, param = key.rpartition(".")
        if not sep or not dot:
            raise ConfigError(f"--set takes METHOD.KEY=VALUE, e.g. clip4cir.lr=5e-4; got {item!r}")
        out.setdefault(method, {})[param] = value
    return out


@cli.command()
@click.argument("runs_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="terminal", show_default=True)
@click.option("--which", type=click.Choice(["best", "last"]), default="best", show_default=True,
              help="Metrics of the best epoch on validation, or of the last epoch.")
@click.option("--detection", is_flag=True,
              help="Add the noise-detection columns (AUROC, AP, precision/recall at 0.5, selected vs clean "
                   "fraction, AUROC per noise type) of methods with clean probabilities, last epoch.")
def table(runs_dir: Path, fmt: str, which: str, detection: bool):
    """Rebuild the result tables from run folders (mean ± std over seeds)."""
    from .tables import collect_runs

    runs = collect_runs(runs_dir)
    if not runs:
        raise ConfigError(f"no finished runs under {runs_dir} (each run folder holds a metrics.json)")
    _print_tables(runs, fmt, which, detection)


@cli.command("list")
@click.argument("what", type=click.Choice(["methods", "datasets", "backbones", "noise"]))
def list_(what: str):
    """List registered methods, datasets, backbones or noise types."""
    if what == "methods":
        from .registry import get_method, list_methods

        for name in list_methods():
            doc = (get_method(name).__doc__ or "").strip().splitlines()
            click.echo(f"{name:<14} {doc[0] if doc else ''}")
    elif what == "datasets":
        from .datasets import DATASETS

        for name, (layout, desc) in DATASETS.items():
            click.echo(f"{name:<18} [{layout}] {desc}")
    elif what == "backbones":
        from .backbones import list_backbones

        for name, desc in list_backbones().items():
            click.echo(f"{name:<10} {desc}")
    else:
        from .noise import NOISE_TYPES

        help_ = {"mixed": "TME protocol: chosen triplets split in thirds; shuffle references / texts / targets",
                 "reference": "shuffle reference images among the chosen triplets",
                 "text": "shuffle modification texts among the chosen triplets",
                 "target": "shuffle target images among the chosen triplets",
                 "partial": "replace one of the two captions (FashionIQ) with another triplet's"}
        for name in NOISE_TYPES:
            click.echo(f"{name:<10} {help_.get(name, '')}")


@cli.group()
def data():
    """Generate or inspect datasets."""


@data.command("synth")
@click.option("--layout", type=click.Choice(["fashioniq", "cirr"]), required=True)
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True)
@click.option("--seed", type=int, default=0, show_default=True)
def synth(layout: str, out: Path, seed: int):
    """Write the generated shapes dataset in an official layout (PNGs + JSON + metadata)."""
    from .data import shapes

    if out.exists() and any(out.iterdir()):
        raise ConfigError(f"{out} exists and is not empty; choose a new folder")
    t = time.time()
    shapes.generate(layout, out, seed=seed)
    click.echo(f"wrote the shapes dataset ({layout} layout, seed {seed}) to {out} in {time.time() - t:.1f}s")


@cli.command()
@click.option("--dataset", type=click.Choice(["fashioniq", "cirr"]), required=True, help="Annotation layout.")
@click.option("--annotations", type=click.Path(path_type=Path), required=True,
              help="Dataset folder with captions/ and image_splits/ (no images needed).")
@click.option("--rate", type=float, required=True, help="Fraction of training triplets to corrupt, in [0, 1].")
@click.option("--type", "kind", type=click.Choice(["mixed", "reference", "text", "target", "partial"]),
              default="mixed", show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), required=True)
def noise(dataset: str, annotations: Path, rate: float, kind: str, seed: int, out: Path):
    """Write a noise manifest for the training split, from annotation files alone."""
    from .noise import manifest_from_annotations, save_manifest

    manifest = manifest_from_annotations(dataset, annotations, rate, kind, seed)
    out.parent.mkdir(parents=True, exist_ok=True)
    save_manifest(manifest, out)
    click.echo(f"{manifest['n_noisy']} of {manifest['n_triplets']} training triplets corrupted "
               f"({kind}, realised rate {manifest['realised_rate']:.4f}, seed {seed}) -> {out}")


def main(argv: Optional[List[str]] = None) -> None:
    try:
        cli.main(args=argv, prog_name="cirbench", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except CirbenchError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        click.echo("\ninterrupted: finished epochs are checkpointed; run the same command again to resume.", err=True)
        sys.exit(130)


# Commands kept in modules of their own attach themselves to `cli` when imported here.
from . import cli_tools  # noqa: E402,F401  (score, submit, data check)
from . import cli_leaderboard  # noqa: E402,F401  (leaderboard, robustness, plot)
