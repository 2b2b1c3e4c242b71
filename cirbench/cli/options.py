"""Options and argument parsers that several commands share, each declared once."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Dict, List, Sequence

import click

from ..data.noise import NOISE_TYPES
from ..devices import DEVICE_CHOICES
from ..errors import ConfigError
from ..report.tables import FORMATS
from ..report.tensorboard import LOGS
from ..runs import KEEP_CHOICES


def format_option(choices: Sequence[str] = FORMATS):
    """``--format``: how tables are printed."""
    return click.option("--format", "fmt", type=click.Choice(list(choices)), default="terminal", show_default=True)


def noise_type_option(flag: str = "--noise-type", default=None,
                      help: str = "How training triplets are corrupted (`cirbench list noise`)."):
    """A choice among the noise types; the value reaches the command as ``noise_type``."""
    return click.option(flag, "noise_type", type=click.Choice(list(NOISE_TYPES)), default=default,
                        show_default=default is not None, help=help)


device_option = click.option("--device", type=click.Choice(list(DEVICE_CHOICES)), default="auto", show_default=True)
cache_dir_option = click.option(
    "--cache-dir", type=click.Path(file_okay=False, path_type=Path),
    help="Generated data, warm-started weights, features. Default: $CIRBENCH_CACHE or ~/.cache/cirbench.")
data_root_option = click.option(
    "--data-root", "data_roots", multiple=True, metavar="[NAME=]DIR",
    help="Folder of a real dataset; NAME=DIR (fashioniq=DIR, cirr=DIR) when several are run.")
force_option = click.option("--force", is_flag=True,
                            help="Start cells again whose folder holds a run with other settings, or files it cannot "
                                 "continue from (a truncated config or checkpoint).")
no_progress_option = click.option("--no-progress", is_flag=True, help="No progress bars.")
log_option = click.option(
    "--log", type=click.Choice(LOGS), default=LOGS[0], show_default=True,
    help="Also write each cell's per-epoch history as TensorBoard scalars under OUT/tensorboard/<cell folder> "
         "(needs pip install 'cirbench[tensorboard]').")
keep_option = click.option(
    "--keep", type=click.Choice(KEEP_CHOICES), default=KEEP_CHOICES[0], show_default=True,
    help="What a finished cell keeps of its weights: checkpoint.pt and best_model.pt, the best model alone (what "
         "`cirbench submit` needs), or neither (metrics, history and predictions always stay).")
grad_checkpointing_option = click.option(
    "--grad-checkpointing", is_flag=True,
    help="Fine-tuned towers recompute activations in the backward pass: less GPU memory, more compute.")
set_option = click.option("--set", "overrides", multiple=True, metavar="METHOD.KEY=VALUE",
                          help="Override a method hyper-parameter, e.g. --set clip4cir.lr=5e-4 (repeatable).")


def _option_with_default_note(flag: str, metavar: str, text: str, default_note: str):
    """An option factory whose help ends with a note on the default that each command words itself."""
    def make(default: str = default_note):
        return click.option(flag, metavar=metavar, help=f"{text} {default}")
    return make


#: ``--preprocess clip|targetpad[:RATIO]``; the value reaches the command as ``preprocess``
preprocess_option = _option_with_default_note(
    "--preprocess", "clip|targetpad[:RATIO]",
    "Image preprocessing: clip (the backbone's own transform) or targetpad[:RATIO], CLIP4Cir's TargetPad (pad images "
    "whose aspect ratio exceeds RATIO, default 1.25, then resize and centre-crop), as CLIP4Cir, SPRC, SPN and HABIT "
    "preprocess.", "Default: clip.")
#: ``--noise-seed INT|same``; the value reaches the command as ``noise_seed``
noise_seed_option = _option_with_default_note(
    "--noise-seed", "INT|same",
    "Seed of the noise draw: an integer (one noisy training set for every training seed) or 'same' (each cell's "
    "training seed, as TME and HABIT draw it, so the spread over seeds includes the draw).", "Default: 0.")


which_option = click.option("--which", type=click.Choice(["best", "last"]), default="best", show_default=True,
                            help="Metrics of the best epoch on validation, or of the last epoch.")
runs_dir_argument = click.argument("runs_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))


def parse_floats(text: str, what: str) -> List[float]:
    """``"0,0.2, 0.5"`` -> [0.0, 0.2, 0.5]; ``what`` names the option in the error."""
    try:
        values = [float(x) for x in text.replace(" ", "").split(",") if x]
    except ValueError:
        values = []
    if not values:
        raise ConfigError(f"{what} must be comma-separated numbers, got {text!r}")
    return values


def parse_ints(text: str, what: str) -> List[int]:
    """``"0,1,2"`` -> [0, 1, 2]; ``what`` names the option in the error."""
    try:
        values = [int(x) for x in text.replace(" ", "").split(",") if x]
    except ValueError:
        values = []
    if not values:
        raise ConfigError(f"{what} must be comma-separated integers, got {text!r}")
    return values


def parse_preprocess_option(text):
    """``--preprocess`` as its canonical value (``targetpad`` -> ``targetpad:1.25``), None when not given."""
    from ..runs import parse_preprocess

    return None if text is None else parse_preprocess(text, "--preprocess")


def parse_noise_seed_option(text):
    """``--noise-seed`` as an int or ``"same"``, None when not given."""
    from ..runs import parse_noise_seed

    return None if text is None else parse_noise_seed(text, "--noise-seed")


def parse_overrides(items: Sequence[str], base: Dict[str, dict]) -> Dict[str, dict]:
    """``--set METHOD.KEY=VALUE`` items over ``base`` hyper-parameters: {method: {key: value}}."""
    out = {k: dict(v) for k, v in base.items()}
    for item in items:
        key, sep, value = item.partition("=")
        method, dot, param = key.rpartition(".")
        if not sep or not dot:
            raise ConfigError(f"--set takes METHOD.KEY=VALUE, e.g. clip4cir.lr=5e-4; got {item!r}")
        out.setdefault(method, {})[param] = value
    return out


def parse_data_roots(items: Sequence[str], names: Sequence[str]) -> Dict[str, str]:
    """``--data-root`` values as {dataset: folder}; a bare DIR needs exactly one real dataset in ``names``."""
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


def read_runs_or_fail(runs_dir: Path):
    """The finished runs under ``runs_dir``; a clear error when there are none."""
    from ..runs import read_runs

    runs = read_runs(runs_dir)
    if not runs:
        note_left_out(runs)
        raise ConfigError(f"no finished runs under {runs_dir} (each run folder holds a metrics.json); point at "
                          "the --out folder of `cirbench run` (default runs/)")
    return runs


def note_left_out(runs, most: int = 10) -> None:
    """Under a report: the run folders it left out, those whose files cannot be read (and why) and those
    not finished (still running, failed or interrupted), the first ``most`` of each by name."""
    unfinished = runs.unfinished
    for folder, why in list(runs.unreadable.items())[:most]:
        click.echo(f"left out (unreadable): {folder}: {why}; run its command again with --force to redo it",
                   err=True)
    for folder in unfinished[:most]:
        click.echo(f"left out (not finished: running, failed or interrupted): {folder}; run its command again "
                   "to finish it", err=True)
    more = max(0, len(runs.unreadable) - most) + max(0, len(unfinished) - most)
    if more:
        click.echo(f"left out: {more} more run folder(s)", err=True)


def cell_reporter(total: int):
    """``report(i, cell, metrics, seconds)`` for ``run_grid``: one line per finished cell on stderr, with the
    layout's headline metric (FashionIQ avg R@10, CIRR Avg) of its best epoch."""
    from ..eval.evaluation import primary_value

    def report(i, cell, metrics, seconds):
        layout = metrics["config"]["layout"]
        headline = f"{'avg R@10' if layout == 'fashioniq' else 'Avg'} {primary_value(layout, metrics['best']):.2f}"
        click.echo(f"[{i}/{total}] {cell.dirname()}  {headline}  ({seconds:.1f}s)", err=True)
    return report


def color(fmt: str) -> bool:
    """Whether to mark best / second with ANSI codes: terminal format on a terminal."""
    return fmt == "terminal" and sys.stdout.isatty()
