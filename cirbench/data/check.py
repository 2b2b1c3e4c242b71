"""``cirbench data check``: why does my FashionIQ / CIRR folder not load?

Reads a folder the way the loaders do (:mod:`cirbench.data.loaders`, whose layout texts it
prints) and reports, without stopping at the first problem: which expected annotation files
are present, triplet and image counts per split and category, and which referenced images are
missing (with examples and, when a missing file sits elsewhere under the root, where to move it).

Errors (the folder cannot be used by ``cirbench run``; non-zero exit): no root, no
``captions/`` or ``image_splits/`` folder, a train or val annotation file missing or malformed,
a split none of whose images is found. Warnings: a test file missing (only submissions need
it), some images missing (FashionIQ's dead links make this normal; runs skip those triplets).
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Dict, List, Optional

from tabulate import tabulate

from ..errors import CirbenchError
from .loaders import (
    CIRR_LAYOUT,
    CIRR_SPLITS,
    FASHIONIQ_LAYOUT,
    FASHIONIQ_SPLITS,
    IMAGE_EXTENSIONS,
    find_cirr_annotations,
    load_cirr,
    load_fashioniq,
    resolve_cirr_images,
    scan_fashioniq_images,
)
from .triplets import FASHIONIQ_CATEGORIES, Split

REQUIRED_SPLITS = ("train", "val")  # what `cirbench run` reads; test splits only matter for submissions
SEARCH_DEPTH = 4
#: A train / val split that loses more than this fraction of its triplets to missing images is reported
#: loudly: its numbers are no longer those of the dataset (FashionIQ copies commonly lose a few percent).
LOSS_WARNING = 0.2


@dataclass
class Row:
    split: str
    category: str
    triplets: int
    images: int  # distinct images the split references (references, targets, gallery, img_set members)
    found: Optional[int] = None
    missing: List[str] = field(default_factory=list)
    usable: Optional[int] = None  # triplets whose reference and target images are found (what a run keeps)


@dataclass
class Report:
    layout: str
    root: Path
    files: List[tuple] = field(default_factory=list)  # (relative path, status)
    rows: List[Row] = field(default_factory=list)
    errors: List[str] = field(default_factory=list)
    warnings: List[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors

    def render(self) -> str:
        name = "FashionIQ" if self.layout == "fashioniq" else "CIRR"
        out = [f"{name} at {self.root}", "", "annotation files:"]
        out += [f"  {status:<8} {path}" for path, status in self.files]
        if self.rows:
            table = [[r.split, r.category, r.triplets, "-" if r.usable is None else r.usable, r.images,
                      "-" if r.found is None else r.found, "-" if r.found is None else len(r.missing)]
                     for r in self.rows]
            out += ["", tabulate(table, ["split", "category", "triplets", "usable", "images referenced", "found",
                                         "missing"], tablefmt="simple",
                                 colalign=("left", "left", "right", "right", "right", "right", "right"))]
        for w in self.warnings:
            out += ["", f"warning: {w}"]
        for e in self.errors:
            out += ["", f"error: {e}"]
        if not self.ok:
            out += ["", FASHIONIQ_LAYOUT if self.layout == "fashioniq" else CIRR_LAYOUT]
        lossy = self.lossy_rows()
        if not self.ok:
            out += ["", "NOT USABLE: fix the errors above"]
        elif lossy:
            out += ["", f"USABLE WITH LOSSES: {', '.join(f'{r.split}/{r.category}' for r in lossy)} lose more than "
                        f"{LOSS_WARNING:.0%} of their triplets; numbers on this copy are not comparable to the papers'"]
        else:
            out += ["", "OK: usable by `cirbench run`"]
        return "\n".join(out)


    def lossy_rows(self) -> List[Row]:
        """Train / val rows that lose more than :data:`LOSS_WARNING` of their triplets to missing images."""
        return [r for r in self.rows if r.split in REQUIRED_SPLITS and r.usable is not None and r.triplets
                and 1 - r.usable / r.triplets > LOSS_WARNING]


def check(layout: str, root: Path, images: bool = True) -> Report:
    """Inspect ``root`` as a ``layout`` ('fashioniq' or 'cirr') dataset; ``images=False`` skips the image files."""
    root = Path(root).expanduser()
    report = Report(layout, root)
    if not root.is_dir():
        report.errors.append(f"{root} is not a folder")
        return report
    if layout == "fashioniq":
        _check_fashioniq(root, report, images)
    else:
        _check_cirr(root, report, images)
    return report


# ---------------------------------------------------------------------------- FashionIQ


def _check_fashioniq(root: Path, report: Report, images: bool) -> None:
    if not _folders(root, report):
        return
    splits: Dict[str, Split] = {}
    for s in FASHIONIQ_SPLITS:
        for c in FASHIONIQ_CATEGORIES:
            files = [f"captions/cap.{c}.{s}.json", f"image_splits/split.{c}.{s}.json"]
            if not _files_present(root, files, s, report):
                continue
            try:
                split = load_fashioniq(root, splits=s, categories=c, require_images=False).split(s)
            except CirbenchError as e:
                report.errors.append(str(e))
                continue
            splits[f"{s}/{c}"] = split
            report.rows.append(Row(s, c, len(split.triplets), len(_referenced(split))))
    if not images or not splits:
        return
    images_dir = root / "images"
    found = scan_fashioniq_images(images_dir)
    if not found:
        example = next(iter(_referenced(next(iter(splits.values())))), "<id>")
        elsewhere = _find_elsewhere(root, [f"{example}{ext}" for ext in IMAGE_EXTENSIONS])
        where = f"; found {elsewhere}: move the image files into {images_dir}/" if elsewhere else ""
        report.errors.append(f"no images in {images_dir} (expected e.g. {images_dir / (example + '.png')}){where}")
        return
    for row, split in zip(report.rows, splits.values()):
        _count(row, split, set(found), report, f"{images_dir}/")
    _missing_summary(report, lambda i: [f"{i}{ext}" for ext in IMAGE_EXTENSIONS], lambda i: images_dir / f"{i}.png",
                     note=" (FashionIQ's image links are partly dead, so most copies miss some; "
                          "runs skip the triplets that need them)")


# ---------------------------------------------------------------------------- CIRR


def _check_cirr(root: Path, report: Report, images: bool) -> None:
    ann = find_cirr_annotations(root)
    if ann is None:
        report.errors.append(f"no CIRR annotations in {root}: neither {root / 'captions'} nor "
                             f"{root / 'cirr' / 'captions'} exists")
        return
    if not _folders(ann, report, prefix="" if ann == root else "cirr/"):
        return
    prefix = "" if ann == root else "cirr/"
    splits: Dict[str, Split] = {}
    rel_paths: Dict[str, str] = {}
    for s in CIRR_SPLITS:
        files = [f"{prefix}captions/cap.rc2.{s}.json", f"{prefix}image_splits/split.rc2.{s}.json"]
        if not _files_present(root, files, s, report):
            continue
        try:
            data = load_cirr(root, splits=s, require_images=False)
        except CirbenchError as e:
            report.errors.append(str(e))
            continue
        splits[s] = data.split(s)
        rel_paths.update(json.loads((ann / "image_splits" / f"split.rc2.{s}.json").read_bytes()))
        report.rows.append(Row(s, "-", len(splits[s].triplets), len(_referenced(splits[s]))))
    if not images or not splits:
        return
    bases = [b for b in dict.fromkeys((ann, ann.parent, root / "img_raw", ann / "img_raw")) if b.is_dir()]
    paths = resolve_cirr_images(rel_paths, bases)
    where = " or ".join(str(b) for b in bases)
    for row, split in zip(report.rows, splits.values()):
        _count(row, split, set(paths), report, f"{where} (at the split files' relative paths)",
               example=lambda i: bases[0] / PurePosixPath(rel_paths.get(i, f"{i}.png")))
    _missing_summary(report, lambda i: [PurePosixPath(rel_paths.get(i, f"{i}.png")).name],
                     lambda i: bases[0] / PurePosixPath(rel_paths.get(i, f"{i}.png")))


# ---------------------------------------------------------------------------- shared steps


def _folders(ann: Path, report: Report, prefix: str = "") -> bool:
    ok = True
    for name in ("captions", "image_splits"):
        if not (ann / name).is_dir():
            report.files.append((f"{prefix}{name}/", "MISSING"))
            report.errors.append(f"no {name}/ folder in {ann}")
            ok = False
    return ok


def _files_present(root: Path, files: List[str], split: str, report: Report) -> bool:
    present = True
    for f in files:
        exists = (root / f).is_file()
        report.files.append((f, "ok" if exists else "MISSING"))
        if not exists:
            present = False
            msg = f"missing {f}: put it at {root / f}"
            if split in REQUIRED_SPLITS:
                report.errors.append(f"{msg} (`cirbench run` reads the {split} split)")
            else:
                report.warnings.append(f"{msg} (needed only for {split} predictions / submissions)")
    return present


def _referenced(split: Split) -> List[str]:
    ids = set(split.image_ids())
    for t in split.triplets:
        ids.update(t.members)
    return sorted(ids)


def _count(row: Row, split: Split, present: set, report: Report, where: str, example=None) -> None:
    """Fill ``row``'s found / missing / usable; a split none of whose images exists is an error (a warning
    for test)."""
    needed = _referenced(split)
    row.missing = [i for i in needed if i not in present]
    row.found = len(needed) - len(row.missing)
    row.usable = sum(t.reference in present and (t.target is None or t.target in present) for t in split.triplets)
    if needed and row.found == 0:
        hint = f", e.g. {example(needed[0])}" if example else ""
        what = f"{row.split} split{'' if row.category == '-' else ' / ' + row.category}"
        if row.split in REQUIRED_SPLITS:
            report.errors.append(f"no image of the {what} found under {where}{hint}")
        else:
            report.warnings.append(f"no image of the {what} found under {where}{hint}")


def _missing_summary(report: Report, file_names, expected_at, note: str = "") -> None:
    missing = sorted({i for r in report.rows for i in r.missing})
    if not missing:
        return
    total = len(missing)
    shown = ", ".join(str(expected_at(i)) for i in missing[:3])
    elsewhere = _find_elsewhere(report.root, file_names(missing[0]))
    move = (f"; {missing[0]} is at {elsewhere}: move such files to {expected_at(missing[0]).parent}/"
            if elsewhere else "")
    report.warnings.append(f"{total} referenced image(s) missing, e.g. {shown}{move}{note}")


def _find_elsewhere(root: Path, names: List[str]) -> Optional[Path]:
    """The first file called one of ``names`` within ``SEARCH_DEPTH`` levels under ``root``."""
    wanted = set(names)
    base_depth = len(root.parts)
    for dirpath, dirnames, filenames in os.walk(root):
        hit = wanted.intersection(filenames)
        if hit:
            return Path(dirpath) / sorted(hit)[0]
        if len(Path(dirpath).parts) - base_depth >= SEARCH_DEPTH:
            dirnames[:] = []
    return None
