"""Named datasets: the generated ``shapes`` benchmarks and real FashionIQ / CIRR folders.

``shapes-*`` are generated once into the cache folder (in the official layouts) and then read
by the very same loaders as the real datasets.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Dict, Optional, Sequence

from ..errors import ConfigError, DataError
from ..paths import cache_dir as default_cache_dir
from . import shapes
from .loaders import load_dataset
from .triplets import CIRDataset

log = logging.getLogger("cirbench")
SHAPES_SEED = 0

#: name -> (layout, description)
DATASETS: Dict[str, tuple] = {
    "shapes-fashioniq": ("fashioniq", "generated shapes scenes in the FashionIQ layout (3 categories, 2 captions)"),
    "shapes-cirr": ("cirr", "generated shapes scenes in the CIRR layout (img_set groups of 6 close images)"),
    "fashioniq": ("fashioniq", "FashionIQ (Wu et al. 2021): --data-root DIR with captions/, image_splits/, images/"),
    "cirr": ("cirr", "CIRR (Liu et al. 2021): --data-root DIR with captions/ and image_splits/ (or cirr/...), "
                     "images under train/, dev/, test1/"),
}


#: What to download for each real dataset, and how to lay it out (printed when it is missing).
DOWNLOADS = {
    "fashioniq": (
        "FashionIQ: the annotations (captions/, image_splits/) from github.com/XiaoxiaoGuo/fashion-iq and "
        "the product images (the release lists their URLs). Lay it out as\n"
        "    DIR/captions/cap.{dress,shirt,toptee}.{train,val,test}.json\n"
        "    DIR/image_splits/split.{dress,shirt,toptee}.{train,val,test}.json\n"
        "    DIR/images/<id>.png (or .jpg)"),
    "cirr": (
        "CIRR: the annotations from github.com/Cuberick-Orion/CIRR (cirr/captions, cirr/image_splits) and the "
        "NLVR2 raw images they index (requested from the NLVR2 authors). Lay it out as\n"
        "    DIR/cirr/captions/cap.rc2.{train,val,test1}.json\n"
        "    DIR/cirr/image_splits/split.rc2.{train,val,test1}.json\n"
        "    DIR/train/<n>/*.png   DIR/dev/*.png   DIR/test1/*.png"),
}


def layout_of(name: str) -> str:
    if name not in DATASETS:
        raise ConfigError(f"unknown dataset {name!r}; known: {', '.join(DATASETS)} (`cirbench list datasets`)")
    return DATASETS[name][0]


def is_generated(name: str) -> bool:
    return name.startswith("shapes-")


def shapes_root(layout: str, cache_dir: Optional[Path] = None) -> Path:
    """The cached generated dataset for ``layout``, generating it on first use."""
    root = default_cache_dir(cache_dir) / "data" / f"shapes-{layout}-seed{SHAPES_SEED}"
    if not (root / ".complete").exists():
        log.info("generating the shapes dataset (%s layout) into %s (once)", layout, root)
        shapes.generate(layout, root, seed=SHAPES_SEED)
    return root


def dataset_root(name: str, data_root: Optional[Path], cache_dir: Optional[Path] = None) -> Path:
    layout = layout_of(name)
    if is_generated(name):
        return shapes_root(layout, cache_dir)
    if data_root is None:
        raise ConfigError(f"dataset {name!r} needs --data-root pointing at its folder ({DATASETS[name][1]})")
    root = Path(data_root).expanduser()
    if not root.is_dir():
        raise DataError(f"--data-root {root} for {name!r} is not a folder; expected: {DATASETS[name][1]}")
    return root


def load(name: str, data_root: Optional[Path] = None, cache_dir: Optional[Path] = None,
         splits: Sequence[str] = ("train", "val"), require_images: bool = True) -> CIRDataset:
    """Load a named dataset through the official-layout loaders."""
    data = load_dataset(layout_of(name), dataset_root(name, data_root, cache_dir), splits=tuple(splits),
                        require_images=require_images)
    data.name = name
    return data
