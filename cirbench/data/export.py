"""Noisy annotations for other code: the annotation folder of a dataset with its training captions file(s)
replaced by the noisy triplets of a noise manifest, in the official layout, so that CLIP4Cir, SPRC or HABIT
code trains on exactly the noise cirbench measures (``cirbench noise --export-annotations DIR``).

Everything else of the annotation folder (val / test captions, ``image_splits/``) is copied unchanged;
images are not (point the other code's image folder at the original). A noisy entry keeps every field of
the original entry but the corrupted ones: FashionIQ ``candidate``, ``target``, ``captions``; CIRR
``reference``, ``target_hard`` (``target_soft`` becomes ``{target_hard: 1.0}`` when the target changed)
and ``caption``. CIRR's ``img_set`` is left as annotated (it names the reference's group, which reference
noise does not move).
"""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import Dict, List

from ..errors import DataError
from ..files import read_json, write_json
from .loaders import check_root, cirr_annotation_dir
from .triplets import FASHIONIQ_CATEGORIES


def export_noisy_annotations(layout: str, annotations_root, manifest: dict, out_dir) -> List[Path]:
    """Write the annotation folder with the manifest's noisy training triplets under ``out_dir``; returns
    the training caption files written."""
    if manifest.get("split", "train") != "train" or manifest.get("dataset", layout) != layout:
        raise DataError(f"the manifest is of {manifest.get('dataset')} {manifest.get('split')}, not {layout} train")
    noisy: Dict[str, dict] = {t["qid"]: t["noisy"] for t in manifest["triplets"] if t["is_noisy"]}
    root = check_root(annotations_root, "FashionIQ" if layout == "fashioniq" else "CIRR")
    source = root if layout == "fashioniq" else cirr_annotation_dir(root)
    out_dir = Path(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()):
        raise DataError(f"{out_dir} exists and is not empty; choose a new folder for the noisy annotations")
    for sub in ("captions", "image_splits"):
        shutil.copytree(source / sub, out_dir / sub, dirs_exist_ok=True)
    written = []
    if layout == "fashioniq":
        for cat in FASHIONIQ_CATEGORIES:
            path = source / "captions" / f"cap.{cat}.train.json"
            if path.is_file():
                entries = read_json(path, "annotation file", DataError)
                for i, e in enumerate(entries):
                    n = noisy.get(f"{cat}/{i}")
                    if n is not None:
                        e.update(candidate=n["reference"], target=n["target"], captions=list(n["captions"]))
                written.append(write_json(out_dir / "captions" / path.name, entries, indent=None))
    else:
        path = source / "captions" / "cap.rc2.train.json"
        entries = read_json(path, "annotation file", DataError)
        for e in entries:
            n = noisy.get(str(e.get("pairid")))
            if n is not None:
                if n["target"] != e.get("target_hard"):
                    e["target_soft"] = {n["target"]: 1.0}
                e.update(reference=n["reference"], target_hard=n["target"], caption=n["captions"][0])
        written.append(write_json(out_dir / "captions" / path.name, entries, indent=None))
    return written


__all__ = ["export_noisy_annotations"]
