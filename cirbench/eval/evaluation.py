"""Ranking and Recall@K for composed image retrieval, following CLIP4Cir's ``src/validate.py`` / SPRC.

Two steps, so rankings made anywhere are scored by one piece of code:

1. :func:`topk_rankings` and :func:`cirr_rankings` turn embeddings into ranked image ids
   (chunked ``topk``, the gallery is never fully sorted).
2. :func:`score_fashioniq` and :func:`score_cirr` turn rankings into Recall@K in percent, in
   plain Python. :func:`evaluate` does both and computes its metrics by calling step 2 on the
   rankings it returns, so saved rankings re-score to exactly the same numbers.

Protocol decisions:

- Similarity is cosine: queries and gallery are L2-normalised here (CLIP4Cir normalises both
  the predicted and the index features), so normalised inputs give plain dot products.
- FashionIQ: one gallery per category (``split.gallery[cat]``); the reference stays in the
  gallery unless ``exclude_reference=True``; R@10/R@50 per category, ``average`` = plain mean
  over the categories that have queries, ``Rmean`` = mean of the averaged R@K.
- CIRR: the reference is always dropped from the ranking (``exclude_reference=False`` is an
  error). Masking its score to -inf before ``topk`` gives the same list as CLIP4Cir's removal
  after sorting. ``Rsubset@K``: the query's ``img_set.members`` without the reference, in
  descending score order. ``Avg`` = (R@5 + Rsubset@1) / 2.
- One score matrix for both CIRR rankings: per chunk of queries, one ``queries @ gallery.T``
  gives the top-k and the members' scores (CLIP4Cir filters its sorted gallery). Scoring the
  members with a separate product rounds about 1 ulp differently and can flip Rsubset@1 on a
  near tie, so the subset ranking is always the gallery ranking restricted to the members.
  Members outside the gallery (e.g. an image missing on disk, dropped from the gallery by the
  loader) are left out of the subset ranking, as CLIP4Cir's filter of the gallery would.
- Rsubset needs a subset ranking: :func:`score_cirr` without ``subset_rankings`` reports
  Rsubset@K and Avg as None (not available) instead of reading them off top-50 lists, where a
  target below rank 50 would count as a miss even when it leads its subset.
- Ties: every ranking keeps the gallery's order for equal scores (the earlier gallery entry
  ranks first), in the top-k lists and in the subset ranking alike. ``torch.topk`` promises no
  order for ties (on CPU it does not keep it), so the rows of a chunk whose top ``k + 1`` hold
  equal scores are re-sorted by (score, gallery position), and a row whose k-th and (k+1)-th
  scores tie is re-selected among the columns scoring at least its k-th score (rows without
  ties, nearly all of them on real embeddings, cost nothing extra); members are sorted stably
  in gallery order.
- Table metric (:data:`PRIMARY_METRIC`): FashionIQ average R@10, CIRR Avg. Model selection
  (:data:`SELECTION_METRIC`, the "best epoch"): FashionIQ Rmean (as CLIP4Cir/SPN), CIRR Avg.
  (CLIP4Cir's own CIRR scripts keep the checkpoint with the best arithmetic mean of the seven
  recalls; cirbench uses Avg, the number papers report.)
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F

from ..data.triplets import CIRR_CATEGORY, FASHIONIQ_CATEGORIES, Split, Triplet
from ..errors import ConfigError, DataError

RANKING_DEPTH = 50
FASHIONIQ_KS = (10, 50)
CIRR_KS = (1, 5, 10, 50)
CIRR_SUBSET_KS = (1, 2, 3)

PRIMARY_METRIC = {"fashioniq": ("average", "R@10"), "cirr": ("Avg",)}
SELECTION_METRIC = {"fashioniq": ("average", "Rmean"), "cirr": ("Avg",)}


# ---------------------------------------------------------------------------- step 1: ranking

def _row_index(ids: Sequence[str], image_index: Mapping[str, int]) -> torch.Tensor:
    missing = [i for i in ids if i not in image_index]
    if missing:
        raise DataError(f"no embedding for {len(missing)} image(s), e.g. {missing[0]!r}")
    return torch.tensor([image_index[i] for i in ids], dtype=torch.long)


def _top_columns(scores: torch.Tensor, depth: int) -> torch.Tensor:
    """The ``depth`` best columns of each row, by descending score, equal scores in column order.

    ``torch.topk`` promises no order for ties (on CPU it does not keep column order). Its sorted
    output puts equal scores side by side, so only rows with such a pair are touched: their top
    ``depth + 1`` are re-sorted by (score descending, column ascending), and a row whose
    ``depth``-th and ``depth + 1``-th scores are equal (topk may have picked any of the tied
    columns) is re-selected from every column scoring at least its ``depth``-th score.
    """
    probe = min(depth + 1, scores.shape[1])
    values, cols = scores.topk(probe, dim=1)
    tied = values[:, 1:] == values[:, :-1]
    if probe > 1 and bool(tied.any()):
        rows = tied.any(dim=1).nonzero().squeeze(1)
        sub_cols, order = cols[rows].sort(dim=1)
        order = values[rows].gather(1, order).sort(dim=1, descending=True, stable=True).indices
        cols[rows] = sub_cols.gather(1, order)
        if probe > depth:
            for r in rows[tied[rows, depth - 1]].tolist():
                row = scores[r]
                candidates = (row >= values[r, depth - 1]).nonzero().squeeze(1)   # in column order
                cols[r, :depth] = candidates[row[candidates].sort(descending=True, stable=True).indices[:depth]]
    return cols[:, :depth]


def _rank(queries: torch.Tensor, gallery: torch.Tensor, gallery_ids: Sequence[str], k: int,
          exclude: Optional[Sequence[Optional[str]]], groups: Optional[Sequence[Sequence[str]]],
          chunk_size: int):
    """Top-``k`` lists and, when ``groups`` is given, each query's group ranked by the same scores."""
    if queries.ndim != 2 or gallery.ndim != 2 or queries.shape[1] != gallery.shape[1]:
        raise ValueError(f"expected [Q,D] and [G,D] tensors, got {tuple(queries.shape)} and {tuple(gallery.shape)}")
    if len(gallery_ids) != gallery.shape[0]:
        raise ValueError(f"{len(gallery_ids)} gallery ids for {gallery.shape[0]} gallery rows")
    position = {g: j for j, g in enumerate(gallery_ids)}
    if len(position) != len(gallery_ids):
        raise ValueError("gallery ids are not unique")
    if exclude is not None and len(exclude) != queries.shape[0]:
        raise ValueError(f"{len(exclude)} exclude entries for {queries.shape[0]} queries")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")

    device = gallery.device
    gallery_t = F.normalize(gallery.float(), dim=-1).T
    queries = F.normalize(queries.to(device).float(), dim=-1)
    skip = torch.tensor([-1 if exclude is None or exclude[i] is None else position.get(exclude[i], -1)
                         for i in range(queries.shape[0])], dtype=torch.long, device=device)
    depth = min(k, len(gallery_ids))
    if groups is not None:
        # each group's gallery columns in gallery order (so that equal scores keep it); members
        # outside the gallery are left out, as in CLIP4Cir's subset (a filter of the gallery ranking)
        columns = [sorted({position[m] for m in g if m in position}) for g in groups]
        width = max((len(c) for c in columns), default=0)
        padded = torch.tensor([c + [0] * (width - len(c)) for c in columns], dtype=torch.long, device=device)
        valid = torch.arange(width, device=device) < torch.tensor([len(c) for c in columns], device=device)[:, None]
    top: List[List[str]] = []
    ranked_groups: List[List[str]] = []
    for start in range(0, queries.shape[0], chunk_size):
        stop = start + chunk_size
        scores = queries[start:stop] @ gallery_t      # the one score matrix both rankings use
        if groups is not None and width:
            member_scores = scores.gather(1, padded[start:stop]).masked_fill(~valid[start:stop], float("-inf"))
            order = member_scores.argsort(dim=1, descending=True, stable=True).cpu().tolist()
            ranked_groups.extend([gallery_ids[c[j]] for j in o if j < len(c)]
                                 for o, c in zip(order, columns[start:stop]))
        elif groups is not None:
            ranked_groups.extend([] for _ in range(scores.shape[0]))
        chunk_skip = skip[start:stop]
        rows = (chunk_skip >= 0).nonzero().squeeze(1)
        scores[rows, chunk_skip[rows]] = float("-inf")
        best = _top_columns(scores, depth).cpu().tolist()
        # the masked id can only surface when depth == gallery size: drop it then
        top.extend([gallery_ids[j] for j in row if j != s] for row, s in zip(best, chunk_skip.tolist()))
    return top, ranked_groups


