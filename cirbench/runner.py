"""Running cells: what a grid shares between its cells (:class:`Workspace`), the assembly of a
cell's method over its data (:func:`build_method`, shared by training and by ranking a saved run),
one cell's training (:func:`execute`) and a grid of them (:func:`run_grid`, behind ``cirbench run``
and ``cirbench leaderboard run``).
"""
from __future__ import annotations

import dataclasses
import logging
import os
import platform
import subprocess
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence

import torch

from .backbones import build_backbone
from .data import datasets
from .data.noise import inject_noise, save_manifest
from .data.triplets import CIRDataset, Split, Triplet, eval_text, train_texts
from .errors import RESTART_CELL, Interrupted
from .eval.detection import detection_metrics
from .eval.evaluation import EvalResult, evaluate, selection_value
from .features import FeatureTable, image_features, text_features
from .files import load_torch, save_torch
from .method import Method
from .paths import cache_dir as default_cache_dir
from .registry import resolve_name
from .report.tensorboard import TensorBoardLog, check_log
from .runs import RunDir, RunRecord, RunSpec, check_keep
from .towers import TrainableTowers, trained_towers
from .training import TrainConfig, TrainingSet, Validation, fit
from .types import Dims
from .version import __version__

TRAIN_VAL = ("train", "val")
log = logging.getLogger("cirbench")


def resolve_method(spec: RunSpec):
    """The method class and its hyper-parameters. ``name:variant`` starts from the named variant's
    overrides (``ncl-cir:robust``), the cell's own ``hparams`` win over them; any other ``name:arg``
    sets the class's ``arg_hparam`` (``spn:clip4cir`` means SPN with ``base=clip4cir``)."""
    cls, arg, variant = resolve_name(spec.method)
    overrides = {**(variant.hparams if variant is not None else {}), **spec.hparams}
    if arg is not None and variant is None:
        overrides[cls.arg_hparam] = arg
    return cls, cls.make_hparams(overrides)


