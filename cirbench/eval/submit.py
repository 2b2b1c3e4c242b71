"""CIRR test-server submissions from a trained run.

:func:`rank_run` rebuilds a run's method from its ``config.json`` and ``best_model.pt`` (the
weights of the best validation epoch) with :func:`cirbench.runs.build_method`, encodes a split
with the run's backbone (the fine-tuned towers saved with the run, for a method that trains them)
and ranks it exactly as validation does
(:meth:`cirbench.runs.BuiltMethod.evaluate`: cosine similarity, reference excluded, subset
ranking over ``img_set`` members). :func:`submit_cirr` does this for ``test1``
and writes the two files the server takes::

    test1_pred_ranks_recall.json         {"version": "rc2", "metric": "recall", "<pairid>": [top-50 names]}
    test1_pred_ranks_recall_subset.json  {"version": "rc2", "metric": "recall_subset", "<pairid>": [top-3]}

:func:`check_submission` holds them to the structure of the official demo files: the two
header keys, every test1 pairid and nothing else, lists of exactly ``min(50, gallery - 1)``
distinct gallery names without the reference (subset: exactly ``min(3, members - 1)`` distinct
members of the query's ``img_set``, reference excluded), each file under the server's 5 MB.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, Optional, Sequence, Tuple

import torch

from ..data import datasets
from ..data.triplets import CIRR_CATEGORY, Split, eval_text
from ..errors import ConfigError, DataError
from ..files import atomic_write
from ..method import Method
from ..runner import Workspace, attach_towers, build_method
from ..runs import RunDir, RunSpec
from .evaluation import RANKING_DEPTH, EvalResult
from .predictions import (
    CIRR_VERSION,
    HEADER_KEYS,
    SUBSET_DEPTH,
    check_header,
    check_rankings,
    check_subset_rankings,
)

MAX_BYTES = 5_000_000  # the CIRR server's 5 MB limit, read as decimal megabytes (the stricter reading)
FILES = {"recall": "test1_pred_ranks_recall.json", "recall_subset": "test1_pred_ranks_recall_subset.json"}


def read_run(run_dir: Path) -> RunSpec:
    """The spec of a run folder that has saved a best model."""
    folder = RunDir(run_dir)
    spec = folder.read_spec()
    if not folder.best_model_file.is_file():
        raise DataError(f"{folder.path} has no best_model.pt: the run has not finished a validation epoch "
                        "(run `cirbench run` with the same settings first)")
    return spec


def rank_run(run_dir: Path, split_name: str, ws: Optional[Workspace] = None) -> Tuple[Split, EvalResult]:
    """Rank ``split_name`` of the run's dataset with the run's best model (metrics only if it has targets)."""
    spec = read_run(run_dir)
    ws = ws or Workspace(progress=False)
    built = build_method(spec, ws, splits=(split_name,))
    split = built.data.split(split_name)
    if not split.triplets:
        raise DataError(f"the {split_name} split of {spec.dataset} has no queries with images on disk")
    texts = built.text_table(ws, [eval_text(built.data.layout, t) for t in split.triplets])
    towers = attach_towers(built, ws, texts)  # a fine-tuning method: its saved backbone embeds the split
    load_weights(built.method, RunDir(run_dir).best_model_file, spec.method)
    built.method.to(ws.device).eval()
    if towers is not None:
        towers.mark_all_stale()
        towers.refresh()
        texts = towers.texts
    return split, built.evaluate(split, texts)


def load_weights(method: Method, path: Path, name: str) -> None:
    """``best_model.pt`` into ``method``. Buffers whose size depends on the training data (per-triplet
    state) are taken as saved; keys the fresh method lacks are such state too, and ranking never reads them."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:  # a truncated or foreign file: say which
        raise DataError(f"cannot read {path}: {e}") from None
    if not isinstance(state, dict):
        raise DataError(f"{path} does not hold a method's state_dict")
    own = method.state_dict()
    params = {k for k, _ in method.named_parameters()}
    for key in [k for k, v in state.items()
                if k in own and k not in params and torch.is_tensor(v) and torch.is_tensor(own[k])
                and own[k].shape != v.shape]:
        owner, _, attr = key.rpartition(".")
        setattr(method.get_submodule(owner) if owner else method, attr, state[key].clone())
    try:
        result = method.load_state_dict(state, strict=False)
    except RuntimeError as e:
        raise DataError(f"{path} does not fit method {name!r}: {e}") from None
    if result.missing_keys:
        raise DataError(f"{path} lacks weights of {name!r}: {', '.join(result.missing_keys[:5])} "
                        "(saved by another version?)")


