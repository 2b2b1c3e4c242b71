"""Attribute vocabularies: which visual attribute (colour, shape) a modification text talks about.

Read from the words of the text alone, never from dataset metadata, so the same code serves the
generated shapes data and real FashionIQ / CIRR captions. Each attribute has

* ``values`` — words naming a value of the attribute ("red", "navy", "striped", "circle", "sleeveless");
* ``cues`` — words saying the attribute changes without naming a value ("color", "darker",
  "shape", "longer", "neckline").

The words come from general vocabularies only, never from a dataset's generator or its caption
templates (this module imports nothing of cirbench). The source lists, each a tuple here and an entry of
:data:`SOURCES`:

* ``BASIC_COLOR_TERMS`` — the eleven English basic colour terms of Berlin & Kay (*Basic Color
  Terms*, 1969): black, white, red, green, yellow, blue, brown, purple, pink, orange, grey (and "gray"),
  with their comparatives ("darker" is a cue, "redder" a value).
* ``COLOR_NAMES`` — common secondary colour names: the single-word named colours of the CSS Color
  Module that are colour words first (aqua, coral, cyan, indigo, khaki, lavender, magenta, maroon, navy,
  olive, silver, teal, turquoise, ...; not snow, tomato, wheat, linen, peru), the colour stem of its
  compound names (slate, of slategray / slateblue) and the usual apparel colour names (beige, burgundy,
  charcoal, cream, mustard, nude, taupe, ...), plus hair colours (blonde, auburn, ginger).
* ``COLOR_QUALITIES`` — words for colour itself and its lightness, saturation and variety (color, hue,
  shade, tone, dark, light, bright, pale, muted, pastel, neon, multicolored, ...).
* ``PATTERN_NAMES`` — textile pattern names (stripes, plaid / tartan, checks / gingham, polka dots, paisley,
  floral, houndstooth, argyle, herringbone, chevron, camouflage, tie-dye, ombre) and print words (print,
  pattern, graphic, logo, solid, plain). A pattern is how colour is laid on the surface, so it counts
  for the colour attribute: the colour sub-query predicts an appearance change at a fixed silhouette.
* ``GEOMETRIC_SHAPES`` — the basic flat shapes of early-years mathematics (circle, square, triangle,
  rectangle, oval, ellipse, star, heart, diamond, crescent, cross, pentagon, hexagon, octagon), the basic
  solids (sphere, cube, cylinder, cone, pyramid) and shape adjectives (round, circular, pointed, curved, ...).
* ``SHAPE_QUALITIES`` — words for shape itself and its extent (shape, form, silhouette, outline, cut, fit,
  length, longer, wider, thinner, ...).
* ``GARMENT_CUTS`` — garment silhouettes, necklines, sleeve and length styles of fashion glossaries
  (a-line, sheath, bodycon, maxi, midi, mini, v-neck, scoop, crew, halter, turtleneck, strapless,
  sleeveless, long-sleeved, fitted, loose, flared, cropped, long, short, ...).
* ``GARMENT_PARTS`` — the garment parts a cut changes (neckline, neck, collar, sleeve, strap, hem, waist,
  shoulder, cuff, hood, lapel, bodice, skirt): cues, they say the shape changes without naming it.

Colour is ``BASIC_COLOR_TERMS`` + ``COLOR_NAMES`` + ``PATTERN_NAMES`` (values) and ``COLOR_QUALITIES``
(cues); shape is ``GEOMETRIC_SHAPES`` + ``GARMENT_CUTS`` (values) and ``SHAPE_QUALITIES`` +
``GARMENT_PARTS`` (cues). Cues are nouns and adjectives of the attribute only: no verbs of change
("paint", "recolor", "reshape", "becomes") and no function words ("into"), which say *that* something
changes, not *what*, and which a template-built dataset ties to one edit type (the shapes generator
words every shape edit with "becomes a" / "into a"). Size words ("bigger", "smaller") belong to neither:
the shapes data has a separate size edit. A word may be ambiguous ("light" is also lighting, "long" also
time, "collar" also a dog's): these are counts for a learned model to weigh, not a parser. Coverage of
the real captions is checked against ../shared/data/annotations (tests/methods/dqe_cir/test_attributes.py;
numbers in benchmarks/results/dqe_cir_ablation.md).

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


@dataclass(frozen=True)
class Vocabulary:
    name: str
    values: FrozenSet[str]
    cues: FrozenSet[str]


def _plurals(*nouns: str) -> tuple:
    return tuple(w for n in nouns for w in (n, n + ("es" if n.endswith(("s", "x", "sh", "ch")) else "s")))


BASIC_COLOR_TERMS = (
    "black", "white", "red", "green", "yellow", "blue", "brown", "purple", "pink", "orange", "grey", "gray",
    "blacker", "whiter", "redder", "greener", "yellower", "bluer", "browner", "pinker", "greyer", "grayer",
)
COLOR_NAMES = (
    # CSS named colours that are colour words first, and the colour stem of its compounds
    "aqua", "azure", "beige", "coral", "crimson", "cyan", "fuchsia", "gold", "indigo", "ivory", "khaki",
    "lavender", "lime", "magenta", "maroon", "navy", "olive", "plum", "salmon", "silver", "tan", "teal",
    "turquoise", "violet", "slate",
    # apparel colour names
    "amber", "bronze", "burgundy", "camel", "charcoal", "copper", "cream", "emerald", "golden", "lilac",
    "mauve", "mint", "mustard", "nude", "ochre", "peach", "rose", "rust", "scarlet", "taupe",
    # hair colours
    "blonde", "blond", "auburn", "ginger",
)
COLOR_QUALITIES = (
    "color", "colour", "colors", "colours", "colored", "coloured", "coloring", "colouring", "colorful",
    "colourful", "hue", "hues", "shade", "shades", "tone", "tones", "toned", "tint", "tinted",
    "dark", "darker", "light", "lighter", "bright", "brighter", "brightly", "pale", "paler", "faded",
    "vibrant", "deeper", "muted", "pastel", "neon", "multicolor", "multicolored", "multicoloured",
    "multi-colored", "multi-coloured", "monochrome", "monochromatic",
)
PATTERN_NAMES = (
    "pattern", "patterns", "patterned", "print", "prints", "printed", "graphic", "graphics", "logo", "logos",
    "solid", "plain", "striped", "stripy", "stripes", "stripe", "plaid", "tartan", "checkered", "checked",
    "checks", "gingham", "polka", "dots", "dotted", "paisley", "floral", "flowered", "houndstooth", "argyle",
    "herringbone", "chevron", "camouflage", "camo", "tie-dye", "tie-dyed", "ombre",
)
GEOMETRIC_SHAPES = _plurals(
    "circle", "square", "triangle", "rectangle", "oval", "ellipse", "star", "heart", "diamond", "crescent",
    "cross", "pentagon", "hexagon", "octagon", "polygon", "rhombus", "sphere", "cube", "cylinder", "cone",
    "pyramid",
) + (
    "round", "rounded", "circular", "rectangular", "triangular", "elliptical", "spherical", "cylindrical",
    "conical", "hexagonal", "oblong", "angular", "pointed", "pointy", "curved", "flat",
)
SHAPE_QUALITIES = (
    "shape", "shapes", "shaped", "form", "silhouette", "outline", "contour", "cut", "fit", "fitting",
    "length", "longer", "shorter", "wider", "narrower", "thinner", "thicker", "rounder", "straighter",
)
GARMENT_CUTS = (
    # silhouettes and lengths
    "a-line", "sheath", "bodycon", "wrap", "maxi", "midi", "mini", "cropped", "long", "short",
    "fitted", "flared", "flowy", "flowing", "loose", "looser", "tight", "tighter", "slim", "slimmer",
    "baggy", "pleated", "ruffled", "tank",
    # necklines, straps and sleeves
    "v-neck", "scoop", "crew", "halter", "turtleneck", "cowl", "sweetheart", "off-shoulder", "one-shoulder",
    "strapless", "spaghetti", "strappy", "backless", "collared", "hooded", "sleeveless", "sleeved",
    "long-sleeved", "short-sleeved",
)
GARMENT_PARTS = _plurals(
    "neckline", "neck", "collar", "sleeve", "strap", "hem", "hemline", "waist", "waistline", "shoulder",
    "cuff", "hood", "lapel", "bodice", "skirt",
) + ("necked",)

SOURCES: Dict[str, FrozenSet[str]] = {
    name: frozenset(words) for name, words in (
        ("BASIC_COLOR_TERMS", BASIC_COLOR_TERMS), ("COLOR_NAMES", COLOR_NAMES),
        ("COLOR_QUALITIES", COLOR_QUALITIES), ("PATTERN_NAMES", PATTERN_NAMES),
        ("GEOMETRIC_SHAPES", GEOMETRIC_SHAPES), ("SHAPE_QUALITIES", SHAPE_QUALITIES),
        ("GARMENT_CUTS", GARMENT_CUTS), ("GARMENT_PARTS", GARMENT_PARTS))
}

_COLOR_VALUES = SOURCES["BASIC_COLOR_TERMS"] | SOURCES["COLOR_NAMES"] | SOURCES["PATTERN_NAMES"]
_SHAPE_VALUES = SOURCES["GEOMETRIC_SHAPES"] | SOURCES["GARMENT_CUTS"]
COLOR = Vocabulary("color", _COLOR_VALUES, SOURCES["COLOR_QUALITIES"] - _COLOR_VALUES)
SHAPE = Vocabulary("shape", _SHAPE_VALUES,
                   (SOURCES["SHAPE_QUALITIES"] | SOURCES["GARMENT_PARTS"]) - _SHAPE_VALUES)
ATTRIBUTES: Sequence[Vocabulary] = (COLOR, SHAPE)

_WORD = re.compile(r"[a-z]+(?:-[a-z]+)*")
_NOT_LENGTH = re.compile(r"\b(no|any) longer\b")  # "no longer has": time, not length


def words(text: str) -> List[str]:
    """Lower-case words of a text; hyphenated words are kept whole and also split ("v-neck", "v", "neck")."""
    out: List[str] = []
    for w in _WORD.findall(text.lower()):
        out.append(w)
        if "-" in w:
            out.extend(w.split("-"))
    return out


def count_attributes(text: str, attributes: Sequence[Vocabulary] = ATTRIBUTES) -> Dict[str, Dict[str, int]]:
    """``{attribute: {"values": n, "cues": n}}`` for one text ("no / any longer" is not a length word)."""
    ws = words(_NOT_LENGTH.sub(r"\1", text.lower()))
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


__all__ = ["ATTRIBUTES", "COLOR", "SHAPE", "SOURCES", "Vocabulary", "attribute_counts", "attribute_relevance",
           "count_attributes", "words"]