def topk_rankings(queries: torch.Tensor, gallery: torch.Tensor, gallery_ids: Sequence[str], k: int = RANKING_DEPTH,
                  exclude: Optional[Sequence[Optional[str]]] = None, chunk_size: int = 1024) -> List[List[str]]:
    """Top-``k`` gallery ids per query by cosine similarity, best first, equal scores in gallery order.

    ``exclude[i]`` (an id or None) is masked to -inf before ``topk`` and never returned, so the
    list still holds ``k`` ids when the gallery is large enough. Runs on the gallery's device.
    """
    return _rank(queries, gallery, gallery_ids, k, exclude, None, chunk_size)[0]


def cirr_rankings(queries: torch.Tensor, gallery: torch.Tensor, gallery_ids: Sequence[str],
                  triplets: Sequence[Triplet], k: int = RANKING_DEPTH,
                  chunk_size: int = 1024) -> Tuple[Dict[str, List[str]], Dict[str, List[str]]]:
    """CIRR's two rankings per query, ``(top-k, subset)``, both from one score matrix.

    Top-``k``: the gallery without the query's reference, as :func:`topk_rankings`. Subset: the
    query's ``members`` other than the reference that are in the gallery, by descending score,
    equal scores in gallery order, so it is the gallery ranking restricted to the members.
    ``queries`` rows follow ``triplets``.
    """
    if queries.shape[0] != len(triplets):
        raise ValueError(f"{queries.shape[0]} query rows for {len(triplets)} triplets")
    groups = [[m for m in t.members if m != t.reference] for t in triplets]
    top, subset = _rank(queries, gallery, gallery_ids, k, [t.reference for t in triplets], groups, chunk_size)
    return ({t.qid: r for t, r in zip(triplets, top)}, {t.qid: s for t, s in zip(triplets, subset)})


