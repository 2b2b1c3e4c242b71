"""Runs: one folder per cell of the grid (method × dataset × noise × seed).

A run folder (:class:`RunDir`) holds ``config.json`` (the resolved cell), ``noise_manifest.json``,
``history.jsonl`` (one line per epoch), ``checkpoint.pt`` (to resume), ``best_model.pt`` (the
method's weights at the best validation epoch), ``predictions/`` (val rankings of the best epoch,
in the formats ``cirbench score`` reads) and, once the run has finished, ``metrics.json`` (best
and last metrics, the evaluation protocol, provenance). A cell whose ``metrics.json`` says finished
is skipped when the grid runs again; a cell with a checkpoint continues where it stopped.

:class:`RunSpec` is a cell and its ``config.json``, :class:`RunDir` a run folder's files, and
:func:`read_runs` the one reader of finished runs (:class:`RunRecord`), which every report uses.
This module stays light (no torch), so that ``cirbench table`` starts at once; what trains a cell
is :mod:`cirbench.runner`.

Two settings of a cell are written into ``config.json`` only when they differ from their default,
so that every run folder written before they existed (and every run with the defaults) keeps
the ``config.json`` it has and is reused, not refused as "other settings":

* ``preprocess`` (:func:`parse_preprocess`): ``clip``, the backbone's own transform (default, the
  key is left out), or ``targetpad:RATIO`` (CLIP4Cir's TargetPad, :mod:`cirbench.backbones.preprocess`).
* ``noise.same_as_training_seed: true`` when the grid asked for ``--noise-seed same``
  (:data:`NOISE_SEED_SAME`): ``noise.seed`` then holds the resolved seed (= the cell's training
  seed) and the folder is ``<type>-<rate>-ns-same/seed<N>``, apart from the folders of a fixed
  noise seed (``ns<N>``), so that tables can say which was used.
"""
from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Dict, Optional, Sequence, Union

from .data import datasets
from .errors import ConfigError, DataError
from .files import atomic_write, load_torch, read_json, remove_stale_temporaries, write_json

if TYPE_CHECKING:  # pragma: no cover
    from .eval.evaluation import EvalResult

#: The default preprocessing: the backbone's own transform (open_clip's CLIP transform; BLIP-2's processor).
DEFAULT_PREPROCESS = "clip"
#: CLIP4Cir's (and SPRC's, SPN's, HABIT's) TargetPad target ratio: ``targetpad`` alone means this.
TARGETPAD_RATIO = 1.25
#: What a finished run keeps of its weights (``--keep``, :meth:`RunDir.prune`).
KEEP_CHOICES = ("checkpoints", "best", "none")
#: ``--noise-seed same``: each cell's noise is drawn with its training seed (as TME and HABIT do).
NOISE_SEED_SAME = "same"
_PREPROCESS_HELP = "clip (the backbone's own transform) or targetpad[:RATIO] (RATIO >= 1, default 1.25)"


def parse_preprocess(value: Any, what: str = "--preprocess") -> str:
    """A preprocessing choice in canonical form: ``"clip"`` or ``"targetpad:RATIO"`` (``"targetpad"``
    and ``"targetpad:1.250"`` both give ``"targetpad:1.25"``); ConfigError naming ``what`` otherwise."""
    text = str(value).strip().lower() if isinstance(value, str) else None
    if text == DEFAULT_PREPROCESS:
        return text
    name, sep, arg = (text or "").partition(":")
    if name == "targetpad":
        try:
            ratio = float(arg) if sep else TARGETPAD_RATIO
        except ValueError:
            ratio = math.nan
        if math.isfinite(ratio) and ratio >= 1:
            short = f"{ratio:g}"
            return f"targetpad:{short if float(short) == ratio else repr(ratio)}"
    raise ConfigError(f"{what} must be {_PREPROCESS_HELP}, got {value!r}")


def targetpad_ratio(preprocess: str) -> Optional[float]:
    """The target ratio of a canonical ``targetpad:RATIO`` choice; None for ``clip``."""
    name, _, arg = preprocess.partition(":")
    return float(arg) if name == "targetpad" else None


