"""Label noise for training triplets, following the protocol of TME (CVPR 2025, reused by HABIT
and ConeSep), made honest.

Protocol (``kind="mixed"``): pick ``n = round(rate * N)`` triplets uniformly at random, split
them into thirds with ``np.array_split`` (the first third gets reference noise, the second text
noise, the third target noise) and, within each third, permute that field among those triplets.
Single-type noise (``reference``, ``text``, ``target``) gives every chosen triplet that type;
``text`` moves a triplet's whole caption tuple (FashionIQ's two captions together). ``partial``
(FashionIQ only: it needs two captions per triplet) replaces one of the two captions, chosen at
random, by the chosen caption of another noisy triplet.

Choices this module makes (the papers leave them open):

* The chosen triplets stay in random order before being split into thirds, so each third is a
  uniform random subset; thirds of a sorted selection would follow the file order (e.g.
  FashionIQ's dress/shirt/toptee blocks).
* Permutations are derangements (drawn uniformly by rejection), so no triplet keeps its own
  value by construction. Repeated values can still leave a triplet unchanged (two triplets with
  the same reference image or the same text) or give it ``reference == target``; each such
  triplet swaps its new value with a random member of its group for which the swap leaves both
  valid. When no such member exists (a group of one, all-equal values) the value is re-drawn
  uniformly from the whole input pool of that field (all references, all caption tuples, all
  captions, all targets), excluding invalid values; that triplet's value then no longer comes
  from its third, which is the price of honesty. If even the pool has no valid value, noise is
  impossible and ConfigError is raised.
* So every triplet marked noisy really differs from its original in its type's field, and in
  nothing else; reference/target noise never yields ``reference == target`` (text and partial
  noise leave both images untouched); a partial-noise caption never equals either of the
  triplet's own captions.
* Randomness comes only from ``np.random.default_rng(seed)``: the noise seed is independent of
  any training seed and of global random state, so the same noisy set can be trained with
  several training seeds (cirbench's default, ``--noise-seed 0``: the spread over training
  seeds is the training's alone).
* ``--noise-seed same`` (``noise: {seed: same}``; resolved per cell by :meth:`cirbench.grid.Grid.cells`)
  draws each noisy cell's noise with its training seed, as HABIT does, so the spread over seeds
  includes the noise draw. What HABIT's public code does (Lee-zixu/HABIT, ``train.py`` and
  ``datasets.py``): ``random.seed(args.seed)`` (the training seed, default 42; NumPy and torch get
  it too) runs before the dataset is built, and ``shuffle()`` then draws the noise from Python's
  global ``random``: ``random.sample`` of ``int(rate·N)`` triplets (floor, where cirbench rounds),
  thirds cut at ``int(n/3)`` and ``int(2n/3)``, each third's field permuted by ``random.shuffle``
  (a plain permutation, so some "noisy" triplets keep their own value). The noisy set thus
  changes with the training seed (TME's own code was not available to check). ``same``
  reproduces that coupling, not HABIT's exact draws (another generator, and the honest
  derangements above).

Only training triplets may be corrupted; choosing them is the caller's job (triplets without a
target, i.e. test triplets, are refused). The manifest records every triplet's original and
noisy fields, type and ``is_noisy``, so noise detection (AUROC/AP of a method's clean
probability) can be scored against it.
"""
from __future__ import annotations

import gc
import logging
import math
import numbers
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence

import numpy as np

from ..errors import ConfigError, DataError
from ..files import read_json, write_json
from .loaders import load_dataset
from .triplets import Triplet

log = logging.getLogger("cirbench")

MANIFEST_VERSION = 1


@dataclass(frozen=True)
class NoiseType:
    """A kind of label noise: ``protocol`` is the short form each manifest records, ``description``
    the line ``cirbench list noise`` and the robustness tables show."""

    name: str
    protocol: str
    description: str


#: Every noise type, by name: the one list the CLI choices, ``list noise`` and the tables read.
NOISE_TYPES: Dict[str, NoiseType] = {t.name: t for t in (
    NoiseType("mixed", "TME thirds (reference/text/target)",
              "TME protocol: round(rate·N) training triplets, in thirds with shuffled references / texts / targets"),
    NoiseType("reference", "reference images permuted among the noisy triplets",
              "round(rate·N) training triplets with shuffled reference images"),
    NoiseType("text", "modification texts (all captions together) permuted among the noisy triplets",
              "round(rate·N) training triplets with shuffled modification texts"),
    NoiseType("target", "target images permuted among the noisy triplets",
              "round(rate·N) training triplets with shuffled target images"),
    NoiseType("partial", "one of two captions replaced by a caption of another noisy triplet",
              "round(rate·N) training triplets with one of their two captions (FashionIQ) replaced by "
              "another triplet's"),
)}


@dataclass
class NoiseResult:
    """Noisy triplets (same order and qids as the input) and what was done to them."""

    triplets: List[Triplet]
    is_noisy: np.ndarray
    types: List[Optional[str]]
    manifest: dict


