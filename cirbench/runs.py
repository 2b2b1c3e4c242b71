"""Runs: one directory per cell of the grid (method × dataset × noise × seed).

A run directory holds ``config.json`` (the resolved cell), ``noise_manifest.json``,
``history.jsonl`` (one line per epoch), ``checkpoint.pt`` (to resume), ``best_model.pt``
(the method's weights at the best validation epoch), ``predictions/``
(val rankings of the best epoch, in the formats ``cirbench score`` reads) and, once the run
has finished, ``metrics.json`` (best and last metrics, the evaluation protocol, provenance).
A cell whose ``metrics.json`` says finished is skipped when the grid runs again; a cell with a
checkpoint continues where it stopped.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import platform
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Dict, List, Optional

import torch

from . import __version__, datasets
from .backbones import build_backbone
from .data.triplets import CIRDataset, Triplet, eval_text, train_texts
from .detection import detection_metrics
from .errors import ConfigError
from .evaluation import evaluate, selection_value
from .features import FeatureTable, image_features, text_features
from .method import Dims, hparams_dict
from .noise import inject_noise, save_manifest
from .paths import cache_dir as default_cache_dir
from .registry import get_method
from .training import TrainConfig, TrainingSet, Validation, embed_images, embed_queries, fit

log = logging.getLogger("cirbench")


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

    def dirname(self) -> str:
        noise = "clean" if self.noise_rate == 0 else f"{self.noise_type}-{self.noise_rate:g}-ns{self.noise_seed}"
        return f"{self.dataset}/{self.method.replace(':', '+')}/{noise}/seed{self.seed}"

    def to_dict(self) -> dict:
        """The resolved config as stored in ``config.json`` (noise nested, layout added)."""
        d = dataclasses.asdict(self)
        noise = {"type": d.pop("noise_type"), "rate": d.pop("noise_rate"), "seed": d.pop("noise_seed")}
        return {"method": d.pop("method"), "dataset": d.pop("dataset"), "layout": datasets.layout_of(self.dataset),
                "noise": noise, **d}


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


def resolve_method(spec: RunSpec):
    """The method class and its hyper-parameters; ``name:arg`` sets the class's ``arg_hparam``
    (``spn:clip4cir`` means SPN with ``base=clip4cir``)."""
    name, sep, arg = spec.method.partition(":")
    cls = get_method(name)
    overrides = dict(spec.hparams)
    if sep:
        if not cls.arg_hparam:
            raise ConfigError(f"method {name!r} takes no ':argument' (got {spec.method!r})")
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


def _write_json(path: Path, obj) -> None:
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    tmp.write_text(json.dumps(obj, indent=1))
    os.replace(tmp, path)


def read_metrics(run_dir: Path) -> Optional[dict]:
    path = Path(run_dir) / "metrics.json"
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError:
        return None


def is_finished(run_dir: Path) -> bool:
    m = read_metrics(run_dir)
    return bool(m) and m.get("status") == "finished"


class Workspace:
    """Things a grid shares between its cells: loaded datasets, backbones and image features."""

    def __init__(self, cache_dir: Optional[Path] = None, device: str = "cpu", progress: bool = True):
        self.cache_dir = default_cache_dir(cache_dir)
        self.device = torch.device(device)
        self.progress = progress
        self._datasets: Dict[tuple, CIRDataset] = {}
        self._backbones: Dict[tuple, Any] = {}
        self._images: Dict[tuple, FeatureTable] = {}

    def dataset(self, spec: RunSpec) -> CIRDataset:
        key = (spec.dataset, spec.data_root)
        if key not in self._datasets:
            self._datasets[key] = datasets.load(spec.dataset, spec.data_root, self.cache_dir)
        return self._datasets[key]

    def annotated_train(self, spec: RunSpec) -> list:
        """Training triplets as the annotation files list them (images on disk or not)."""
        key = ("annotated", spec.dataset, spec.data_root)
        if key not in self._datasets:
            self._datasets[key] = datasets.load(spec.dataset, spec.data_root, self.cache_dir, splits=("train",),
                                                require_images=False)
        return self._datasets[key].split("train").triplets

    def backbone(self, spec: RunSpec):
        key = (spec.backbone, spec.weights)
        if key not in self._backbones:
            self._backbones[key] = build_backbone(spec.backbone, spec.weights, self.cache_dir).to(self.device)
        return self._backbones[key]

    def images(self, spec: RunSpec, tokens: bool) -> FeatureTable:
        key = (spec.dataset, spec.data_root, spec.backbone, spec.weights, tokens)
        if key not in self._images:
            data = self.dataset(spec)
            ids = sorted(data.image_paths)
            table = image_features(self.backbone(spec), ids, data.image_paths, tokens=tokens,
                                   cache_dir=self.cache_dir, desc=f"encoding {spec.dataset} images",
                                   progress=self.progress)
            self._images[key] = table.to(self.device)
        return self._images[key]

    def texts(self, spec: RunSpec, texts: List[str], tokens: bool) -> FeatureTable:
        return text_features(self.backbone(spec), texts, tokens=tokens, cache_dir=self.cache_dir,
                             desc=f"encoding {spec.dataset} texts", progress=self.progress).to(self.device)


def execute(spec: RunSpec, out_dir: Path, ws: Workspace, force: bool = False) -> dict:
    """Run one cell (or finish it, or skip it if done); returns its ``metrics.json`` content."""
    run_dir = Path(out_dir) / spec.dirname()
    config = spec.to_dict()
    cfg_path = run_dir / "config.json"
    if cfg_path.exists():
        old = json.loads(cfg_path.read_text())
        if old != config:
            if not force:
                diff = ", ".join(f"{k}: {old.get(k)!r} -> {config.get(k)!r}" for k in config if old.get(k) != config[k])
                raise ConfigError(f"{run_dir} holds a run with other settings ({diff}); choose another --out, "
                                  "or pass --force to start it again")
            for stale in ("metrics.json", "checkpoint.pt", "history.jsonl"):
                (run_dir / stale).unlink(missing_ok=True)
    if is_finished(run_dir):
        return read_metrics(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    _write_json(cfg_path, config)
    started = time.time()

    cls, hparams = resolve_method(spec)
    data = ws.dataset(spec)
    layout = data.layout
    val_split = data.split("val")
    # Noise is drawn on the training triplets as annotated (exactly what `cirbench noise` draws);
    # triplets whose images are missing on disk are dropped afterwards.
    clean = ws.annotated_train(spec)[: spec.train_limit or None]
    noise = inject_noise(clean, spec.noise_rate, spec.noise_type, spec.noise_seed)
    save_manifest(noise.manifest, run_dir / "noise_manifest.json")
    train_triplets = [t for t in noise.triplets if t.reference in data.image_paths and t.target in data.image_paths]

    tokens = cls.wants_tokens(hparams)
    images = ws.images(spec, tokens)
    dims = Dims(embed=images.features.embed.shape[1],
                tokens=0 if images.features.tokens is None else images.features.tokens.shape[-1])
    torch.manual_seed(spec.seed)  # the method's initial weights depend on the training seed only
    method = cls(dims, hparams)
    run = RunContext(spec, data, train_triplets, images, ws.backbone(spec), run_dir, ws.cache_dir, ws.device)
    extra = method.extra_triplets(run)  # e.g. SPN's generated positives: never noised, never evaluated
    texts_needed = [x for t in train_triplets + extra for x in train_texts(layout, t)]
    texts_needed += [eval_text(layout, t) for t in val_split.triplets]
    texts = ws.texts(spec, texts_needed, tokens)
    side = method.text_side_features(texts.keys)
    if side is not None:
        texts = FeatureTable(texts.keys, dataclasses.replace(texts.features, extra=side.to(ws.device)))
    train = TrainingSet(layout, train_triplets + extra, images, texts, generated=len(extra))
    val_refs = images.features[images.rows([t.reference for t in val_split.triplets]).to(ws.device)]
    val_texts = texts.features[texts.rows([eval_text(layout, t) for t in val_split.triplets]).to(ws.device)]

    def validate(m) -> Validation:
        result = evaluate(layout, val_split, embed_queries(m, val_refs, val_texts), embed_images(m, images.features),
                          images.row, exclude_reference=spec.exclude_reference or None)
        return Validation(result.metrics, selection_value(layout, result.metrics), result)

    def on_best(val: Validation) -> None:
        save_predictions(run_dir / "predictions", layout, val.extras)
        _save_model(method, run_dir / "best_model.pt")

    history_path = run_dir / "history.jsonl"

    annotated_qids = [t.qid for t in train_triplets]

    def noise_detection() -> Optional[dict]:
        probs = method.clean_probabilities()  # the annotated training triplets (generated ones, if any, last)
        if probs is None:
            return None
        return detection_metrics(probs[:len(annotated_qids)] if len(probs) == len(train) else probs,
                                 annotated_qids, noise.manifest)

    def on_epoch(row: dict) -> None:
        scores = noise_detection()
        if scores is not None:
            row["noise_detection"] = scores  # the same dict fit() keeps, so the final history has it too
        with open(history_path, "a") as f:
            f.write(json.dumps(row) + "\n")

    result = fit(method, train, validate, TrainConfig(spec.epochs, spec.batch_size, spec.seed, str(ws.device)),
                 run_dir / "checkpoint.pt", on_best=on_best, on_epoch=on_epoch, progress=ws.progress)
    history_path.write_text("".join(json.dumps(r) + "\n" for r in result["history"]))  # canonical, resume-proof
    final_eval = validate(method)
    metrics = {
        "status": "finished",
        "best": result["best"], "last": result["last"], "best_epoch": result["best_epoch"],
        "epochs_run": len(result["history"]),
        "protocol": final_eval.extras.protocol,
        "noise": {k: noise.manifest[k] for k in ("type", "rate", "seed", "n_triplets", "n_noisy", "realised_rate")},
        "config": config, "hparams": hparams_dict(hparams),
        **({"noise_detection": scores} if (scores := noise_detection()) is not None else {}),
        "provenance": {**provenance(ws.device), "wall_seconds": round(time.time() - started, 2)},
    }
    _write_json(run_dir / "metrics.json", metrics)
    return metrics


def _save_model(method, path: Path) -> None:
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    torch.save(method.state_dict(), tmp)
    os.replace(tmp, path)


def save_predictions(folder: Path, layout: str, result) -> None:
    """Val rankings in the formats ``cirbench score`` reads (CIRR: the official submission format)."""
    folder.mkdir(parents=True, exist_ok=True)
    if layout == "cirr":
        _write_json(folder / "val_recall.json", {"version": "rc2", "metric": "recall", **result.rankings})
        _write_json(folder / "val_recall_subset.json",
                    {"version": "rc2", "metric": "recall_subset", **result.subset_rankings})
    else:
        _write_json(folder / "val_rankings.json", result.rankings)
