"""Plain helpers the tests share: the shared data beside the checkout, builders of tiny FashionIQ /
CIRR folders in the official layouts (real 8x8 PNG/JPEG images), fake finished runs, and the CLI
run in-process. Fixtures that use them live in ``conftest.py``."""
from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Iterable

import pytest
from PIL import Image

from cirbench.runs import RunRecord

SHARED = Path(__file__).resolve().parents[2] / "shared"
REAL_ANNOTATIONS = SHARED / "data/annotations"
PAPER_RESULTS = SHARED / "data/paper_results.yaml"


def shared_or_skip(path: Path) -> Path:
    """``path`` (under ``../shared``) if it exists; else skip the test, or fail it when ``CI`` is set:
    CI always has ``../shared`` beside the clone, so a test that needs it must not silently stop checking."""
    if path.exists():
        return path
    message = f"{path} not found (the shared data beside the checkout)"
    if os.environ.get("CI"):
        pytest.fail(f"{message}; CI is set, so this test fails instead of skipping")
    pytest.skip(message)


def write_image(path: Path, color=(200, 30, 30)) -> Path:
    """An 8x8 image; the format follows the suffix (.png, .jpg)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 8), color).save(path)
    return path


def write_json(path: Path, value) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(value, indent=1))
    return path


def edit_json(path: Path, change) -> Path:
    """Rewrite the JSON file ``path`` after ``change(value)`` edited its value in place."""
    value = json.loads(path.read_text())
    change(value)
    return write_json(path, value)


# Tiny FashionIQ, per category <c>: images <c>0..<c>12.
#   train: 3 triplets (<c>0-><c>1, <c>2-><c>3, <c>4-><c>5), gallery <c>0..<c>5
#   val:   2 triplets (<c>6-><c>7, <c>8-><c>9),             gallery <c>6..<c>9
#   test:  2 triplets without target (<c>10, <c>11),         gallery <c>10..<c>12
TINY_FIQ = {
    "train": ([(0, 1), (2, 3), (4, 5)], range(0, 6)),
    "val": ([(6, 7), (8, 9)], range(6, 10)),
    "test": ([(10, None), (11, None)], range(10, 13)),
}


def build_fashioniq(root: Path, ext: str = "png", categories=("dress", "shirt", "toptee"),
                    missing: Iterable[str] = (), images: bool = True) -> Path:
    """Write a tiny FashionIQ (see ``TINY_FIQ``) under ``root``; ``missing`` image ids get no file."""
    missing = set(missing)
    for c in categories:
        for split, (pairs, gallery) in TINY_FIQ.items():
            entries = []
            for k, (ref, tgt) in enumerate(pairs):
                e = {"candidate": f"{c}{ref}", "captions": [f"is {c} {split} {k} a", f"{c} {split} {k} b"]}
                if tgt is not None:
                    e["target"] = f"{c}{tgt}"
                entries.append(e)
            write_json(root / "captions" / f"cap.{c}.{split}.json", entries)
            write_json(root / "image_splits" / f"split.{c}.{split}.json", [f"{c}{i}" for i in gallery])
        if images:
            for i in range(13):
                if f"{c}{i}" not in missing:
                    write_image(root / "images" / f"{c}{i}.{ext}")
    return root


# Tiny CIRR: images train-<k>-0-img0 (k<4) in ./train/<k % 2>/, dev-<k>-0-img0 (k<6) in ./dev/,
# test1-<k>-0-img0 (k<6) in ./test1/. Triplets: train 2, val 3, test1 2 (no target); every
# val/test1 query's members are the six images of its split.
CIRR_FOLDER = {"train": "train", "val": "dev", "test1": "test1"}


def _cirr_name(split: str, k: int) -> str:
    return f"{CIRR_FOLDER[split]}-{k}-0-img0"


def _cirr_rel(split: str, k: int) -> str:
    folder = f"train/{k % 2}" if split == "train" else CIRR_FOLDER[split]
    return f"./{folder}/{_cirr_name(split, k)}.png"


TINY_CIRR = {"train": (4, [(0, 1), (2, 3)]), "val": (6, [(0, 1), (2, 3), (4, 5)]),
             "test1": (6, [(0, None), (3, None)])}


def build_cirr(root: Path, layout: str = "flat", missing: Iterable[str] = (), images: bool = True) -> Path:
    """Write a tiny CIRR under ``root``.

    ``layout``: ``flat`` (annotations and image folders in root), ``nested`` (annotations in
    root/cirr, images in root: CLIP4Cir and the official release), ``img_raw`` (annotations in
    root, images in root/img_raw).
    """
    missing = set(missing)
    ann = root / "cirr" if layout == "nested" else root
    img_base = root / "img_raw" if layout == "img_raw" else root
    pairid = 0
    for split, (n_images, pairs) in TINY_CIRR.items():
        names = {_cirr_name(split, k): _cirr_rel(split, k) for k in range(n_images)}
        entries = []
        for ref, tgt in pairs:
            e = {"pairid": pairid, "reference": _cirr_name(split, ref), "caption": f"{split} caption {pairid}",
                 "img_set": {"id": pairid, "members": list(names)[:6]}}
            if tgt is not None:
                e["target_hard"] = _cirr_name(split, tgt)
                e["target_soft"] = {e["target_hard"]: 1.0}
            entries.append(e)
            pairid += 1
        write_json(ann / "captions" / f"cap.rc2.{split}.json", entries)
        write_json(ann / "image_splits" / f"split.rc2.{split}.json", names)
        if images:
            for name, rel in names.items():
                if name not in missing:
                    write_image(img_base / rel)
    return root


# --- small generated data for end-to-end tests ---------------------------------------------
SMALL_SHAPES = {"FASHIONIQ_TRIPLETS": {"train": 90, "val": 40, "test": 10},
                "CIRR_GROUPS": {"train": 24, "val": 8, "test1": 3}}


def shrink_shapes() -> None:
    """Give the shapes generator the tests' small sizes (:data:`SMALL_SHAPES`), e.g. in a child process."""
    from cirbench.data import shapes

    for k, v in SMALL_SHAPES.items():
        setattr(shapes, k, v)


