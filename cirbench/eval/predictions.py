"""Prediction files: read, validate and score rankings made anywhere.

Formats (the ones runs save in ``predictions/``, and CIRR's official test-server format):

- FashionIQ: ``{"<category>/<index>": [image ids, best first], ...}``, ``<index>`` being the
  0-based position of the triplet in ``captions/cap.<category>.<split>.json``.
- CIRR: ``{"version": "rc2", "metric": "recall", "<pairid>": [image names], ...}``; the subset
  file has ``"metric": "recall_subset"`` and lists the query's ``img_set`` members.

Validation (every problem is a :class:`~cirbench.errors.DataError` saying what is wrong, with
an example): the file is a JSON object without repeated keys; no unknown query ids; no missing
ones (unless ``allow_missing``, for rankings of runs that skipped queries whose images are
missing on disk); every list holds distinct string ids of the split's gallery (the query's
reference is allowed too) and is long enough for R@50: ``min(50, gallery size without the
reference)`` ids. A list that holds its query's reference where the protocol drops it (CIRR
always, FashionIQ with ``exclude_reference``) is scored on what remains, with a note counting
such lists (rejecting them would reject the usual "reference first" mistake instead of
measuring it). Subset lists hold distinct members of the query's
``img_set`` (reference excluded) and at least ``min(3, members)`` of them.

CIRR without a subset file: R@K are scored and Rsubset@K and Avg are None ("n/a" in the table,
null in ``--json``), with a note naming the file to pass. Reading the subset ranking off the
top-50 lists instead would count a target ranked below 50 but first in its ``img_set`` as a
miss, a number far too low that looks like a real one; refusing to score would also withhold
R@K, which the recall file alone gives exactly. Scoring itself is
:func:`cirbench.eval.evaluation.score_fashioniq` / :func:`~cirbench.eval.evaluation.score_cirr`, the
functions runs use, so saved rankings re-score to a run's ``metrics.json`` exactly.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence

from ..data.loaders import load_cirr, load_fashioniq
from ..data.triplets import CIRR_CATEGORY, FASHIONIQ_CATEGORIES, Split, Triplet
from ..errors import ConfigError, DataError
from ..files import read_json
from .evaluation import CIRR_SUBSET_KS, RANKING_DEPTH, score_cirr, score_fashioniq

CIRR_VERSION = "rc2"
CIRR_METRICS = ("recall", "recall_subset")
SUBSET_DEPTH = max(CIRR_SUBSET_KS)
HEADER_KEYS = ("version", "metric")
SUBSET_NOTE = ("Rsubset@1/2/3 and Avg are n/a: they need the subset ranking, which top-50 lists cannot give "
               "(a target below rank 50 may still lead its img_set); pass the \"metric\": \"recall_subset\" file "
               "as --subset-predictions (runs save it as predictions/<split>_recall_subset.json)")


def read_json_object(path: Path, what: str = "predictions") -> dict:
    """A JSON object from ``path``; repeated keys (a query listed twice) are an error."""
    path = Path(path)

    def no_repeats(pairs):
        seen: Dict[str, object] = {}
        for k, v in pairs:
            if k in seen:
                raise DataError(f"{path}: key {k!r} appears twice (each query id once)")
            seen[k] = v
        return seen

    value = read_json(path, f"{what} file", DataError, object_pairs_hook=no_repeats)
    if not isinstance(value, dict):
        raise DataError(f"{path} should hold a JSON object {{query id: [ranked image ids]}}, "
                        f"not a {type(value).__name__}")
    return value


def check_header(obj: Mapping, metric: str, source: str) -> None:
    """CIRR files must say ``"version": "rc2"`` and the expected ``"metric"``."""
    for key, want in (("version", CIRR_VERSION), ("metric", metric)):
        if key not in obj:
            raise DataError(f'{source}: missing "{key}": "{want}" (the official CIRR submission format '
                            f'starts with {{"version": "{CIRR_VERSION}", "metric": "{metric}", ...}})')
        if obj[key] != want:
            hint = ""
            if key == "metric" and obj[key] in CIRR_METRICS:
                hint = (" — is this the other file? Pass the recall_subset file as --subset-predictions"
                        if obj[key] == "recall_subset" else " — pass the recall file as --predictions")
            raise DataError(f'{source}: "{key}" is {obj[key]!r}, expected {want!r}{hint}')


def _example(items: Sequence, n: int = 3) -> str:
    shown = ", ".join(repr(x) for x in list(items)[:n])
    return shown + (", ..." if len(items) > n else "")


def _check_keys(rankings: Mapping[str, object], triplets: Sequence[Triplet], source: str, allow_missing: bool,
                ignore: Sequence[str] = ()) -> None:
    """No unknown query ids; no missing ones unless ``allow_missing`` (and then not all)."""
    qids = {t.qid for t in triplets}
    skip = set(ignore)
    unknown = [k for k in rankings if k not in qids and k not in skip]
    if unknown:
        raise DataError(f"{source}: {len(unknown)} unknown query id(s): {_example(unknown)} "
                        f"(expected ids like {_example([t.qid for t in triplets[:2]], 2)})")
    missing = [t.qid for t in triplets if t.qid not in rankings]
    if missing and (not allow_missing or len(missing) == len(triplets)):
        raise DataError(f"{source}: {len(missing)} of {len(triplets)} queries have no ranking, e.g. "
                        f"{_example(missing)}" + ("" if allow_missing else
                                                  " (--allow-missing scores only the queries given)"))


def _ranked_lists(rankings: Mapping[str, object], triplets: Sequence[Triplet], source: str, allow_missing: bool,
                  noun: str, ignore: Sequence[str] = ()):
    """``(triplet, list, where)`` for each triplet ``rankings`` ranks, after the checks every ranking
    file shares: no unknown or (unless allowed) missing query ids, and each value a list of strings."""
    _check_keys(rankings, triplets, source, allow_missing, ignore)
    for t in triplets:
        if t.qid not in rankings:
            continue
        ranked = rankings[t.qid]
        where = f"{source}, query {t.qid!r}"
        if not isinstance(ranked, list) or not all(isinstance(x, str) for x in ranked):
            raise DataError(f"{where}: expected a list of image {noun} (strings), got {_describe(ranked)}")
        yield t, ranked, where


def check_rankings(rankings: Mapping[str, object], triplets: Sequence[Triplet], gallery: Mapping[str, Sequence[str]],
                   source: str, *, depth: int = RANKING_DEPTH, exact: bool = False,
                   allow_missing: bool = False, ignore: Sequence[str] = ()) -> Dict[str, List[str]]:
    """Validate gallery rankings for ``triplets``; returns ``{qid: list}`` for the triplets ranked.

    ``gallery[t.category]`` is the gallery each query ranks. ``depth``: the ranking depth the
    metrics need (``exact``: lists must hold exactly that many, as the test server wants).
    Keys in ``ignore`` (e.g. another FashionIQ category's queries) are skipped.
    """
    members = {cat: set(ids) for cat, ids in gallery.items()}
    out: Dict[str, List[str]] = {}
    for t, ranked, where in _ranked_lists(rankings, triplets, source, allow_missing, "ids", ignore):
        if len(set(ranked)) != len(ranked):
            dup = sorted({x for x in ranked if ranked.count(x) > 1})
            raise DataError(f"{where}: image id(s) listed twice: {_example(dup)} (each id at most once)")
        outside = [x for x in ranked if x not in members[t.category] and x != t.reference]
        if outside:
            raise DataError(f"{where}: {len(outside)} id(s) not in the {t.category} gallery of this split: "
                            f"{_example(outside)} (wrong split or category?)")
        gallery_t = members[t.category]
        need = min(depth, len(gallery_t) - (t.reference in gallery_t))
        if len(ranked) < need or (exact and len(ranked) != need):
            what = f"exactly {need}" if exact else f"at least {need}"
            raise DataError(f"{where}: {len(ranked)} ids; the protocol needs {what} (R@{depth})")
        out[t.qid] = ranked
    return out


def short_after_dropping(rankings: Mapping[str, Sequence[str]], triplets: Sequence[Triplet],
                         gallery: Mapping[str, Sequence[str]], depth: int = RANKING_DEPTH) -> int:
    """How many lists fall below the ranking depth once their query's reference is dropped."""
    sizes = {cat: len(ids) for cat, ids in gallery.items()}
    return sum(t.reference in rankings[t.qid] and len(rankings[t.qid]) - 1 < min(depth, sizes[t.category] - 1)
               for t in triplets if t.qid in rankings)


def check_subset_rankings(rankings: Mapping[str, object], triplets: Sequence[Triplet], source: str, *,
                          exact: bool = False, allow_missing: bool = False) -> Dict[str, List[str]]:
    """Validate CIRR subset rankings: distinct ``img_set`` members, reference excluded, top 3."""
    subset = {t.qid: [m for m in t.members if m != t.reference] for t in triplets}
    out: Dict[str, List[str]] = {}
    for t, ranked, where in _ranked_lists(rankings, triplets, source, allow_missing, "names"):
        if len(set(ranked)) != len(ranked):
            raise DataError(f"{where}: image name(s) listed twice in the subset ranking")
        outside = [x for x in ranked if x not in subset[t.qid]]
        if outside:
            what = "is the query's reference" if outside[0] == t.reference else "is not in the query's img_set"
            raise DataError(f"{where}: {outside[0]!r} {what}; subset rankings list the img_set members "
                            "other than the reference")
        need = min(SUBSET_DEPTH, len(subset[t.qid]))
        if len(ranked) < need or (exact and len(ranked) != need):
            raise DataError(f"{where}: {len(ranked)} names; the protocol needs "
                            f"{'exactly' if exact else 'at least'} {need} (Rsubset@{SUBSET_DEPTH})")
        out[t.qid] = ranked
    return out


def _describe(value) -> str:
    if isinstance(value, list):
        bad = next((x for x in value if not isinstance(x, str)), None)
        return f"a list holding {type(bad).__name__} {bad!r}"
    return type(value).__name__


# ---------------------------------------------------------------------------- scoring


@dataclass
class Scored:
    """Metrics of a prediction file and what they were computed on."""

    metrics: dict
    layout: str
    split: str
    n_queries: int
    n_missing: int = 0
    notes: List[str] = field(default_factory=list)


def load_annotations(layout: str, annotations: Path, split: str,
                     categories: Optional[Sequence[str]] = None) -> Split:
    """One split's triplets and gallery from the annotation files alone (no images)."""
    if layout == "fashioniq":
        data = load_fashioniq(annotations, splits=split, categories=list(categories) if categories else None,
                              require_images=False)
    elif layout == "cirr":
        if categories:
            raise ConfigError("--categories is for FashionIQ; CIRR has no categories")
        data = load_cirr(annotations, splits=split, require_images=False)
    else:
        raise ConfigError(f"unknown dataset {layout!r}; expected fashioniq or cirr")
    s = data.split(split)
    if not s.has_targets:
        if layout == "cirr":
            raise DataError(f"CIRR's {split} split has no public ground truth: its rankings are scored by the "
                            "CIRR test server. Write the two submission files with "
                            "`cirbench submit cirr --run RUN_DIR --out DIR`, or score --split val")
        raise DataError(f"FashionIQ's {split} split has no public targets; score --split val")
    return s


def score_file(layout: str, annotations: Path, split: str, predictions: Path,
               subset_predictions: Optional[Path] = None, categories: Optional[Sequence[str]] = None,
               exclude_reference: bool = False, allow_missing: bool = False) -> Scored:
    """Validate and score a prediction file (and CIRR subset file) against the annotations."""
    predictions = Path(predictions)
    data = load_annotations(layout, annotations, split, categories)
    obj = read_json_object(predictions)
    if layout == "fashioniq":
        if subset_predictions is not None:
            raise ConfigError("--subset-predictions is for CIRR (FashionIQ has no subset metric); leave it out")
        if set(HEADER_KEYS) & set(obj):
            raise DataError(f"{predictions} has a {'/'.join(k for k in HEADER_KEYS if k in obj)} key: that is the "
                            "CIRR format; use --dataset cirr")
        chosen = {t.category for t in data.triplets}
        ignore = [k for k in obj if k.partition("/")[0] in set(FASHIONIQ_CATEGORIES) - chosen]
        ranked = check_rankings(obj, data.triplets, data.gallery, str(predictions), allow_missing=allow_missing,
                                ignore=ignore)
        triplets = [t for t in data.triplets if t.qid in ranked]
        metrics = score_fashioniq(triplets, ranked, drop_reference=exclude_reference)
        notes = [f"ignored the {len(ignore)} queries of other categories"] if ignore else []
        if exclude_reference:
            notes += _short_note(ranked, triplets, data.gallery)
    else:
        if exclude_reference:
            raise ConfigError("--exclude-reference is for FashionIQ; the CIRR protocol always drops the reference")
        check_header(obj, "recall", str(predictions))
        body = {k: v for k, v in obj.items() if k not in HEADER_KEYS}
        gallery = {CIRR_CATEGORY: data.gallery[CIRR_CATEGORY]}
        ranked = check_rankings(body, data.triplets, gallery, str(predictions), allow_missing=allow_missing)
        triplets = [t for t in data.triplets if t.qid in ranked]
        subset = None
        notes = _short_note(ranked, triplets, gallery)
        if subset_predictions is not None:
            sub_obj = read_json_object(Path(subset_predictions), "subset predictions")
            check_header(sub_obj, "recall_subset", str(subset_predictions))
            subset = check_subset_rankings({k: v for k, v in sub_obj.items() if k not in HEADER_KEYS}, triplets,
                                           str(subset_predictions))
        else:
            notes.append(SUBSET_NOTE)
        metrics = score_cirr(triplets, ranked, subset)
    n_missing = len(data.triplets) - len(triplets)
    if n_missing:
        notes.append(f"{n_missing} of {len(data.triplets)} queries had no ranking and were left out (--allow-missing)")
    return Scored(metrics, layout, split, len(triplets), n_missing, notes)


def _short_note(ranked, triplets, gallery) -> List[str]:
    n = short_after_dropping(ranked, triplets, gallery)
    return [f"{n} list(s) rank the query's own reference, which the protocol drops: their R@{RANKING_DEPTH} "
            f"is computed on the {RANKING_DEPTH - 1} ids left"] if n else []
