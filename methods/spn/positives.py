"""Generated training triplets from unlabelled image pairs (SPN's "scaling positives").

1. **Pool** (:func:`triplet_pool`): the images of the training triplets, references and targets,
   deduplicated — SPN4CIR pairs ``CIRDataset.imagenames`` of its train split (``zscir/data_utils_gen.py``,
   ``zscir/get_cir_data.py``), which lists each reference and target once, not the split's image list;
   pixel-identical copies are then merged into one entry (``zscir/deduplicate_images.py`` writes
   ``optimized_images.json``). Here copies are images whose pairing embeddings are identical (cosine >=
   ``DUPLICATE_COSINE``: the same pixels give the same embedding), so an image is never paired with a
   copy of itself.
2. **Pairing by a similarity-rank window** (:func:`pair_by_window`). For a reference, every other pool
   image is ranked by cosine similarity of image embeddings (rank 0 = its nearest other image) and
   ``per_reference`` targets are drawn uniformly, without replacement, from ranks ``[lo, hi)``: not so
   close that the pair is a near-copy, not so far that it is unrelated. Bounds below 1 are fractions
   of the candidates, 1 and above absolute ranks.
3. **Modification text** from a template over the two captions (:data:`TEMPLATES`), one drawn per
   triplet. A text the text encoder cannot hold (longer than its context) falls back to the target
   caption alone, as the SPN code does when CLIP's tokenizer rejects a text.
4. Optionally keep a random subset of ``max_triplets``.

Each generated triplet has one text, as in SPN4CIR (FashionIQ with template "{tgt}": ``captions`` =
[target caption]). cirbench's FashionIQ triplets hold two captions, so a generated FashionIQ triplet
carries its one text twice; SPN trains on that text alone (``cirbench_methods.spn``, never
"A and A"). The category of a FashionIQ triplet is its reference's. :func:`write_official` writes
the triplets in the dataset's official JSON layout, with the one text.
"""
from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

from cirbench.data.triplets import CIRR_CATEGORY, Triplet
from cirbench.errors import ConfigError

TEMPLATES: Tuple[str, ...] = ("{tgt} instead of {ref}", "Unlike {ref}, I want {tgt}", "{tgt}")
DUPLICATE_COSINE = 1 - 1e-6


def fill(template: str, ref: str, tgt: str) -> str:
    """A template with the reference and target captions filled in."""
    return template.format(ref=ref.strip(), tgt=tgt.strip())


def parse_templates(spec: str) -> Tuple[int, ...]:
    """``"0,1"`` -> (0, 1): indices into :data:`TEMPLATES`, a clear error otherwise."""
    try:
        out = tuple(int(x) for x in str(spec).replace(" ", "").split(",") if x != "")
    except ValueError:
        out = ()
    if not out or any(i < 0 or i >= len(TEMPLATES) for i in out):
        listed = "; ".join(f"{i}: {t!r}" for i, t in enumerate(TEMPLATES))
        raise ConfigError(f"templates must be comma-separated indices into the templates ({listed}); got {spec!r}")
    return out


def compose_text(ref: str, tgt: str, templates: Sequence[int], rng: random.Random,
                 fits: Optional[Callable[[str], bool]] = None) -> Tuple[str, bool]:
    """One modification text from a template drawn from ``templates``; returns (text, fell_back):
    a text ``fits`` rejects is replaced by the target caption alone."""
    text = fill(TEMPLATES[rng.choice(list(templates))], ref, tgt)
    if fits is not None and not fits(text) and text != tgt.strip():
        return tgt.strip(), True
    return text, False


def window_bounds(n_others: int, low: float, high: float) -> Tuple[int, int]:
    """Rank bounds ``[lo, hi)`` among ``n_others`` candidates: values below 1 are fractions of
    ``n_others``, 1 and above absolute ranks. The window always holds at least one candidate."""
    rank = lambda v: v * n_others if v < 1 else v  # noqa: E731
    if low < 0 or rank(high) <= rank(low):
        raise ConfigError(f"the rank window needs 0 <= window_low < window_high (values below 1 are fractions "
                          f"of the {n_others} candidates, 1 and above ranks); got {low}, {high}")
    lo = min(int(rank(low)), max(n_others - 1, 0))
    hi = min(max(int(round(rank(high))), lo + 1), n_others)
    return lo, hi