# ---------------------------------------------------------------------------- step 2: scoring

def _check_rankings(triplets: Sequence[Triplet], rankings: Mapping[str, Sequence[str]], what: str = "rankings") -> None:
    if not triplets:
        raise DataError("no queries to score")
    if any(t.target is None for t in triplets):
        raise DataError("cannot score a split without targets (test split?)")
    missing = [t.qid for t in triplets if t.qid not in rankings]
    if missing:
        raise DataError(f"{what} lack {len(missing)} of {len(triplets)} queries, e.g. {missing[0]!r}")


def _recall(hits: int, n: int) -> float:
    return 100.0 * hits / n


def score_fashioniq(triplets: Sequence[Triplet], rankings: Mapping[str, Sequence[str]],
                    ks: Sequence[int] = FASHIONIQ_KS, drop_reference: bool = False) -> dict:
    """FashionIQ Recall@K per category, their plain mean (``average``) and ``Rmean``.

    Rankings are scored as given (reference kept, the default protocol); ``drop_reference=True``
    removes each query's reference first, for predictions made under the "reference excluded" protocol.
    """
    _check_rankings(triplets, rankings)
    by_cat: Dict[str, List[Triplet]] = {}
    for t in triplets:
        by_cat.setdefault(t.category, []).append(t)
    order = [c for c in FASHIONIQ_CATEGORIES if c in by_cat] + [c for c in by_cat if c not in FASHIONIQ_CATEGORIES]
    metrics: dict = {}
    for cat in order:
        hits = dict.fromkeys(ks, 0)
        for t in by_cat[cat]:
            ranked = [x for x in rankings[t.qid] if not (drop_reference and x == t.reference)]
            for k in ks:
                hits[k] += t.target in ranked[:k]
        metrics[cat] = {f"R@{k}": _recall(hits[k], len(by_cat[cat])) for k in ks}
    average = {f"R@{k}": sum(metrics[c][f"R@{k}"] for c in order) / len(order) for k in ks}
    average["Rmean"] = sum(average[f"R@{k}"] for k in ks) / len(ks)
    metrics["average"] = average
    return metrics


