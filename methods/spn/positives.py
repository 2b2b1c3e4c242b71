"""Generated training triplets from unlabelled image pairs (SPN's "scaling positives").

1. **Pool.** Every training image (the train split's galleries) that has a caption; images whose
   frozen embeddings are identical (cosine >= ``DUPLICATE_COSINE``: the same pixels) are merged
   first, so an image is never paired with a copy of itself.
2. **Pairing by a similarity-rank window.** For a reference, every other pool image is ranked by
   cosine similarity of the backbone's image embeddings (rank 0 = its nearest other image) and
   ``per_reference`` targets are drawn uniformly, without replacement, from ranks ``[lo, hi)``:
   not so close that the pair is a near-copy, not so far that it is unrelated. Bounds below 1 are
   fractions of the pool, 1 and above absolute ranks.
3. **Modification text** from a template over the two captions (:data:`TEMPLATES`), one drawn per
   text. A text the text encoder cannot hold (longer than its context) falls back to the target
   caption alone, as the SPN code does when CLIP's tokenizer rejects a text.
4. Optionally keep a random subset of ``max_triplets``.

Triplets come out in cirbench's data model (FashionIQ: two texts from two caption phrasings,
category of the reference; CIRR: one text) and :func:`write_official` writes them in the
dataset's official JSON layout.
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


def representatives(embed: Tensor, threshold: float = DUPLICATE_COSINE, chunk: int = 1024) -> Tensor:
    """Boolean mask: True for the first image of every group of identical embeddings."""
    x = F.normalize(embed.float(), dim=-1)
    keep = torch.ones(len(x), dtype=torch.bool)
    for s in range(0, len(x), chunk):
        sims = x[s:s + chunk] @ x.t()
        rows = torch.arange(s, min(s + chunk, len(x)))
        earlier = torch.arange(len(x))[None, :] < rows[:, None]
        keep[rows] = ~((sims >= threshold) & earlier).any(1)
    return keep


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
    serve as references (``None``: every pool image); ``captions[id]`` holds one caption per text
    to write (FashionIQ: two).
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
    n_texts = 2 if layout == "fashioniq" else 1
    triplets, fell_back = [], 0
    for n, (a, b, _) in enumerate(pairs):
        ref, tgt = ids[a], ids[b]
        texts = []
        for j in range(n_texts):
            ref_caption, tgt_caption = captions[ref][j % len(captions[ref])], captions[tgt][j % len(captions[tgt])]
            text, back = compose_text(ref_caption, tgt_caption, templates, rng, fits)
            texts.append(text)
            fell_back += back
        if layout == "fashioniq":
            cat = categories[ref]
            triplets.append(Triplet(f"{cat}/spn-{n}", ref, tgt, tuple(texts), cat))
        else:
            triplets.append(Triplet(f"spn-{n}", ref, tgt, tuple(texts), CIRR_CATEGORY, (ref, tgt)))
    lo, hi = window_bounds(max(len(ids) - 1, 0), low, high) if len(ids) > 1 else (0, 0)
    summary = {"pool": len(pool), "captioned": n_captioned, "duplicates_merged": n_captioned - len(ids),
               "references": len(wanted), "rank_window": [lo, hi],
               "per_reference": per_reference, "triplets": len(triplets),
               "templates": [TEMPLATES[i] for i in templates], "texts_fell_back_to_target": fell_back,
               "texts": len(triplets) * n_texts}
    return Generated(triplets, {i: captions[i] for i in ids}, summary)


def write_official(layout: str, generated: Generated, folder: Path) -> List[Path]:
    """Write generated triplets in the official layout under ``folder`` (``captions/cap.<cat>.train.json``
    or ``captions/cap.rc2.train.json``), with ``image_captions.json`` (readable by the ``file``
    captioner) and ``summary.json``."""
    folder = Path(folder)
    (folder / "captions").mkdir(parents=True, exist_ok=True)
    written = []
    if layout == "fashioniq":
        by_cat: Dict[str, list] = {}
        for t in generated.triplets:
            by_cat.setdefault(t.category, []).append({"candidate": t.reference, "target": t.target,
                                                      "captions": list(t.captions)})
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


__all__ = ["DUPLICATE_COSINE", "TEMPLATES", "Generated", "compose_text", "fill", "generate", "pair_by_window",
           "parse_templates", "representatives", "window_bounds", "write_official"]