def provenance(device: torch.device) -> dict:
    """Who computed a result: versions, commit, machine (after Hugging Face evaluate's saving)."""
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).resolve().parent,
                                capture_output=True, text=True, timeout=5).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        commit = None
    import open_clip

    return {
        "cirbench": __version__, "git_commit": commit, "python": platform.python_version(),
        "torch": torch.__version__, "open_clip": open_clip.__version__, "platform": platform.platform(),
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({os.cpu_count()} cores)",
        "timestamp": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


# ---------------------------------------------------------------------------- what cells share

class Workspace:
    """Things a grid shares between its cells: loaded datasets, backbones and image features."""

    def __init__(self, cache_dir: Optional[Path] = None, device: str = "cpu", progress: bool = True,
                 grad_checkpointing: bool = False):
        self.cache_dir = default_cache_dir(cache_dir)
        self.device = torch.device(device)
        self.progress = progress
        self.grad_checkpointing = grad_checkpointing  # for fine-tuned towers; the numbers do not depend on it
        self._datasets: Dict[tuple, CIRDataset] = {}
        self._backbones: Dict[tuple, Any] = {}
        self._images: Dict[tuple, FeatureTable] = {}

    def dataset(self, spec: RunSpec, splits: Sequence[str] = TRAIN_VAL) -> CIRDataset:
        """The splits of the cell's dataset, images checked on disk (triplets without them dropped)."""
        key = (spec.dataset, spec.data_root, tuple(splits))
        if key not in self._datasets:
            self._datasets[key] = datasets.load(spec.dataset, spec.data_root, self.cache_dir, splits=splits)
        return self._datasets[key]

    def annotated(self, spec: RunSpec, split: str = "train") -> Split:
        """A split as the annotation files list it (images on disk or not)."""
        key = ("annotated", spec.dataset, spec.data_root, split)
        if key not in self._datasets:
            self._datasets[key] = datasets.load(spec.dataset, spec.data_root, self.cache_dir, splits=(split,),
                                                require_images=False)
        return self._datasets[key].split(split)

    def backbone(self, spec: RunSpec):
        """The cell's backbone with the cell's image preprocessing (``spec.preprocess``)."""
        key = (spec.backbone, spec.weights, spec.preprocess)
        if key not in self._backbones:
            self._backbones[key] = build_backbone(spec.backbone, spec.weights, self.cache_dir,
                                                  preprocess=spec.preprocess).to(self.device)
        return self._backbones[key]

    def images(self, spec: RunSpec, tokens: bool, splits: Sequence[str] = TRAIN_VAL) -> FeatureTable:
        """Features of every image of those splits, on the workspace's device."""
        key = (spec.dataset, spec.data_root, tuple(splits), spec.backbone, spec.weights, spec.preprocess, tokens)
        if key not in self._images:
            data = self.dataset(spec, splits)
            table = image_features(self.backbone(spec), sorted(data.image_paths), data.image_paths, tokens=tokens,
                                   cache_dir=self.cache_dir, desc=f"encoding {spec.dataset} images",
                                   progress=self.progress)
            self._images[key] = table.to(self.device)
        return self._images[key]

    def texts(self, spec: RunSpec, texts: List[str], tokens: bool) -> FeatureTable:
        return text_features(self.backbone(spec), texts, tokens=tokens, cache_dir=self.cache_dir,
                             desc=f"encoding {spec.dataset} texts", progress=self.progress).to(self.device)


@dataclass
class BuiltMethod:
    """A cell's method, built over the dataset and image features it reads."""

    spec: RunSpec
    data: CIRDataset
    images: FeatureTable
    method: Method
    hparams: Any  # the resolved hyper-parameters the method was built with
    tokens: bool  # whether the method reads token features

    def text_table(self, ws: Workspace, texts: List[str]) -> FeatureTable:
        """Features of ``texts``, with the method's ``text_side_features`` attached as ``extra``."""
        table = ws.texts(self.spec, texts, self.tokens)
        side = self.method.text_side_features(table.keys)
        if side is None:
            return table
        return FeatureTable(table.keys, dataclasses.replace(table.features, extra=side.to(ws.device)))

    def evaluate(self, split: Split, texts: FeatureTable) -> EvalResult:
        """Rank ``split``'s gallery with the method as it is now (``texts`` must hold the split's
        evaluation texts) and score it with the dataset's protocol."""
        layout, images = self.data.layout, self.images
        device = images.features.embed.device
        references = images.features[images.rows([t.reference for t in split.triplets]).to(device)]
        words = texts.features[texts.rows([eval_text(layout, t) for t in split.triplets]).to(device)]
        return evaluate(layout, split, self.method.query_embeddings(references, words),
                        self.method.gallery_embeddings(images.features), images.row,
                        exclude_reference=self.spec.exclude_reference or None)


def build_method(spec: RunSpec, ws: Workspace, splits: Sequence[str] = TRAIN_VAL) -> BuiltMethod:
    """The cell's method with fresh weights, over the image features of ``splits``."""
    cls, hparams = resolve_method(spec)
    tokens = cls.wants_tokens(hparams)
    data = ws.dataset(spec, splits)
    images = ws.images(spec, tokens, splits)
    torch.manual_seed(spec.seed)  # the method's initial weights depend on the training seed only
    return BuiltMethod(spec, data, images, cls(Dims.of(images.features), hparams), hparams, tokens)


def attach_towers(built: BuiltMethod, ws: Workspace, texts: FeatureTable) -> Optional[TrainableTowers]:
    """For a method whose stages fine-tune backbone towers: its own copy of the backbone and of the
    feature tables (``built.images`` becomes the cell's own), and the towers' helper; else None."""
    towers = trained_towers(built.method.stages(built.spec.epochs))
    if not towers:
        return None
    helper = TrainableTowers.attach(built.method, ws.backbone(built.spec), towers, built.images, texts,
                                    built.data.image_paths, built.tokens, ws.cache_dir, ws.progress,
                                    grad_checkpointing=ws.grad_checkpointing)
    built.images = helper.images
    return helper


# ---------------------------------------------------------------------------- running cells

@dataclass
class RunContext:
    """What a method may look at before training (``Method.extra_triplets``): the cell, its data
    and (noisy) training triplets, the frozen image features and backbone, and where to write."""

    spec: RunSpec
    data: CIRDataset
    train_triplets: List[Triplet]
    images: FeatureTable
    backbone: Any
    run_dir: Path
    cache_dir: Path
    device: torch.device


class _CellTraining:
    """One cell's training: its noisy training set and the hooks :func:`fit` calls back."""

    def __init__(self, spec: RunSpec, run_dir: RunDir, ws: Workspace):
        self.run_dir, self.device = run_dir, ws.device
        self.built = built = build_method(spec, ws)
        data, layout = built.data, built.data.layout
        self.val = data.split("val")
        # Noise is drawn on the training triplets as annotated (exactly what `cirbench noise` draws);
        # triplets whose images are missing on disk are dropped afterwards.
        self.noise = inject_noise(ws.annotated(spec).triplets[: spec.train_limit or None], spec.noise_rate,
                                  spec.noise_type, spec.noise_seed)
        save_manifest(self.noise.manifest, run_dir.manifest_file)
        on_disk = [t.reference in data.image_paths and t.target in data.image_paths for t in self.noise.triplets]
        annotated = [t for t, kept in zip(self.noise.triplets, on_disk) if kept]
        noisy = sum(flag and kept for flag, kept in zip(self.noise.is_noisy.tolist(), on_disk))
        log.info("label noise %s at rate %g (seed %d): %d of the %d training triplets corrupted, realised rate %.4f%s",
                 spec.noise_type, spec.noise_rate, spec.noise_seed, noisy, len(annotated),
                 noisy / len(annotated) if annotated else 0.0,
                 "" if len(annotated) == len(on_disk) else f" ({len(on_disk)} annotated, the others lack images)")
        self.qids = [t.qid for t in annotated]
        run = RunContext(spec, data, annotated, built.images, ws.backbone(spec), run_dir.path, ws.cache_dir, ws.device)
        extra = built.method.extra_triplets(run)  # e.g. SPN's generated positives: never noised, never evaluated
        needed = [x for t in annotated + extra for x in train_texts(layout, t)]
        self.texts = built.text_table(ws, needed + [eval_text(layout, t) for t in self.val.triplets])
        self.towers = attach_towers(built, ws, self.texts)
        if self.towers is not None:  # the cell's own tables, re-embedded as its towers train
            self.texts = self.towers.texts
        self.train = TrainingSet(layout, annotated + extra, built.images, self.texts, generated=len(extra))

    def validate(self, method: Method) -> Validation:
        result = self.built.evaluate(self.val, self.texts)
        return Validation(result.metrics, selection_value(self.built.data.layout, result.metrics), result)

    def on_best(self, val: Validation) -> None:
        self.run_dir.save_predictions(self.built.data.layout, val.extras)
        save_torch(self.built.method.state_dict(), self.run_dir.best_model_file)

    def noise_detection(self) -> Optional[dict]:
        """The method's clean probabilities of the annotated triplets, scored against the manifest."""
        probs = self.built.method.clean_probabilities()  # annotated training triplets first, generated ones last
        if probs is None:
            return None
        n = len(self.qids)
        return detection_metrics(probs[:n] if len(probs) == len(self.train) else probs, self.qids,
                                 self.noise.manifest)

    def epoch_log(self) -> dict:
        scores = self.noise_detection()
        return {} if scores is None else {"noise_detection": scores}

    def metrics(self, result: dict, started: float) -> dict:
        """``metrics.json`` of the finished run."""
        final = self.validate(self.built.method)
        scores = self.noise_detection()
        return {
            "status": "finished",
            "best": result["best"], "last": result["last"], "best_epoch": result["best_epoch"],
            "epochs_run": len(result["history"]),
            "protocol": final.extras.protocol,
            "noise": {k: self.noise.manifest[k] for k in ("type", "rate", "seed", "n_triplets", "n_noisy",
                                                          "realised_rate")},
            "config": self.built.spec.to_config(), "hparams": dataclasses.asdict(self.built.hparams),
            **({"noise_detection": scores} if scores is not None else {}),
            "provenance": {**provenance(self.device), "wall_seconds": round(time.time() - started, 2)},
        }


def check_cells(cells: Sequence[RunSpec], ws: Workspace) -> None:
    """What cells need, checked before a folder is written: the methods and their hyper-parameters of
    every cell, then the dataset folders, then the backbones and their weights (each a one-line error;
    the cheap checks first, so that a mistake costs no warm start or weights loading; the workspace
    keeps what it built)."""
    for cell in cells:
        resolve_method(cell)
    for cell in cells:
        ws.dataset(cell)
    for cell in cells:
        ws.backbone(cell)


def execute(spec: RunSpec, out_dir: Path, ws: Workspace, force: bool = False, keep: str = "checkpoints",
            log: str = "none") -> dict:
    """Run one cell (or finish it, or skip it if done); returns its ``metrics.json`` content. ``keep``:
    what the finished run keeps of its weights (:meth:`RunDir.prune`); ``log="tensorboard"`` also writes
    its history as TensorBoard scalars (:mod:`cirbench.report.tensorboard`)."""
    run_dir = RunDir(Path(out_dir) / spec.dirname())
    done = run_dir.start(spec, force, validate=lambda: check_cells([spec], ws))
    if done is not None:
        run_dir.prune(keep)
        return done
    started = time.time()
    cell = _CellTraining(spec, run_dir, ws)
    board = TensorBoardLog(Path(out_dir) / "tensorboard" / spec.dirname()) if log == "tensorboard" else None

    def on_epoch(row: dict) -> None:
        rows = run_dir.append_history(row)
        if board is not None:
            board.write(row, step=rows)

    result = fit(cell.built.method, cell.train, cell.validate,
                 TrainConfig(spec.epochs, spec.batch_size, spec.seed, str(ws.device)),
                 run_dir.checkpoint_file, on_best=cell.on_best, on_epoch=on_epoch,
                 epoch_log=cell.epoch_log, progress=ws.progress, towers=cell.towers,
                 best_state=lambda: load_torch(run_dir.best_model_file, "best model", ws.device, hint=RESTART_CELL))
    run_dir.write_history(result["history"])
    metrics = cell.metrics(result, started)
    run_dir.write_metrics(metrics)
    run_dir.prune(keep)
    if board is not None:
        board.close()
    return metrics


def run_grid(cells: Sequence[RunSpec], out_dir: Path, ws: Workspace, force: bool = False, keep: str = "checkpoints",
             log: str = "none",
             report: Callable[[int, RunSpec, dict, float], None] = lambda i, cell, metrics, seconds: None
             ) -> List[RunRecord]:
    """Run (or finish, or reuse) every cell in order; ``report(i, cell, metrics, seconds)`` after each.
    Every cell still to run is checked first (:func:`check_cells`): a mistake in the last cell's data
    folder is found before the first cell trains."""
    check_keep(keep)
    check_log(log)
    check_cells([cell for cell in cells if not RunDir(Path(out_dir) / cell.dirname()).finished], ws)
    done = []
    for i, cell in enumerate(cells, 1):
        t = time.time()
        try:
            metrics = execute(cell, out_dir, ws, force=force, keep=keep, log=log)
        except KeyboardInterrupt:
            raise Interrupted(str(Path(out_dir) / cell.dirname())) from None
        done.append(RunRecord(Path(out_dir) / cell.dirname(), cell.to_config(), metrics))
        report(i, cell, metrics, time.time() - t)
    return done


__all__ = ["BuiltMethod", "RunContext", "Workspace", "attach_towers", "build_method", "check_cells", "execute",
           "provenance", "resolve_method", "run_grid"]
