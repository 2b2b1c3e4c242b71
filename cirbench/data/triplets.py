"""The data model every loader produces and every other part of cirbench consumes.

A loader (FashionIQ, CIRR, or the generated ``shapes`` data, which is written in those same
official layouts) turns a folder into a :class:`CIRDataset`: per split, a list of
:class:`Triplet` and the gallery of image ids to rank, plus where each image lives on disk.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Tuple

FASHIONIQ_CATEGORIES = ("dress", "shirt", "toptee")
CIRR_CATEGORY = "cirr"


@dataclass(frozen=True)
class Triplet:
    """One query (reference image + modification text) and its answer.

    ``qid`` is stable and matches the prediction formats: ``"<category>/<index>"`` for
    FashionIQ (index = position in ``cap.<category>.<split>.json``), the ``pairid`` (as a
    string) for CIRR. ``captions`` holds FashionIQ's two captions or CIRR's single one.
    ``members`` is CIRR's ``img_set.members`` (reference included, as in the files).
    ``target`` is ``None`` on test splits.
    """

    qid: str
    reference: str
    target: Optional[str]
    captions: Tuple[str, ...]
    category: str
    members: Tuple[str, ...] = ()

    def replace(self, **changes) -> "Triplet":
        return dataclasses.replace(self, **changes)


@dataclass
class Split:
    """Triplets of one split plus the gallery to rank, per category.

    FashionIQ galleries are per category (``split.<cat>.<split>.json``); CIRR has one gallery
    under the key ``"cirr"``.
    """

    name: str
    triplets: List[Triplet]
    gallery: Dict[str, List[str]]
    #: how many triplets the annotation files list, when some were dropped (their images are missing)
    n_annotated: Optional[int] = None

    @property
    def has_targets(self) -> bool:
        return all(t.target is not None for t in self.triplets)

    def image_ids(self) -> List[str]:
        """Every image the split needs (references, targets, gallery), sorted and unique."""
        ids = set()
        for t in self.triplets:
            ids.add(t.reference)
            if t.target is not None:
                ids.add(t.target)
        for g in self.gallery.values():
            ids.update(g)
        return sorted(ids)


@dataclass
class CIRDataset:
    """A dataset in one of the two official layouts (``layout`` is ``fashioniq`` or ``cirr``)."""

    name: str
    layout: str
    root: Path
    splits: Dict[str, Split]
    image_paths: Dict[str, Path] = field(default_factory=dict)

    @property
    def categories(self) -> List[str]:
        first = next(iter(self.splits.values()))
        return list(first.gallery)

    def split(self, name: str) -> Split:
        if name not in self.splits:
            raise KeyError(f"dataset {self.name!r} has no split {name!r} (has: {', '.join(self.splits)})")
        return self.splits[name]


def _strip(caption: str) -> str:
    return caption.strip(".?, ")


def fashioniq_eval_text(captions: Tuple[str, ...]) -> str:
    """FashionIQ evaluation caption (CLIP4Cir/SPRC): ``"<C1> and <c2>"``, each stripped of '.?, '."""
    c1, c2 = captions[0], captions[1]
    return f"{_strip(c1).capitalize()} and {_strip(c2)}"


def fashioniq_train_texts(captions: Tuple[str, ...]) -> Tuple[str, str, str, str]:
    """The four training captions CLIP4Cir draws from uniformly: c1+c2, c2+c1, c1, c2."""
    c1, c2 = captions[0], captions[1]
    return (
        f"{_strip(c1).capitalize()} and {_strip(c2)}",
        f"{_strip(c2).capitalize()} and {_strip(c1)}",
        _strip(c1).capitalize(),
        _strip(c2).capitalize(),
    )


def eval_text(layout: str, triplet: Triplet) -> str:
    """The one modification text a query is evaluated with."""
    if layout == "fashioniq":
        return fashioniq_eval_text(triplet.captions)
    return triplet.captions[0]


def train_texts(layout: str, triplet: Triplet) -> Tuple[str, ...]:
    """The modification texts training draws from at random for this triplet."""
    if layout == "fashioniq":
        return fashioniq_train_texts(triplet.captions)
    return (triplet.captions[0],)