def inject_noise(triplets: Sequence[Triplet], rate: float, kind: str = "mixed",
                 seed: int = 0) -> NoiseResult:
    """Corrupt ``round(rate * N)`` of the training ``triplets`` (see the module docstring)."""
    rate, kind, seed = _check_args(rate, kind, seed)
    with _gc_paused():  # ~4 small objects per triplet, no cycles: collections only cost time
        return _inject(triplets, rate, kind, seed)


def _inject(triplets: Sequence[Triplet], rate: float, kind: str, seed: int) -> NoiseResult:
    triplets = list(triplets)
    _check_triplets(triplets, kind)
    n_total = len(triplets)
    n = int(round(rate * n_total))
    rng = np.random.default_rng(seed)
    chosen = rng.permutation(n_total)[:n]  # random order: the thirds are random subsets too
    if kind == "mixed":
        groups = list(zip(("reference", "text", "target"), np.array_split(chosen, 3)))
    else:
        groups = [(kind, chosen)]

    noisy = list(triplets)
    types: List[Optional[str]] = [None] * n_total
    is_noisy = np.zeros(n_total, dtype=bool)
    for t, idx in groups:
        if len(idx):
            _CORRUPT[t](rng, triplets, idx, noisy)
        is_noisy[idx] = True
        for i in idx.tolist():
            types[i] = t

    n_noisy = int(is_noisy.sum())  # == n: every chosen triplet really changed (or we raised)
    manifest = {
        "version": MANIFEST_VERSION,
        "protocol": NOISE_TYPES[kind].protocol,
        "type": kind,
        "rate": rate,
        "seed": seed,
        "n_triplets": n_total,
        "n_noisy": n_noisy,
        "realised_rate": n_noisy / n_total if n_total else 0.0,
        "counts": {t: int(len(idx)) for t, idx in groups},
        "triplets": [
            {"qid": o.qid, "is_noisy": flag, "type": ty, "original": _fields(o), "noisy": _fields(c)}
            for o, c, ty, flag in zip(triplets, noisy, types, is_noisy.tolist())
        ],
    }
    log.debug("label noise %s at rate %g (seed %d): %d of %d annotated training triplets corrupted, "
             "realised rate %.4f", kind, rate, seed, n_noisy, n_total, manifest["realised_rate"])
    return NoiseResult(noisy, is_noisy, types, manifest)


def save_manifest(manifest: dict, path) -> None:
    """Write ``manifest`` as JSON, atomically."""
    write_json(path, manifest, indent=None, ensure_ascii=False)


def load_manifest(path) -> dict:
    """Read a manifest written by :func:`save_manifest`; DataError if missing or malformed."""
    manifest = read_json(path, "noise manifest", DataError)
    if not isinstance(manifest, dict) or not isinstance(manifest.get("triplets"), list):
        raise DataError(f"{path} is not a cirbench noise manifest (no 'triplets' list)")
    if manifest.get("version") != MANIFEST_VERSION:
        raise DataError(f"{path}: unsupported noise manifest version {manifest.get('version')!r} "
                        f"(this cirbench reads version {MANIFEST_VERSION})")
    return manifest


def manifest_from_annotations(layout: str, annotations_root, rate: float, kind: str = "mixed",
                              seed: int = 0) -> dict:
    """The manifest of noise on the ``train`` split of annotation files alone (no images needed).

    Triplets are those of the annotation files: a run that drops triplets whose images are
    missing sees a different N, hence a different draw, unless it injects noise before dropping.
    """
    _check_args(rate, kind, seed)
    dataset = load_dataset(layout, annotations_root, splits=("train",), require_images=False)
    manifest = inject_noise(dataset.split("train").triplets, rate, kind, seed).manifest
    return {"version": manifest.pop("version"), "dataset": layout, "split": "train", **manifest}


# --------------------------------------------------------------------------- validation


def _check_args(rate, kind, seed):
    if (not isinstance(rate, numbers.Real) or isinstance(rate, bool) or not math.isfinite(rate)
            or not 0 <= rate <= 1):
        raise ConfigError(f"noise rate must be in [0, 1], got {rate!r}")
    if kind not in NOISE_TYPES:
        raise ConfigError(f"unknown noise type {kind!r}; valid types: {', '.join(NOISE_TYPES)}")
    if not isinstance(seed, numbers.Integral) or isinstance(seed, bool) or seed < 0:
        raise ConfigError(f"noise seed must be a non-negative integer, got {seed!r}")
    return float(rate), kind, int(seed)


def _check_triplets(triplets: List[Triplet], kind: str) -> None:
    no_target = next((t for t in triplets if t.target is None), None)
    if no_target is not None:
        raise ConfigError(f"noise is only injected into training triplets, but triplet "
                          f"{no_target.qid!r} has no target (a test split?)")
    if kind == "partial":
        bad = next((t for t in triplets if len(t.captions) != 2), None)
        if bad is not None:
            raise ConfigError(f"partial noise replaces one of a triplet's two captions (FashionIQ), "
                              f"but triplet {bad.qid!r} has {len(bad.captions)}; use 'text' noise "
                              f"for single-caption datasets such as CIRR")