def score_cirr(triplets: Sequence[Triplet], rankings: Mapping[str, Sequence[str]],
               subset_rankings: Optional[Mapping[str, Sequence[str]]] = None) -> dict:
    """CIRR R@1/5/10/50, Rsubset@1/2/3 and Avg = (R@5 + Rsubset@1) / 2.

    The reference is dropped from every ranking first. Subset lists keep only the query's
    members (reference removed), in the given order; a member missing from the list is not
    retrieved. Without ``subset_rankings``, Rsubset@K and Avg are None (not available): a subset
    ranking read off top-50 lists counts a target ranked in the subset's top 3 but below rank 50
    as a miss, and a number that low must never pass for the metric.
    """
    _check_rankings(triplets, rankings)
    if subset_rankings is not None:
        _check_rankings(triplets, subset_rankings, "subset rankings")
    hits = dict.fromkeys(CIRR_KS, 0)
    subset_hits = dict.fromkeys(CIRR_SUBSET_KS, 0)
    for t in triplets:
        ranked = [x for x in rankings[t.qid] if x != t.reference]
        for k in CIRR_KS:
            hits[k] += t.target in ranked[:k]
        if subset_rankings is not None:
            members = set(t.members) - {t.reference}
            subset = [x for x in subset_rankings[t.qid] if x in members]
            for k in CIRR_SUBSET_KS:
                subset_hits[k] += t.target in subset[:k]
    n = len(triplets)
    metrics: dict = {f"R@{k}": _recall(hits[k], n) for k in CIRR_KS}
    if subset_rankings is None:
        metrics.update({f"Rsubset@{k}": None for k in CIRR_SUBSET_KS})
        metrics["Avg"] = None
    else:
        metrics.update({f"Rsubset@{k}": _recall(subset_hits[k], n) for k in CIRR_SUBSET_KS})
        metrics["Avg"] = (metrics["R@5"] + metrics["Rsubset@1"]) / 2
    return metrics


def _lookup(metrics: dict, path: Sequence[str]) -> float:
    value = metrics
    for key in path:
        value = value[key]
    return float(value)


def primary_value(layout: str, metrics: dict) -> float:
    """The headline number for tables: FashionIQ average R@10, CIRR Avg."""
    return _lookup(metrics, PRIMARY_METRIC[layout])


def selection_value(layout: str, metrics: dict) -> float:
    """The model-selection ("best epoch") criterion: FashionIQ Rmean, CIRR Avg."""
    return _lookup(metrics, SELECTION_METRIC[layout])


# ---------------------------------------------------------------------------- both steps

@dataclass
class EvalResult:
    """Metrics (percent), the rankings they were computed from, and the protocol used."""

    metrics: dict
    rankings: Dict[str, List[str]]
    subset_rankings: Dict[str, List[str]] = field(default_factory=dict)
    protocol: dict = field(default_factory=dict)