def triplet_pool(triplets: Sequence[Triplet]) -> Tuple[List[str], Dict[str, str]]:
    """The images SPN pairs: every reference and target of ``triplets`` once (sorted), and the
    category of each (that of the first triplet naming it)."""
    categories: Dict[str, str] = {}
    for t in triplets:
        for image in (t.reference, t.target):
            if image is not None:
                categories.setdefault(image, t.category)
    return sorted(categories), categories


def duplicate_groups(embed: Tensor, threshold: float = DUPLICATE_COSINE, chunk: int = 1024) -> Tensor:
    """For each row, the index of the first row whose embedding is identical to it (cosine >=
    ``threshold``; itself when it has no earlier copy). Rows with equal values are copies."""
    x = F.normalize(embed.float(), dim=-1)
    n = len(x)
    out = torch.arange(n, device=x.device)
    for s in range(0, n, chunk):
        rows = out[s:s + chunk]
        same = (x[s:s + chunk] @ x.t()) >= threshold
        same &= torch.arange(n, device=x.device)[None, :] <= rows[:, None]  # earlier rows (and itself)
        has = same.any(1)
        out[s:s + chunk] = torch.where(has, same.int().argmax(1), rows)  # argmax: the first True
    return out


def representatives(embed: Tensor, threshold: float = DUPLICATE_COSINE, chunk: int = 1024) -> Tensor:
    """Boolean mask: True for the first image of every group of identical embeddings."""
    groups = duplicate_groups(embed, threshold, chunk)
    return groups == torch.arange(len(groups), device=groups.device)


def pair_by_window(embed: Tensor, sources: Sequence[int], low: float, high: float, per_reference: int = 1,
                   seed: int = 0, chunk: int = 512) -> List[Tuple[int, int, int]]:
    """``(reference, target, rank)`` index pairs into ``embed``: for each source row, ``per_reference``
    targets drawn uniformly without replacement from similarity ranks ``[lo, hi)`` among the other rows.
    The source itself is never a candidate."""
    n = len(embed)
    if n < 2 or not len(sources):
        return []
    lo, hi = window_bounds(n - 1, low, high)
    k = min(per_reference, hi - lo)
    x = F.normalize(embed.float(), dim=-1)
    gen = torch.Generator().manual_seed(seed)
    sources = torch.as_tensor(list(sources), dtype=torch.long)
    out: List[Tuple[int, int, int]] = []
    for s in range(0, len(sources), chunk):
        src = sources[s:s + chunk]
        sims = x[src] @ x.t()
        sims[torch.arange(len(src)), src] = float("-inf")  # never the image itself
        order = sims.topk(hi, dim=1).indices  # ranks 0..hi-1, most similar first
        pick = torch.rand(len(src), hi - lo, generator=gen).argsort(dim=1)[:, :k] + lo
        targets = order.gather(1, pick)
        for i, row in enumerate(src.tolist()):
            out.extend((row, int(t), int(r)) for t, r in zip(targets[i], pick[i]))
    return out


@dataclass
class Generated:
    """Generated triplets and what made them (written to ``summary.json``)."""

    triplets: List[Triplet]
    captions: Dict[str, List[str]]
    summary: dict = field(default_factory=dict)