@contextmanager
def _gc_paused():
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _fields(t: Triplet) -> dict:
    return {"reference": t.reference, "target": t.target, "captions": list(t.captions)}


# --------------------------------------------------------------------------- corruption


def _encode(values) -> tuple:
    """Integer codes for hashable ``values`` and the list mapping codes back to values."""
    vocab: Dict[object, int] = {}
    codes = np.fromiter((vocab.setdefault(v, len(vocab)) for v in values), dtype=np.int64)
    return codes, list(vocab)


def _derangement(rng: np.random.Generator, m: int) -> np.ndarray:
    """A uniformly random permutation of ``range(m)`` without fixed points (m >= 2)."""
    identity = np.arange(m)
    while True:  # a permutation is a derangement with probability ~1/e
        p = rng.permutation(m)
        if not (p == identity).any():
            return p


def _shuffle_honestly(rng: np.random.Generator, own: np.ndarray, other: np.ndarray,
                      pool: np.ndarray, field: str, qids: Sequence[str] = (),
                      other_name: str = "") -> np.ndarray:
    """New codes for a group: ``own`` deranged, then repaired so ``new[i]`` is neither ``own[i]``
    nor ``other[i]`` (the value the field must also avoid, e.g. the target for reference noise;
    -1 for none), by a swap within the group that keeps both sides valid or, failing that, a
    re-draw from ``pool``. ``field``, ``qids`` and ``other_name`` only word the error."""
    m = len(own)
    new = own[_derangement(rng, m)] if m > 1 else own.copy()
    for i in np.flatnonzero((new == own) | (new == other)):
        if new[i] != own[i] and new[i] != other[i]:
            continue  # already fixed by an earlier swap
        ok = (new != own[i]) & (new != other[i]) & (own != new[i]) & (other != new[i])
        ok[i] = False
        candidates = np.flatnonzero(ok)
        if len(candidates):
            j = candidates[rng.integers(len(candidates))]
            new[i], new[j] = new[j], new[i]
        else:
            valid = pool[(pool != own[i]) & (pool != other[i])]
            if not len(valid):
                who = f"triplet {qids[i]!r}" if len(qids) else "a triplet"
                also = f" and from its {other_name}" if other_name else ""
                raise ConfigError(f"cannot inject honest {field} noise: no {field} in the training "
                                  f"triplets differs from the own {field} of {who}{also}")
            new[i] = valid[rng.integers(len(valid))]
    return new


def _qids(triplets, idx) -> List[str]:
    return [triplets[i].qid for i in idx.tolist()]


def _with(t: Triplet, **changes) -> Triplet:
    return Triplet(**{**vars(t), **changes})  # dataclasses.replace, 3x faster


def _corrupt_image(field: str, rng, triplets, idx, out) -> None:
    """Reference or target noise; the new image never equals the triplet's other image."""
    codes, vocab = _encode([t.reference for t in triplets] + [t.target for t in triplets])
    refs, targets = codes[: len(triplets)], codes[len(triplets):]
    own, other = (refs, targets) if field == "reference" else (targets, refs)
    new = _shuffle_honestly(rng, own[idx], other[idx], own, field, _qids(triplets, idx),
                            "target" if field == "reference" else "reference")
    for i, c in zip(idx.tolist(), new.tolist()):
        out[i] = _with(triplets[i], **{field: vocab[c]})


def _corrupt_text(rng, triplets, idx, out) -> None:
    codes, vocab = _encode(t.captions for t in triplets)
    new = _shuffle_honestly(rng, codes[idx], np.full(len(idx), -1), codes, "text", _qids(triplets, idx))
    for i, c in zip(idx.tolist(), new.tolist()):
        out[i] = _with(triplets[i], captions=vocab[c])


def _corrupt_partial(rng, triplets, idx, out) -> None:
    codes, vocab = _encode(c for t in triplets for c in t.captions)
    codes = codes.reshape(len(triplets), 2)
    slot = rng.integers(2, size=len(idx))
    own, other = codes[idx, slot], codes[idx, 1 - slot]
    new = _shuffle_honestly(rng, own, other, codes.ravel(), "caption", _qids(triplets, idx), "other caption")
    for i, s, c in zip(idx.tolist(), slot.tolist(), new.tolist()):
        captions = list(triplets[i].captions)
        captions[s] = vocab[c]
        out[i] = _with(triplets[i], captions=tuple(captions))


_CORRUPT = {
    "reference": lambda *a: _corrupt_image("reference", *a),
    "target": lambda *a: _corrupt_image("target", *a),
    "text": _corrupt_text,
    "partial": _corrupt_partial,
}