def evaluate(layout: str, split: Split, query_emb: torch.Tensor, image_emb: torch.Tensor,
             image_index: Mapping[str, int], *, exclude_reference: Optional[bool] = None,
             chunk_size: int = 1024) -> EvalResult:
    """Rank the split's gallery for every query and score it with the field's protocol.

    ``query_emb`` rows follow ``split.triplets``; ``image_emb[image_index[id]]`` embeds image ``id``.
    ``exclude_reference``: FashionIQ keeps the reference by default (None/False), True removes
    it; CIRR always removes it (None/True; False raises). On a split without targets
    (e.g. a test split) only the rankings are produced and ``metrics`` is empty.
    """
    triplets = split.triplets
    if query_emb.shape[0] != len(triplets):
        raise ValueError(f"{query_emb.shape[0]} query rows for {len(triplets)} triplets")

    def rank(idx: List[int], gallery_ids: List[str], exclude: bool) -> Dict[str, List[str]]:
        gallery = image_emb[_row_index(gallery_ids, image_index).to(image_emb.device)]
        sel = torch.tensor(idx, dtype=torch.long, device=query_emb.device)
        skip = [triplets[i].reference for i in idx] if exclude else None
        ranked = topk_rankings(query_emb[sel], gallery, gallery_ids, RANKING_DEPTH, skip, chunk_size)
        return {triplets[i].qid: r for i, r in zip(idx, ranked)}

    subset: Dict[str, List[str]] = {}
    if layout == "fashioniq":
        exclude = bool(exclude_reference)
        by_cat: Dict[str, List[int]] = {}
        for i, t in enumerate(triplets):
            by_cat.setdefault(t.category, []).append(i)
        unknown = sorted(set(by_cat) - set(split.gallery))
        if unknown:
            raise DataError(f"split {split.name!r} has queries of categories without a gallery: {unknown}")
        rankings: Dict[str, List[str]] = {}
        for cat, idx in by_cat.items():
            rankings.update(rank(idx, split.gallery[cat], exclude))
        gallery_size = {cat: len(split.gallery[cat]) for cat in by_cat}
        metrics = score_fashioniq(triplets, rankings) if triplets and split.has_targets else {}
        ks = list(FASHIONIQ_KS)
    elif layout == "cirr":
        if exclude_reference is False:
            raise ConfigError("the CIRR protocol always removes the reference from the ranking; "
                              "exclude_reference=False is not supported")
        exclude = True
        if CIRR_CATEGORY in split.gallery:
            gallery_ids = split.gallery[CIRR_CATEGORY]
        elif len(split.gallery) == 1:
            gallery_ids = next(iter(split.gallery.values()))
        else:
            raise DataError(f"CIRR split {split.name!r} needs one gallery, found {list(split.gallery)}")
        gallery = image_emb[_row_index(gallery_ids, image_index).to(image_emb.device)]
        rankings, subset = cirr_rankings(query_emb, gallery, gallery_ids, triplets, RANKING_DEPTH, chunk_size)
        gallery_size = len(gallery_ids)
        metrics = score_cirr(triplets, rankings, subset) if triplets and split.has_targets else {}
        ks = list(CIRR_KS)
    else:
        raise ConfigError(f"unknown dataset layout {layout!r} (expected 'fashioniq' or 'cirr')")

    protocol = {"dataset_layout": layout, "split": split.name, "reference_in_gallery": not exclude,
                "similarity": "cosine", "ranking_depth": RANKING_DEPTH, "ks": ks,
                "n_queries": len(triplets), "gallery_size": gallery_size}
    if split.n_annotated is not None and split.n_annotated > len(triplets):  # images missing on disk
        protocol["n_annotated_queries"] = split.n_annotated
    if layout == "cirr":
        protocol["subset_ks"] = list(CIRR_SUBSET_KS)
    return EvalResult(metrics, rankings, subset, protocol)