def build_submission(split: Split, rankings: Dict[str, Sequence[str]],
                     subset_rankings: Dict[str, Sequence[str]]) -> Dict[str, dict]:
    """The two server files' contents (``recall``: top 50, ``recall_subset``: top 3), pairids in file order."""
    recall = {"version": CIRR_VERSION, "metric": "recall"}
    subset = {"version": CIRR_VERSION, "metric": "recall_subset"}
    for t in split.triplets:
        recall[t.qid] = [x for x in rankings[t.qid] if x != t.reference][:RANKING_DEPTH]
        subset[t.qid] = [x for x in subset_rankings[t.qid] if x != t.reference][:SUBSET_DEPTH]
    return {"recall": recall, "recall_subset": subset}


def encode(obj: dict) -> bytes:
    """Compact JSON, as small as the server format allows."""
    return json.dumps(obj, separators=(",", ":")).encode()


def check_submission(files: Dict[str, dict], split: Split, sizes: Optional[Dict[str, int]] = None) -> None:
    """Raise DataError unless ``files`` (``recall`` / ``recall_subset`` contents) match the official format."""
    if set(files) != set(FILES):
        raise DataError(f"a CIRR submission is two files, {' and '.join(FILES)}; got {', '.join(files) or 'none'}")
    gallery = {CIRR_CATEGORY: split.gallery[CIRR_CATEGORY]}
    for metric, obj in files.items():
        source = FILES[metric]
        check_header(obj, metric, source)
        body = {k: v for k, v in obj.items() if k not in HEADER_KEYS}
        if metric == "recall":
            ranked = check_rankings(body, split.triplets, gallery, source, exact=True)
            with_ref = [t.qid for t in split.triplets if t.reference in ranked[t.qid]]
            if with_ref:
                raise DataError(f"{source}: query {with_ref[0]!r} ranks its own reference; the CIRR protocol "
                                "removes it")
        else:
            check_subset_rankings(body, split.triplets, source, exact=True)
        size = (sizes or {}).get(metric, len(encode(obj)))
        if size > MAX_BYTES:
            raise DataError(f"{source} is {size:,} bytes; the CIRR server takes at most {MAX_BYTES:,}")


def submit_cirr(run_dir: Path, out_dir: Path, ws: Optional[Workspace] = None,
                split_name: str = "test1") -> Dict[str, Path]:
    """Rank CIRR test1 with the run's best model, check the two files and write them to ``out_dir``."""
    spec = read_run(run_dir)
    if datasets.layout_of(spec.dataset) != "cirr":
        raise ConfigError(f"{run_dir} is a {spec.dataset} run; only CIRR has a test server "
                          "(FashionIQ is evaluated on val: `cirbench score`)")
    ws = ws or Workspace(progress=False)
    split, result = rank_run(run_dir, split_name, ws)
    annotated = ws.annotated(spec, split_name)
    skipped = len(annotated.triplets) - len(split.triplets)
    if skipped:
        raise DataError(f"{skipped} of {len(annotated.triplets)} {split_name} queries were skipped because their "
                        "images are missing on disk, and the server needs every pairid; "
                        "`cirbench data check --dataset cirr --root DIR` lists what is missing")
    files = build_submission(split, result.rankings, result.subset_rankings)
    check_submission(files, annotated)
    out_dir = Path(out_dir)
    written = {}
    for metric, obj in files.items():
        data = encode(obj)
        written[metric] = atomic_write(out_dir / FILES[metric], lambda tmp: tmp.write_bytes(data))
    return written
