"""Attribute vocabularies: which visual attribute (colour, shape) a modification text talks about.

Read from the words of the text alone, never from dataset metadata, so the same code serves the
generated shapes data and real FashionIQ / CIRR captions. Each attribute has

* ``values`` — words naming a value of the attribute ("red", "navy", "circle", "sleeveless");
* ``cues`` — words saying the attribute changes without naming a value ("color", "darker",
  "shape", "longer", "neckline").

The lists cover every colour and shape name of the shapes generator (``cirbench.data.shapes``:
object colours, background colours, shapes) and the colour / silhouette wording that occurs
in the real FashionIQ and CIRR captions (checked against their annotation files). Size words
("bigger", "smaller") belong to neither: the shapes data has a separate size edit. A word may
be ambiguous ("light" is also lighting, "long" also time): these are counts for a learned model
to weigh, not a parser.

:func:`attribute_counts` gives, for each text, ``[values, cues]`` per attribute in the order
of :data:`ATTRIBUTES` — a ``[N, 2 * len(ATTRIBUTES)]`` float tensor, the kind of per-text side
feature ``Method.text_side_features`` returns.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Dict, FrozenSet, List, Sequence

import torch
from torch import Tensor

from cirbench.data import shapes


@dataclass(frozen=True)
class Vocabulary:
    name: str
    values: FrozenSet[str]
    cues: FrozenSet[str]


_COLOR_VALUES = set(shapes.COLORS) | set(shapes.BACKGROUNDS) | {
    "black", "white", "grey", "gray", "red", "blue", "green", "yellow", "orange", "purple", "pink", "brown",
    "beige", "tan", "cream", "navy", "maroon", "burgundy", "teal", "turquoise", "cyan", "magenta", "violet",
    "lavender", "lilac", "mint", "olive", "khaki", "gold", "golden", "silver", "bronze", "copper", "peach",
    "coral", "salmon", "rose", "ivory", "charcoal", "aqua", "lime", "mustard", "indigo", "plum", "fuchsia",
    "rust", "camel", "nude", "blonde", "ginger", "multicolored", "multicoloured", "multi-colored",
    "monochrome", "monochromatic", "colorful", "colourful", "pastel", "neon", "whiter", "blacker",
    "redder", "bluer", "greener", "yellower",
}
_COLOR_CUES = {
    "color", "colour", "colors", "colours", "colored", "coloured", "coloring", "colouring", "recolor",
    "recolour", "paint", "painted", "dye", "dyed", "tint", "tinted", "hue", "shade", "shades", "tone",
    "toned", "dark", "darker", "light", "lighter", "bright", "brighter", "pale", "paler", "faded",
    "vibrant", "deeper", "muted",
}
_SHAPE_VALUES = set(shapes.SHAPES) | {
    # geometric forms (shapes data, CIRR)
    "circle", "circles", "square", "squares", "triangle", "triangles", "star", "stars", "diamond", "diamonds",
    "cross", "crosses", "heart", "hearts", "rectangle", "rectangles", "oval", "round", "rounded",
    "circular", "rectangular", "triangular", "pointed", "pointy", "curved", "flat", "oblong", "cylindrical",
    # garment silhouette and cut (FashionIQ)
    "sleeveless", "strapless", "halter", "v-neck", "scoop", "crew", "turtleneck", "collared", "a-line",
    "maxi", "mini", "midi", "fitted", "flared", "flowy", "flowing", "loose", "looser", "tight", "tighter",
    "slim", "slimmer", "long-sleeved", "short-sleeved", "sleeved", "off-shoulder", "one-shoulder",
    "spaghetti", "tank", "bodycon", "wrap", "pleated", "ruffled", "baggy",
}
_SHAPE_CUES = {
    "shape", "shaped", "shapes", "form", "silhouette", "cut", "fit", "fitting", "length", "longer",
    "shorter", "neckline", "neck", "collar", "sleeve", "sleeves", "straps", "strap", "hem", "hemline",
    "wider", "narrower", "thinner", "thicker", "reshape", "becomes", "into",
}

COLOR = Vocabulary("color", frozenset(_COLOR_VALUES), frozenset(_COLOR_CUES - _COLOR_VALUES))
SHAPE = Vocabulary("shape", frozenset(_SHAPE_VALUES), frozenset(_SHAPE_CUES - _SHAPE_VALUES))
ATTRIBUTES: Sequence[Vocabulary] = (COLOR, SHAPE)

_WORD = re.compile(r"[a-z]+(?:-[a-z]+)*")


def words(text: str) -> List[str]:
    """Lower-case words of a text; hyphenated words are kept whole and also split ("v-neck", "v", "neck")."""
    out: List[str] = []
    for w in _WORD.findall(text.lower()):
        out.append(w)
        if "-" in w:
            out.extend(w.split("-"))
    return out


def count_attributes(text: str, attributes: Sequence[Vocabulary] = ATTRIBUTES) -> Dict[str, Dict[str, int]]:
    """``{attribute: {"values": n, "cues": n}}`` for one text."""
    ws = words(text)
    return {a.name: {"values": sum(w in a.values for w in ws), "cues": sum(w in a.cues for w in ws)}
            for a in attributes}


def attribute_counts(texts: Sequence[str], attributes: Sequence[Vocabulary] = ATTRIBUTES) -> Tensor:
    """``[N, 2 * len(attributes)]`` float counts: (values, cues) of each attribute, in order."""
    rows = []
    for t in texts:
        c = count_attributes(t, attributes)
        rows.append([float(c[a.name][k]) for a in attributes for k in ("values", "cues")])
    return torch.tensor(rows, dtype=torch.float32).reshape(len(rows), 2 * len(attributes))


def attribute_relevance(counts: Tensor) -> Tensor:
    """How much each text is about each attribute, ``[N, A]`` in [0, 1]: the attribute's share of
    the attribute words the text uses (values and cues together); 0 where it uses none."""
    per_attribute = counts.reshape(*counts.shape[:-1], -1, 2).sum(-1)
    total = per_attribute.sum(-1, keepdim=True)
    return torch.where(total > 0, per_attribute / total.clamp_min(1e-6), torch.zeros_like(per_attribute))


__all__ = ["ATTRIBUTES", "COLOR", "SHAPE", "Vocabulary", "attribute_counts", "attribute_relevance",
           "count_attributes", "words"]