def parse_noise_seed(value: Any, what: str = "--noise-seed") -> Union[int, str]:
    """A noise seed: a non-negative integer (``"3"`` from the command line too) or ``"same"``
    (:data:`NOISE_SEED_SAME`: the cell's training seed); ConfigError naming ``what`` otherwise."""
    if isinstance(value, str):
        text = value.strip().lower()
        if text == NOISE_SEED_SAME:
            return NOISE_SEED_SAME
        if text.isdigit():
            return int(text)
    elif isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    raise ConfigError(f"{what} must be a non-negative integer or 'same' (noise seed = training seed), "
                      f"got {value!r}")


@dataclass
class RunSpec:
    """One cell of the grid, fully resolved."""

    method: str
    dataset: str
    noise_type: str = "mixed"
    noise_rate: float = 0.0
    noise_seed: int = 0
    seed: int = 0
    backbone: str = "tiny"
    weights: Optional[str] = None
    epochs: int = 10
    batch_size: int = 128
    hparams: Dict[str, Any] = field(default_factory=dict)
    data_root: Optional[str] = None
    exclude_reference: bool = False
    train_limit: Optional[int] = None
    #: ``clip`` or ``targetpad:RATIO`` (canonical, :func:`parse_preprocess`); in config.json when not clip
    preprocess: str = DEFAULT_PREPROCESS
    #: whether ``noise_seed`` was resolved from ``--noise-seed same`` (then it equals ``seed``)
    noise_seed_same: bool = False

    def dirname(self) -> str:
        ns = "ns-same" if self.noise_seed_same else f"ns{self.noise_seed}"
        noise = "clean" if self.noise_rate == 0 else f"{self.noise_type}-{self.noise_rate:g}-{ns}"
        return f"{self.dataset}/{self.method.replace(':', '+')}/{noise}/seed{self.seed}"

    def to_config(self) -> dict:
        """The resolved config as stored in ``config.json`` (noise nested, layout added; ``preprocess``
        and ``noise.same_as_training_seed`` only when they are not the default, see the module docstring)."""
        d = dataclasses.asdict(self)
        noise = {"type": d.pop("noise_type"), "rate": d.pop("noise_rate"), "seed": d.pop("noise_seed")}
        if d.pop("noise_seed_same"):
            noise["same_as_training_seed"] = True
        if d["preprocess"] == DEFAULT_PREPROCESS:
            del d["preprocess"]
        return {"method": d.pop("method"), "dataset": d.pop("dataset"), "layout": datasets.layout_of(self.dataset),
                "noise": noise, **d}

    @classmethod
    def from_config(cls, config: dict) -> "RunSpec":
        """The spec a ``config.json`` was written from (the inverse of :meth:`to_config`)."""
        d = dict(config)
        d.pop("layout", None)
        noise = d.pop("noise", {}) or {}
        d.update({"noise_type": noise.get("type", "mixed"), "noise_rate": noise.get("rate", 0.0),
                  "noise_seed": noise.get("seed", 0),
                  "noise_seed_same": bool(noise.get("same_as_training_seed", False))})
        unknown = sorted(set(d) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            raise DataError(f"config.json has settings this cirbench does not know: {', '.join(unknown)} "
                            "(made by another version?)")
        return cls(**d)


@dataclass
class RunRecord:
    """A finished run as the tables read it: its folder, ``config.json`` and ``metrics.json``."""

    dir: Path
    config: dict
    metrics: dict

    @property
    def method(self) -> str:
        return str(self.config.get("method", "?"))

    @property
    def dataset(self) -> str:
        return str(self.config.get("dataset", "?"))

    @property
    def layout(self) -> Optional[str]:
        return self.config.get("layout") or (self.metrics.get("protocol") or {}).get("dataset_layout")

    @property
    def seed(self) -> Any:
        return self.config.get("seed")

    @property
    def noise(self) -> dict:
        """``{"type", "rate", "seed"}`` as configured (empty for runs written without noise settings)."""
        return self.config.get("noise") or {}

    @property
    def noise_seed_same(self) -> bool:
        """Whether the noise was drawn with the training seed (``--noise-seed same``)."""
        return bool(self.noise.get("same_as_training_seed"))

    @property
    def preprocess(self) -> str:
        """``clip`` (the default, also every run written before the setting existed) or ``targetpad:RATIO``."""
        return str(self.config.get("preprocess") or DEFAULT_PREPROCESS)

    @property
    def backbone(self) -> str:
        """The backbone, with its weights when they were named: ``tiny (random)``."""
        name = str(self.config.get("backbone", "?"))
        return f"{name} ({self.config['weights']})" if self.config.get("weights") else name


class RunRecords(list):
    """The finished runs under a folder (a list of :class:`RunRecord`) plus ``skipped``: run folders
    left out because they are unfinished or unreadable, and ``unreadable``: those of them whose
    ``config.json`` or ``metrics.json`` cannot be read (folder -> why), which reports list."""

    def __init__(self, runs: Sequence[RunRecord] = (), skipped: Sequence[Path] = (),
                 unreadable: Optional[Dict[Path, str]] = None):
        super().__init__(runs)
        self.skipped = list(skipped)
        self.unreadable = dict(unreadable or {})

    @property
    def unfinished(self) -> list:
        """The skipped folders that are readable: runs still running, failed or interrupted."""
        return [d for d in self.skipped if d not in self.unreadable]


class RunDir:
    """A run's folder: where each of its files lives, and reading and writing them (atomically)."""

    def __init__(self, path):
        self.path = Path(path)

    config_file = property(lambda self: self.path / "config.json")
    manifest_file = property(lambda self: self.path / "noise_manifest.json")
    history_file = property(lambda self: self.path / "history.jsonl")
    checkpoint_file = property(lambda self: self.path / "checkpoint.pt")
    best_model_file = property(lambda self: self.path / "best_model.pt")
    predictions_dir = property(lambda self: self.path / "predictions")
    metrics_file = property(lambda self: self.path / "metrics.json")

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    # -- reading --------------------------------------------------------------------------------
    def read_metrics(self) -> Optional[dict]:
        """``metrics.json``, or None when it is missing or unreadable."""
        try:
            return json.loads(self.metrics_file.read_text())
        except (OSError, ValueError):
            return None

    @property
    def finished(self) -> bool:
        m = self.read_metrics()
        return bool(m) and m.get("status") == "finished"

    def read_spec(self) -> RunSpec:
        """The cell this folder was written for; DataError when it is not a run folder."""
        if not self.config_file.is_file():
            raise DataError(f"{self.path} is not a run folder: no config.json (pass a folder such as "
                            "runs/shapes-cirr/clip4cir/clean/seed0)")
        return RunSpec.from_config(read_json(self.config_file, "run config", DataError))

    def unreadable(self) -> Optional[str]:
        """Why this folder's ``config.json`` or ``metrics.json`` cannot be read (None when both can, or
        are missing: a run not started or not finished is not unreadable)."""
        for f in (self.config_file, self.metrics_file):
            try:
                if f.exists() and not isinstance(json.loads(f.read_text()), dict):
                    return f"{f.name} is not a JSON object"
            except OSError as exc:
                return f"{f.name}: {exc.strerror}"
            except ValueError:
                return f"{f.name} is not valid JSON (truncated?)"
        return None

    def record(self) -> Optional[RunRecord]:
        """The finished run in this folder, or None (unfinished, or its files unreadable)."""
        metrics = self.read_metrics()
        try:
            config = json.loads(self.config_file.read_text())
        except (OSError, ValueError):
            return None
        if not metrics or metrics.get("status") != "finished":
            return None
        return RunRecord(self.path, config, metrics)

    # -- writing --------------------------------------------------------------------------------
    def trained(self) -> bool:
        """Whether anything was trained here (a checkpoint, a history or metrics), beyond a config."""
        return any(f.exists() for f in (self.checkpoint_file, self.history_file, self.metrics_file))

    def start(self, spec: RunSpec, force: bool = False, validate: Callable[[], None] = lambda: None
              ) -> Optional[dict]:
        """Claim the folder for ``spec``: the finished run's metrics if it is done already, else None
        after ``validate()`` (everything the cell needs, checked before the first byte is written) and
        writing ``config.json``. A folder holding a run with other settings is refused unless ``force``,
        which clears its results and checkpoint (as it does an unreadable checkpoint); one that holds
        only a config (nothing trained, e.g. an earlier command that failed) is taken over."""
        config = spec.to_config()
        for folder in (self.path, self.predictions_dir):  # of a run killed while writing
            remove_stale_temporaries(folder)
        if self.config_file.exists():
            try:
                old = json.loads(self.config_file.read_text())
            except (OSError, ValueError):
                if self.trained() and not force:
                    raise ConfigError(f"{self.config_file} is unreadable (truncated?) and the folder holds a "
                                      "started run; pass --force to start it again") from None
                old = {}
            if old != config and not self.trained():
                old = config  # nothing was trained under the old settings: the folder is free
            if old != config:
                if not force:
                    diff = ", ".join(f"{k}: {old.get(k)!r} -> {config.get(k)!r}"
                                     for k in dict.fromkeys([*config, *old]) if old.get(k) != config.get(k))
                    raise ConfigError(f"{self.path} holds a run with other settings ({diff}); choose another "
                                      "--out, or pass --force to start it again")
                for stale in (self.metrics_file, self.checkpoint_file, self.history_file):
                    stale.unlink(missing_ok=True)
        if self.finished:
            return self.read_metrics()
        if force and self.checkpoint_file.exists() and not self.checkpoint_readable():
            for stale in (self.checkpoint_file, self.history_file):
                stale.unlink(missing_ok=True)
        validate()
        write_json(self.config_file, config)
        return None

    def checkpoint_readable(self) -> bool:
        try:
            load_torch(self.checkpoint_file, "checkpoint", "cpu")
        except DataError:
            return False
        return True

    def prune(self, keep: str) -> None:
        """After the run finished: keep its ``checkpoint.pt`` and ``best_model.pt`` (``keep="checkpoints"``),
        the best model alone (``"best"``: what ``cirbench submit`` and re-ranking need) or neither
        (``"none"``: metrics, history and predictions stay)."""
        check_keep(keep)
        drop = {"checkpoints": (), "best": (self.checkpoint_file,),
                "none": (self.checkpoint_file, self.best_model_file)}[keep]
        for f in drop:
            f.unlink(missing_ok=True)

    def append_history(self, row: dict) -> int:
        """One more line of ``history.jsonl`` (the file rewritten atomically: a full disk or a kill
        never leaves half a line); returns how many lines it holds now."""
        old = self.history_file.read_text() if self.history_file.exists() else ""
        text = old + json.dumps(row) + "\n"
        atomic_write(self.history_file, lambda tmp: tmp.write_text(text))
        return text.count("\n")

    def write_history(self, rows: Sequence[dict]) -> None:
        """The whole history at once (canonical after a resume, which appended some rows twice)."""
        text = "".join(json.dumps(r) + "\n" for r in rows)
        atomic_write(self.history_file, lambda tmp: tmp.write_text(text))

    def save_predictions(self, layout: str, result: "EvalResult") -> None:
        """Val rankings in the formats ``cirbench score`` reads (CIRR: the official submission format)."""
        if layout == "cirr":
            write_json(self.predictions_dir / "val_recall.json", {"version": "rc2", "metric": "recall", **result.rankings})
            write_json(self.predictions_dir / "val_recall_subset.json",
                       {"version": "rc2", "metric": "recall_subset", **result.subset_rankings})
        else:
            write_json(self.predictions_dir / "val_rankings.json", result.rankings)

    def write_metrics(self, metrics: dict) -> None:
        write_json(self.metrics_file, metrics)


def check_keep(keep: str) -> None:
    """A ConfigError unless ``keep`` is one of :data:`KEEP_CHOICES` (``--keep``)."""
    if keep not in KEEP_CHOICES:
        raise ConfigError(f"--keep must be one of {', '.join(KEEP_CHOICES)}, got {keep!r}")


def read_runs(root) -> RunRecords:
    """Every finished run under ``root`` (recursive); folders with a ``config.json`` or
    ``metrics.json`` that are not finished runs are listed in ``.skipped``."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"runs directory {root} does not exist")
    dirs = sorted({p.parent for name in ("config.json", "metrics.json") for p in root.rglob(name)})
    runs, skipped, unreadable = [], [], {}
    for d in dirs:
        record = RunDir(d).record()
        (runs if record is not None else skipped).append(record or d)
        why = None if record is not None else RunDir(d).unreadable()
        if why:
            unreadable[d] = why
    return RunRecords(runs, skipped, unreadable)


__all__ = ["DEFAULT_PREPROCESS", "KEEP_CHOICES", "NOISE_SEED_SAME", "TARGETPAD_RATIO", "RunDir", "RunRecord",
           "RunRecords", "RunSpec", "check_keep", "parse_noise_seed", "parse_preprocess", "read_runs", "targetpad_ratio"]