@contextlib.contextmanager
def full_size_shapes():
    """The generator's real sizes, for the tests of the generator itself."""
    from cirbench.data import shapes

    small = {k: getattr(shapes, k) for k in SMALL_SHAPES}
    for k, v in _FULL_SIZES.items():
        setattr(shapes, k, v)
    try:
        yield
    finally:
        for k, v in small.items():
            setattr(shapes, k, v)


_FULL_SIZES: dict = {}


def remember_full_sizes() -> dict:
    """The generator's sizes before the tests shrink them (``full_size_shapes`` restores them)."""
    from cirbench.data import shapes

    _FULL_SIZES.update({k: getattr(shapes, k) for k in SMALL_SHAPES})
    return dict(_FULL_SIZES)


# --- finished runs, without training -------------------------------------------------------

def fake_run(method, dataset="shapes-fashioniq", rate=0.0, seed=0, value=50.0, noise_type="mixed", noise_seed=0):
    """A finished run as read_runs returns it; every metric of the layout is ``value``."""
    layout = "cirr" if "cirr" in dataset else "fashioniq"
    if layout == "fashioniq":
        cat = {"R@10": value, "R@50": value + 20}
        best = {"dress": cat, "shirt": cat, "toptee": cat, "average": {**cat, "Rmean": value + 10}}
    else:
        best = {k: value for k in ("R@1", "R@5", "R@10", "R@50", "Rsubset@1", "Rsubset@2", "Rsubset@3", "Avg")}
    config = {"method": method, "dataset": dataset, "layout": layout, "seed": seed, "backbone": "tiny",
              "weights": "random", "noise": {"type": noise_type, "rate": rate, "seed": noise_seed}}
    metrics = {"status": "finished", "best": best, "last": best, "config": config,
               "protocol": {"split": "val", "reference_in_gallery": layout == "fashioniq"}}
    return RunRecord(Path(f"{dataset}/{method}/{rate}/seed{seed}"), config, metrics)


# method -> rate -> values over seeds 0, 1
SCORES = {
    "alpha": {0.0: [60.0, 62.0], 0.5: [40.0, 44.0]},
    "beta": {0.0: [58.0, 58.0], 0.5: [50.0, 52.0]},
    "gamma": {0.0: [30.0, 34.0], 0.5: [45.0, 45.0]},
}


def grid_runs(dataset="shapes-fashioniq"):
    return [fake_run(m, dataset, rate, seed, v) for m, rates in SCORES.items()
            for rate, values in rates.items() for seed, v in enumerate(values)]


def write_runs(root, runs):
    """Run folders under ``root`` holding the ``config.json`` and ``metrics.json`` of ``runs``."""
    for run in runs:
        d = root / run.dir
        d.mkdir(parents=True)
        (d / "config.json").write_text(json.dumps(run.config))
        (d / "metrics.json").write_text(json.dumps(run.metrics))
    return root


def run_cli(capsys, *args):
    """Run the ``cirbench`` CLI in-process as a user would; returns (exit code, stdout, stderr), the
    output read from ``capsys`` (empty strings when it is None: the caller's own capture keeps it)."""
    from cirbench.cli.app import main

    try:
        main([str(a) for a in args])
        code = 0
    except SystemExit as exc:
        code = exc.code
    if capsys is None:
        return code, "", ""
    out = capsys.readouterr()
    return code, out.out, out.err
