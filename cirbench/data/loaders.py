"""Loaders for FashionIQ and CIRR in their official folder layouts.

Both return a :class:`~cirbench.data.triplets.CIRDataset`. Every problem with the folder is
raised as :class:`~cirbench.errors.DataError` (missing root, folder or file, malformed JSON,
an entry without a required key) and every bad argument as
:class:`~cirbench.errors.ConfigError` (unknown split, category or layout), each with a message
that says what was expected where.

FashionIQ::

    root/captions/cap.<cat>.<split>.json       [{"candidate", "target", "captions": [c1, c2]}]
    root/image_splits/split.<cat>.<split>.json [image id, ...]  (the split's gallery)
    root/images/<id>.png  (or .jpg)

CIRR (annotations in ``root`` or in ``root/cirr``, as CLIP4Cir and the official release do)::

    <ann>/captions/cap.rc2.<split>.json        [{"pairid", "reference", "target_hard", "caption",
                                                 "img_set": {"members": [...]}}]
    <ann>/image_splits/split.rc2.<split>.json  {image id: "./dev/<id>.png", ...}
    images: relative paths of the split file, resolved against the first of <ann>, its parent,
    root/img_raw, <ann>/img_raw that holds the file.

With ``require_images=True`` (the default) images that are not on disk are dropped, never
crashed on: a triplet whose reference or target image is missing is skipped, a missing gallery
image is removed from the gallery (CIRR's ``members`` stay as in the file), and one warning on
the ``cirbench`` logger counts what was dropped (FashionIQ's image links are partly dead, so
every FashionIQ copy misses some). A split none of whose images exist is an error. Qids stay
those of the files (FashionIQ ``"<cat>/<position in the captions file>"``, CIRR ``pairid``), so
dropping triplets never renumbers the rest. ``require_images=False`` reads annotations only.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path, PurePosixPath
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Tuple, Union

from ..errors import ConfigError, DataError
from ..files import read_json
from .triplets import CIRR_CATEGORY, FASHIONIQ_CATEGORIES, CIRDataset, Split, Triplet

log = logging.getLogger("cirbench")

PathLike = Union[str, os.PathLike]

LAYOUTS = ("fashioniq", "cirr")
FASHIONIQ_SPLITS = ("train", "val", "test")
CIRR_SPLITS = ("train", "val", "test1")
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg")  # in order of preference when several exist

FASHIONIQ_LAYOUT = (
    "FashionIQ's official layout is:\n"
    "  <root>/captions/cap.<dress|shirt|toptee>.<train|val|test>.json\n"
    "  <root>/image_splits/split.<dress|shirt|toptee>.<train|val|test>.json\n"
    "  <root>/images/<image id>.png (or .jpg)"
)
CIRR_LAYOUT = (
    "CIRR's official layout is (annotations in <root> or in <root>/cirr):\n"
    "  <root>[/cirr]/captions/cap.rc2.<train|val|test1>.json\n"
    "  <root>[/cirr]/image_splits/split.rc2.<train|val|test1>.json\n"
    "  images at the relative paths of the split files (./train/<n>/, ./dev/, ./test1/), under\n"
    "  the annotation folder, its parent, <root>/img_raw or <root>[/cirr]/img_raw"
)


def one_line(layout: str) -> str:
    """A layout description as one line, for an error message."""
    return " ".join(line.strip() for line in layout.splitlines())


# --------------------------------------------------------------------------- public API


def load_dataset(layout: str, root: PathLike, splits: Union[str, Sequence[str]] = ("train", "val"),
                 require_images: bool = True) -> CIRDataset:
    """Load ``root`` in the official ``layout`` (``'fashioniq'`` or ``'cirr'``)."""
    if layout == "fashioniq":
        return load_fashioniq(root, splits, require_images=require_images)
    if layout == "cirr":
        return load_cirr(root, splits, require_images=require_images)
    raise ConfigError(f"unknown dataset layout {layout!r}; valid layouts: {', '.join(LAYOUTS)}")


def load_fashioniq(root: PathLike, splits: Union[str, Sequence[str]] = ("train", "val"),
                   categories: Optional[Union[str, Iterable[str]]] = None,
                   require_images: bool = True) -> CIRDataset:
    """Load FashionIQ (see the module docstring for the layout).

    ``categories=None`` takes every official category (dress, shirt, toptee) that has a
    captions file for one of the requested splits, and warns when that is not all three (the
    FashionIQ average is over three). Galleries keep the official category order.
    """
    splits = _check_splits(splits, FASHIONIQ_SPLITS, "FashionIQ")
    root = check_root(root, "FashionIQ")
    cap_dir = _subdir(root, "captions", FASHIONIQ_LAYOUT)
    split_dir = _subdir(root, "image_splits", FASHIONIQ_LAYOUT)

    if categories is None:
        cats = [c for c in FASHIONIQ_CATEGORIES
                if any((cap_dir / f"cap.{c}.{s}.json").is_file() for s in splits)]
        if not cats:
            raise DataError(f"no FashionIQ captions for split(s) {', '.join(splits)} in {cap_dir} "
                            f"(expected e.g. {cap_dir / f'cap.dress.{splits[0]}.json'}); {one_line(FASHIONIQ_LAYOUT)}")
        if len(cats) < len(FASHIONIQ_CATEGORIES):
            log.warning("FashionIQ at %s has only the categories %s; the official average is over "
                        "dress, shirt and toptee", root, ", ".join(cats))
    else:
        wanted = [categories] if isinstance(categories, str) else list(categories)
        unknown = [c for c in wanted if c not in FASHIONIQ_CATEGORIES]
        if unknown or not wanted:
            raise ConfigError(f"unknown FashionIQ categor{'y' if len(unknown) == 1 else 'ies'} "
                              f"{', '.join(map(repr, unknown)) or '(none given)'}; valid categories: "
                              f"{', '.join(FASHIONIQ_CATEGORIES)}")
        cats = [c for c in FASHIONIQ_CATEGORIES if c in wanted]

    result: Dict[str, Split] = {}
    for s in splits:
        triplets: List[Triplet] = []
        gallery: Dict[str, List[str]] = {}
        for c in cats:
            triplets += _fashioniq_triplets(cap_dir / f"cap.{c}.{s}.json", c, needs_target=s != "test")
            gallery[c] = _read_id_list(split_dir / f"split.{c}.{s}.json")
        result[s] = Split(s, triplets, gallery)

    image_paths: Dict[str, Path] = {}
    if require_images:
        images_dir = root / "images"
        found = scan_fashioniq_images(images_dir)
        needed = {i for sp in result.values() for i in sp.image_ids()}
        image_paths = {i: images_dir / found[i] for i in needed if i in found}
        _drop_missing(result, image_paths, f"{images_dir} (as <id>.png or <id>.jpg)",
                      example=lambda i: images_dir / f"{i}.png", note=" (FashionIQ has many dead image links)")
    return CIRDataset(name="fashioniq", layout="fashioniq", root=root, splits=result,
                      image_paths=image_paths)


def load_cirr(root: PathLike, splits: Union[str, Sequence[str]] = ("train", "val"),
              require_images: bool = True) -> CIRDataset:
    """Load CIRR (see the module docstring for the layout).

    Split names are CIRR's own: ``train``, ``val``, ``test1`` (files ``*.rc2.<split>.json``).
    The gallery of a split is every image of its ``split.rc2.<split>.json`` in file order.
    """
    splits = _check_splits(splits, CIRR_SPLITS, "CIRR")
    root = check_root(root, "CIRR")
    ann = cirr_annotation_dir(root)
    cap_dir = _subdir(ann, "captions", CIRR_LAYOUT)
    split_dir = _subdir(ann, "image_splits", CIRR_LAYOUT)

    result: Dict[str, Split] = {}
    rel_paths: Dict[str, str] = {}
    for s in splits:
        split_file = split_dir / f"split.rc2.{s}.json"
        names = _read_json(split_file, CIRR_LAYOUT)
        if not isinstance(names, dict) or not all(isinstance(v, str) for v in names.values()):
            raise DataError(f"{split_file} should map image names to relative paths "
                            f'({{"dev-244-0-img0": "./dev/dev-244-0-img0.png", ...}})')
        rel_paths.update(names)
        triplets = _cirr_triplets(cap_dir / f"cap.rc2.{s}.json", needs_target=s != "test1")
        result[s] = Split(s, triplets, {CIRR_CATEGORY: list(names)})

    image_paths: Dict[str, Path] = {}
    if require_images:
        bases = [b for b in dict.fromkeys((ann, ann.parent, root / "img_raw", ann / "img_raw"))
                 if b.is_dir()]
        image_paths = resolve_cirr_images(rel_paths, bases)
        _drop_missing(result, image_paths, " or ".join(map(str, bases)) + " (at the split files' relative paths)",
                      example=lambda i: bases[0] / PurePosixPath(rel_paths.get(i, i)))
    return CIRDataset(name="cirr", layout="cirr", root=root, splits=result, image_paths=image_paths)


# --------------------------------------------------------------------------- annotations


def _read_entries(path: Path, layout_help: str, fields: str) -> list:
    """The list of annotation entries in ``path`` (each with ``fields``, named in the error)."""
    entries = _read_json(path, layout_help)
    if not isinstance(entries, list):
        raise DataError(f"{path} should hold a list of {{{fields}}} entries, not a {type(entries).__name__}")
    return entries


def _fashioniq_triplets(path: Path, cat: str, needs_target: bool) -> List[Triplet]:
    entries = _read_entries(path, FASHIONIQ_LAYOUT, "candidate, target, captions")
    out = []
    for i, e in enumerate(entries):
        ref = _get(e, "candidate", path, i)
        target = _get(e, "target", path, i) if needs_target else _get_optional(e, "target", path, i)
        captions = _get(e, "captions", path, i, list)
        if not all(isinstance(c, str) for c in captions):
            raise DataError(f"{path}, entry {i}: 'captions' should be a list of strings")
        out.append(Triplet(f"{cat}/{i}", ref, target, tuple(captions), cat))
    return out


def _cirr_triplets(path: Path, needs_target: bool) -> List[Triplet]:
    entries = _read_entries(path, CIRR_LAYOUT, "pairid, reference, target_hard, caption, img_set")
    out = []
    for i, e in enumerate(entries):
        pairid = _get(e, "pairid", path, i, (int, str))
        ref = _get(e, "reference", path, i)
        target = (_get(e, "target_hard", path, i) if needs_target
                  else _get_optional(e, "target_hard", path, i))
        caption = _get(e, "caption", path, i)
        members = _get(_get(e, "img_set", path, i, dict), "members", path, i, list, prefix="img_set.")
        out.append(Triplet(str(pairid), ref, target, (caption,), CIRR_CATEGORY, tuple(members)))
    return out


def _get(entry, key: str, path: Path, index: int, kind=str, prefix: str = ""):
    """``entry[key]``, checked to exist and to be of ``kind``, else a DataError naming file/index/key."""
    if not isinstance(entry, dict):
        raise DataError(f"{path}, entry {index}: expected a JSON object, got {type(entry).__name__}")
    if key not in entry:
        raise DataError(f"{path}, entry {index}: missing required key {prefix + key!r}")
    value = entry[key]
    if not isinstance(value, kind) or isinstance(value, bool):
        names = "/".join(k.__name__ for k in (kind if isinstance(kind, tuple) else (kind,)))
        raise DataError(f"{path}, entry {index}: {prefix + key!r} should be {names}, "
                        f"got {type(value).__name__}")
    return value


def _get_optional(entry, key: str, path: Path, index: int) -> Optional[str]:
    return _get(entry, key, path, index) if isinstance(entry, dict) and entry.get(key) is not None else None


def _read_id_list(path: Path) -> List[str]:
    value = _read_json(path, FASHIONIQ_LAYOUT)
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise DataError(f"{path} should hold a list of image ids (strings)")
    return value


def _read_json(path: Path, layout_help: str):
    """Parse a JSON file; DataError if it is missing (with the expected layout) or malformed."""
    return read_json(path, "annotation file", DataError,
                     missing=f"missing annotation file {path.name}: expected it at {path}; {one_line(layout_help)}")


def find_cirr_annotations(root: Path) -> Optional[Path]:
    """Where a CIRR folder keeps its ``captions/`` and ``image_splits/``: the folder itself or its ``cirr/``
    (None when neither has them)."""
    return next((d for d in (root, root / "cirr") if (d / "captions").is_dir() or (d / "image_splits").is_dir()),
                None)


def cirr_annotation_dir(root: Path) -> Path:
    """:func:`find_cirr_annotations`, or a DataError naming both places and the layout."""
    ann = find_cirr_annotations(root)
    if ann is None:
        raise DataError(f"no CIRR annotations in {root}: neither {root / 'captions'} nor "
                        f"{root / 'cirr' / 'captions'} exists; {one_line(CIRR_LAYOUT)}")
    return ann


def _check_splits(splits, valid: Tuple[str, ...], dataset: str) -> List[str]:
    names = [splits] if isinstance(splits, str) else list(splits)
    bad = [s for s in names if s not in valid]
    if bad or not names:
        raise ConfigError(f"unknown {dataset} split {', '.join(map(repr, bad)) or '(none given)'}; "
                          f"valid {dataset} splits: {', '.join(valid)}")
    return list(dict.fromkeys(names))


def check_root(root: PathLike, dataset: str) -> Path:
    root = Path(root).expanduser()
    holds = {"FashionIQ": "captions/cap.<category>.<split>.json and image_splits/",
             "CIRR": "captions/cap.rc2.<split>.json and image_splits/ (in it or in its cirr/)"}[dataset]
    fix = f"point it at the {dataset} folder that holds {holds}"
    if not root.exists():
        raise DataError(f"{dataset} root {root} does not exist; {fix}")
    if not root.is_dir():
        raise DataError(f"{dataset} root {root} is not a folder; {fix}")
    return root


def _subdir(parent: Path, name: str, layout_help: str) -> Path:
    d = parent / name
    if not d.is_dir():
        raise DataError(f"no {name}/ folder in {parent}; {one_line(layout_help)}")
    return d


# --------------------------------------------------------------------------- images


def scan_fashioniq_images(images_dir: Path) -> Dict[str, str]:
    """``{image id: file name}`` of the images in ``images_dir`` (one listing, not a stat per id)."""
    if not images_dir.is_dir():
        return {}
    rank = {ext: r for r, ext in enumerate(IMAGE_EXTENSIONS)}
    found: Dict[str, Tuple[int, str]] = {}
    with os.scandir(images_dir) as it:
        for entry in it:
            stem, ext = os.path.splitext(entry.name)
            r = rank.get(ext.lower())
            if r is not None and (stem not in found or r < found[stem][0]):
                found[stem] = (r, entry.name)
    return {stem: name for stem, (_, name) in found.items()}


def resolve_cirr_images(rel_paths: Dict[str, str], bases: List[Path]) -> Dict[str, Path]:
    """Each image at its relative path under the first base that holds it; one listing per folder."""
    listings: Dict[Path, set] = {}

    def names_in(folder: Path) -> set:
        if folder not in listings:
            try:
                listings[folder] = set(os.listdir(folder))
            except OSError:
                listings[folder] = set()
        return listings[folder]

    paths = {}
    for name, rel in rel_paths.items():
        rel = PurePosixPath(rel)
        for base in bases:
            if rel.name in names_in(base / rel.parent):
                paths[name] = base / rel
                break
    return paths


def _drop_missing(splits: Dict[str, Split], image_paths: Dict[str, Path], where: str,
                  example: Callable[[str], Path], note: str = "") -> None:
    """Drop triplets and gallery images without an image file; warn once with the counts."""
    n_trip = n_trip_dropped = n_gal = n_gal_dropped = 0
    for s in splits.values():
        needed = s.image_ids()
        if needed and not any(i in image_paths for i in needed):
            raise DataError(f"no image of the {s.name!r} split found: expected them under {where}, "
                            f"e.g. {example(needed[0])}")
        kept = [t for t in s.triplets
                if t.reference in image_paths and (t.target is None or t.target in image_paths)]
        n_trip += len(s.triplets)
        n_trip_dropped += len(s.triplets) - len(kept)
        if len(kept) < len(s.triplets):
            s.n_annotated = len(s.triplets)
        s.triplets = kept
        for cat, ids in s.gallery.items():
            present = [i for i in ids if i in image_paths]
            n_gal += len(ids)
            n_gal_dropped += len(ids) - len(present)
            s.gallery[cat] = present
    if n_trip_dropped or n_gal_dropped:
        log.warning("skipped %d of %d triplets and %d of %d gallery images whose image files are "
                    "missing under %s%s", n_trip_dropped, n_trip, n_gal_dropped, n_gal, where, note)