def generate(layout: str, pool: Sequence[str], categories: Dict[str, str], embed: Tensor,
             captions: Dict[str, List[str]], references: Optional[Sequence[str]], *, low: float, high: float,
             templates: Sequence[int], per_reference: int = 1, max_triplets: int = 0, seed: int = 0,
             fits: Optional[Callable[[str], bool]] = None) -> Generated:
    """Generated triplets over the images ``pool`` (rows of ``embed``), see the module docstring.

    ``categories`` maps an image to its FashionIQ category; ``references`` restricts which images
    serve as references (``None``: every pool image); ``captions[id][0]`` is an image's caption.
    """
    ids = [i for i in pool if i in captions]
    n_captioned = len(ids)
    index = {i: r for r, i in enumerate(pool)}
    feats = embed[[index[i] for i in ids]] if ids else embed[:0]
    keep = representatives(feats) if ids else torch.zeros(0, dtype=torch.bool)
    ids = [i for i, k in zip(ids, keep.tolist()) if k]
    feats = feats[keep]
    row = {i: r for r, i in enumerate(ids)}
    wanted = ids if references is None else sorted({r for r in references if r in row}, key=row.get)
    pairs = pair_by_window(feats, [row[r] for r in wanted], low, high, per_reference, seed)
    rng = random.Random(f"spn-positives/{seed}")
    if max_triplets and len(pairs) > max_triplets:
        pairs = sorted(rng.sample(pairs, max_triplets))
    triplets, fell_back, too_long = [], 0, 0
    for n, (a, b, _) in enumerate(pairs):
        ref, tgt = ids[a], ids[b]
        text, back = compose_text(captions[ref][0], captions[tgt][0], templates, rng, fits)
        fell_back += back
        too_long += bool(fits is not None and not fits(text))  # even the target caption alone
        if layout == "fashioniq":
            cat = categories[ref]
            triplets.append(Triplet(f"{cat}/spn-{n}", ref, tgt, (text, text), cat))
        else:
            triplets.append(Triplet(f"spn-{n}", ref, tgt, (text,), CIRR_CATEGORY, (ref, tgt)))
    lo, hi = window_bounds(max(len(ids) - 1, 0), low, high) if len(ids) > 1 else (0, 0)
    summary = {"pool": len(pool), "captioned": n_captioned, "duplicates_merged": n_captioned - len(ids),
               "references": len(wanted), "rank_window": [lo, hi], "window": [low, high],
               "per_reference": per_reference, "triplets": len(triplets),
               "templates": [TEMPLATES[i] for i in templates], "texts_fell_back_to_target": fell_back,
               "target_captions_too_long": too_long, "texts": len(triplets)}
    return Generated(triplets, {i: captions[i] for i in ids}, summary)


def write_official(layout: str, generated: Generated, folder: Path) -> List[Path]:
    """Write generated triplets in the official layout under ``folder`` (``captions/cap.<cat>.train.json``
    or ``captions/cap.rc2.train.json``; one text per triplet), with ``image_captions.json`` (readable by
    the ``file`` captioner) and ``summary.json``."""
    folder = Path(folder)
    (folder / "captions").mkdir(parents=True, exist_ok=True)
    written = []
    if layout == "fashioniq":
        by_cat: Dict[str, list] = {}
        for t in generated.triplets:
            by_cat.setdefault(t.category, []).append({"candidate": t.reference, "target": t.target,
                                                      "captions": [t.captions[0]]})
        files = {folder / "captions" / f"cap.{c}.train.json": v for c, v in sorted(by_cat.items())}
    else:
        entries = [{"pairid": n, "reference": t.reference, "target_hard": t.target, "target_soft": {t.target: 1.0},
                    "caption": t.captions[0], "img_set": {"id": -1, "members": list(t.members)}}
                   for n, t in enumerate(generated.triplets)]
        files = {folder / "captions" / "cap.rc2.train.json": entries}
    files[folder / "image_captions.json"] = generated.captions
    files[folder / "summary.json"] = generated.summary
    for path, value in files.items():
        path.write_text(json.dumps(value, indent=1) + "\n")
        written.append(path)
    return written


__all__ = ["DUPLICATE_COSINE", "TEMPLATES", "Generated", "compose_text", "duplicate_groups", "fill", "generate",
           "pair_by_window", "parse_templates", "representatives", "triplet_pool", "window_bounds",
           "write_official"]
