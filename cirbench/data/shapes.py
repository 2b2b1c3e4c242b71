"""The procedural "shapes" datasets behind cirbench's embedded, offline, CPU benchmark.

:func:`generate` writes a small dataset in one of the two official layouts (FashionIQ or
CIRR): real PNG files, the official caption and split JSON files, plus ``metadata.json``
(what every image shows) — so the normal loaders read it with no special path.

Scene model
    A 64x64 RGB image: a plain named background and 2-4 objects. An object has a shape, one
    of 7 well-separated named colours, a size (small / large) and a position, one of the
    nine cells of a 3x3 grid ("top left" ... "bottom right"). Cells never overlap and object
    colours are never background colours, so every object is fully visible and the metadata
    is exact: the pixel at an object's centre (:func:`cell_center`) has its colour.

Families and edits
    Images come in *families*: a base scene plus 4-5 *axes*, each one atomic edit with
    several values — recolour an object (4-6 other colours), reshape it, resize it,
    move it (to one of a few reserved free cells), remove it, add an object (in a few
    variants), change the background. Every image of a family is the base with some axes
    set to other values; an object carries no axis that would hide another (a removable
    object has no other axis), so distinct images never render alike. Two images one axis
    apart are one atomic edit apart; a triplet pairs a reference and a target of the same
    family 1 or 2 edits apart, and its text describes those edits relative to the reference
    ("make the circle red", "move the star at the top left to the center", "remove the
    yellow triangle"), naming the edited object by whatever singles it out *in the
    reference* (shape, colour, colour + shape, size + shape or position). Templates vary
    per edit type; the text alone cannot find the target.

Difficulty
    An easy world (one object, far-apart images) saturates Recall@10 at 100%, so the
    gallery is built from near-duplicates. Axes have many values (an object recoloured to
    4-6 other colours, reshaped to 3-5 other shapes, ...), a family's base has at least
    ``MIN_NEIGHBOURS`` one-edit variants, and each family has a few *hubs* (the base and
    some of its variants) whose *whole* one-edit neighbourhood is in the gallery. Most
    triplets start from a hub, so a query's gallery holds ~15-30 images one edit from its
    reference: the same object edited the same way to another value (the circle made blue
    instead of red), other objects edited the same way, for two-edit queries the images with
    only one of the two edits, and the reference itself (FashionIQ keeps it). Finding the
    family is easy; the target is only found by reading the text against the reference.
    (Ranking by raw-pixel distance to the reference gives R@10 of about 35-45% on
    FashionIQ val and 50% on CIRR val; chance is about 1.5-2%.) No scene is drawn twice in a
    dataset: two ids never share an image.

FashionIQ layout
    The categories keep the official names dress / shirt / toptee, so that tables print in
    the FashionIQ layout, but they are three distinct scene families: dark (dress),
    mid-grey (shirt) and light (toptee) backgrounds and partly different shape
    vocabularies. Each triplet has two "annotator" captions: for a two-edit triplet often
    one per edit, for a one-edit triplet two phrasings; lowercase, no final period, now and
    then a trailing space or '.' as in the real files. A split's gallery
    (``split.<cat>.<split>.json``) is all its images: every family member, hubs included.

CIRR layout
    Each hub's one-edit variants are dealt, fan by fan, into ``img_set`` groups of the hub
    plus 5 variants (the last group of a hub topped up with new two-edit variants), so a
    set holds the same object edited to several values; a hub belongs to several sets, as
    images do in CIRR. A set's 5 triplets each target one non-hub member, from the hub or
    from a member 1-2 edits away. Names and paths mimic CIRR (``train-<n>-<m>-img<j>``,
    ``./train/<k>/...``, ``./dev/...``, ``./test1/...``); ``reference_rank`` /
    ``target_rank`` are positions in the set's hidden order while ``members`` is shuffled,
    as in CIRR; ``target_soft`` is ``{target_hard: 1.0}``. One caption per triplet,
    sometimes capitalised or ending with '.'. Pair ids are unique across splits.

Everything is deterministic: each (layout, category, split) draws from its own
``random.Random`` seeded from ``seed``; no global random state is used.
"""
from __future__ import annotations

import json
import math
import random
import shutil
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

from PIL import Image, ImageDraw

from cirbench.errors import ConfigError
from cirbench.files import remove_stale_temporaries, temporary_path

# --------------------------------------------------------------------------- sizes

FASHIONIQ_TRIPLETS = {"train": 1000, "val": 350, "test": 150}  # per category
FASHIONIQ_HUBS = 2  # references per family whose whole one-edit neighbourhood is drawn
FASHIONIQ_QUERIES_PER_HUB = 8
FASHIONIQ_TWO_EDIT_RATE = 0.4  # share of triplets with 2 atomic edits
FASHIONIQ_REVERSE_RATE = 0.15  # share of triplets whose reference is not a hub

CIRR_GROUPS = {"train": 300, "val": 100, "test1": 50}  # img_sets of 6 images, 5 triplets each
CIRR_HUBS = 2
CIRR_TWO_EDIT_RATE = 0.2
CIRR_HUB_REFERENCE_RATE = 0.65  # share of triplets whose reference is the group's hub
CIRR_TRAIN_BUCKETS = 10  # train images live in ./train/<0..N-1>/
CIRR_GROUP_SIZE = 6  # fixed by the CIRR format

AXES_PER_FAMILY = (4, 5)
MIN_NEIGHBOURS = 12  # a family's base has at least this many one-edit variants (difficulty floor)
GENERATOR_VERSION = 1
LAYOUTS = ("fashioniq", "cirr")

# --------------------------------------------------------------------------- vocabulary

IMAGE_SIZE = 64
COLORS: Dict[str, Tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "orange": (255, 140, 0),
    "yellow": (250, 225, 30),
    "green": (30, 170, 50),
    "cyan": (0, 200, 220),
    "blue": (30, 70, 230),
    "purple": (150, 50, 200),
}
BACKGROUNDS: Dict[str, Tuple[int, int, int]] = {
    "black": (12, 12, 12),
    "navy": (20, 25, 75),
    "maroon": (85, 20, 30),
    "gray": (128, 128, 128),
    "slate": (90, 100, 115),
    "olive": (110, 110, 40),
    "white": (245, 245, 245),
    "cream": (250, 240, 200),
    "silver": (192, 192, 192),
}
SHAPES = ("circle", "square", "triangle", "star", "diamond", "cross", "heart", "rectangle")
SIZES = ("small", "large")
RADII = {"small": 6, "large": 9}  # half-extent in pixels; a cell is ~21 px wide
POSITIONS = ("top left", "top", "top right", "left", "center", "right",
             "bottom left", "bottom", "bottom right")
_CELL_CENTERS = (10, 32, 53)


@dataclass(frozen=True)
class _Style:
    backgrounds: Tuple[str, ...]
    shapes: Tuple[str, ...]


STYLES = {
    "dress": _Style(("black", "navy", "maroon"), ("circle", "square", "triangle", "star", "diamond", "cross")),
    "shirt": _Style(("gray", "slate", "olive"), ("circle", "square", "triangle", "heart", "rectangle", "cross")),
    "toptee": _Style(("white", "cream", "silver"), ("square", "triangle", "star", "diamond", "heart", "rectangle")),
    "cirr": _Style(("black", "navy", "gray", "white"), SHAPES),
}


def cell_center(position: str) -> Tuple[int, int]:
    """Pixel (x, y) at the centre of a grid cell: every object is drawn centred there."""
    index = POSITIONS.index(position)
    return _CELL_CENTERS[index % 3], _CELL_CENTERS[index // 3]


# --------------------------------------------------------------------------- scene model

@dataclass(frozen=True)
class _Obj:
    shape: str
    color: str
    size: str
    position: str

    def as_dict(self) -> dict:
        return {"shape": self.shape, "color": self.color, "size": self.size, "position": self.position}


@dataclass(frozen=True)
class _Scene:
    background: str
    slots: Tuple[Optional[_Obj], ...]  # object slots; None = absent

    @property
    def objects(self) -> List[_Obj]:
        """Present objects in reading order (by grid cell)."""
        return sorted((o for o in self.slots if o is not None), key=lambda o: POSITIONS.index(o.position))

    def key(self) -> tuple:
        return (self.background, tuple(self.objects))

    def metadata(self, category: str, split: str) -> dict:
        return {"category": category, "split": split, "background": self.background,
                "objects": [o.as_dict() for o in self.objects]}


@dataclass(frozen=True)
class _Axis:
    kind: str  # color | shape | size | move | remove | add | background
    slot: int  # the object slot it edits (-1: background)
    values: tuple  # values[0] is the base scene's


State = Tuple[int, ...]  # one value index per axis


@dataclass(frozen=True)
class _Family:
    background: str
    base: Tuple[Optional[_Obj], ...]
    axes: Tuple[_Axis, ...]

    @property
    def base_state(self) -> State:
        return (0,) * len(self.axes)

    def scene(self, state: State) -> _Scene:
        slots = list(self.base)
        background = self.background
        for axis, index in zip(self.axes, state):
            value = axis.values[index]
            if axis.kind == "background":
                background = value
            elif axis.kind == "add":
                slots[axis.slot] = value  # an object or None
            elif axis.kind == "remove":
                slots[axis.slot] = slots[axis.slot] if value else None
            else:
                field = "position" if axis.kind == "move" else axis.kind
                slots[axis.slot] = replace(slots[axis.slot], **{field: value})
        return _Scene(background, tuple(slots))

    def neighbours(self, state: State) -> List[State]:
        """States one atomic edit away."""
        out = []
        for a, axis in enumerate(self.axes):
            for v in range(len(axis.values)):
                if v != state[a]:
                    out.append(state[:a] + (v,) + state[a + 1:])
        return out


def _hamming(u: State, v: State) -> int:
    return sum(x != y for x, y in zip(u, v))


def _diff(u: State, v: State) -> List[int]:
    return [a for a, (x, y) in enumerate(zip(u, v)) if x != y]


# --------------------------------------------------------------------------- families

_KIND_WEIGHTS = {"color": 3.0, "shape": 2.5, "move": 1.5, "add": 2.0, "size": 1.0, "remove": 1.0,
                 "background": 0.6}


def _new_family(style: _Style, rng: random.Random) -> _Family:
    n = rng.randint(2, 4)
    cells = rng.sample(range(9), 9)
    base = [_Obj(rng.choice(style.shapes), rng.choice(list(COLORS)), rng.choice(SIZES), POSITIONS[c])
            for c in cells[:n]]
    background = rng.choice(style.backgrounds)
    free = cells[n:]
    axes = _draw_axes(style, base, background, free, rng)
    return _Family(background, tuple(base) + (None,), tuple(axes))


def _draw_axes(style, base, background, free, rng) -> List[_Axis]:
    n = len(base)
    candidates = [(k, s) for s in range(n) for k in ("color", "shape", "size", "move")]
    if n >= 3:
        candidates += [("remove", s) for s in range(n)]
    if n <= 3:  # adding keeps at most 4 objects
        candidates.append(("add", n))
    candidates.append(("background", -1))
    per_kind = {k: sum(1 for c in candidates if c[0] == k) for k, _ in candidates}
    axes: List[_Axis] = []
    wanted = rng.randint(*AXES_PER_FAMILY)
    while candidates and len(axes) < wanted:
        kind, slot = rng.choices(candidates, [_KIND_WEIGHTS[k] / per_kind[k] for k, _ in candidates])[0]
        candidates.remove((kind, slot))
        on_slot = [a.kind for a in axes if a.slot == slot]
        if "remove" in on_slot or (kind == "remove" and on_slot):
            continue  # a removable object carries no other edit: it could be hidden
        if kind == "remove" and sum(a.kind == "remove" for a in axes) >= n - 2:
            continue  # every scene keeps at least 2 objects
        if kind in ("move", "add") and not free:
            continue
        axes.append(_axis_values(kind, slot, base, background, style, free, rng))
    return axes


def _axis_values(kind, slot, base, background, style, free, rng) -> _Axis:
    obj = base[slot] if 0 <= slot < len(base) else None
    if kind == "color":
        values = (obj.color,) + tuple(rng.sample([c for c in COLORS if c != obj.color], rng.randint(4, 6)))
    elif kind == "shape":
        others = [s for s in style.shapes if s != obj.shape]
        values = (obj.shape,) + tuple(rng.sample(others, rng.randint(3, len(others))))
    elif kind == "size":
        values = (obj.size, "large" if obj.size == "small" else "small")
    elif kind == "move":
        k = rng.randint(1, min(3, len(free)))
        values = (obj.position,) + tuple(POSITIONS[free.pop()] for _ in range(k))
    elif kind == "remove":
        values = (True, False)
    elif kind == "add":
        values = (None,) + _add_variants(style, POSITIONS[free.pop()], rng)
    else:  # background
        values = (background,) + tuple(b for b in style.backgrounds if b != background)
    return _Axis(kind, slot, values)


def _add_variants(style, position, rng) -> Tuple[_Obj, ...]:
    """Objects that could be added in one cell: same size, differing in colour or in shape."""
    k = rng.randint(3, 4)
    size = rng.choice(SIZES)
    if rng.random() < 0.5:
        shape = rng.choice(style.shapes)
        return tuple(_Obj(shape, c, size, position) for c in rng.sample(list(COLORS), k))
    color = rng.choice(list(COLORS))
    return tuple(_Obj(s, color, size, position) for s in rng.sample(style.shapes, k))


def _draw_family(style: _Style, n_hubs: int, seen: set, rng: random.Random
                 ) -> Tuple[_Family, List[State], List[State]]:
    """A family, its hubs (the base and some of its variants) and its images: the hubs and
    every state one edit from a hub. No scene repeats anywhere in the dataset (``seen``)."""
    while True:
        family = _new_family(style, rng)
        base = family.base_state
        near = family.neighbours(base)
        if len(near) < MIN_NEIGHBOURS:
            continue
        hubs = [base] + rng.sample(near, n_hubs - 1)
        nodes = list(dict.fromkeys(hubs + [s for h in hubs for s in family.neighbours(h)]))
        keys = [family.scene(s).key() for s in nodes]
        if len(set(keys)) == len(keys) and not seen.intersection(keys):
            seen.update(keys)
            return family, hubs, nodes


# --------------------------------------------------------------------------- queries

def _edit_kind(axis: _Axis, before: int, after: int) -> str:
    """The kind of atomic edit that sets ``axis`` from value index ``before`` to ``after``."""
    if axis.kind == "remove":
        return "remove" if axis.values[before] else "add"
    if axis.kind == "add":
        old, new = axis.values[before], axis.values[after]
        if old is None or new is None:
            return "add" if old is None else "remove"
        return "color" if old.color != new.color else "shape"
    return axis.kind


def _edit_kinds(family: _Family, u: State, v: State) -> List[str]:
    return sorted(_edit_kind(family.axes[a], u[a], v[a]) for a in _diff(u, v))


def _has_near_duplicate(family: _Family, u: State, v: State, nodes: Sequence[State]) -> bool:
    """Is there another image the same kind(s) of edit away from u (the circle made blue
    instead of red), or, for two edits, one with only one of them?"""
    d_uv = _diff(u, v)
    kinds = _edit_kinds(family, u, v)
    for w in nodes:
        if w == u or w == v:
            continue
        d_uw = _diff(u, w)
        if len(d_uw) == len(d_uv) and _edit_kinds(family, u, w) == kinds:
            return True
        if len(d_uv) == 2 and len(d_uw) == 1 and d_uw[0] in d_uv and w[d_uw[0]] == v[d_uw[0]]:
            return True
    return False


def _fashioniq_pairs(family: _Family, hubs: List[State], nodes: List[State], n: int,
                     rng: random.Random) -> List[Tuple[State, State]]:
    """Up to n (reference, target) pairs 1 or 2 edits apart, each with a near-duplicate
    distractor among ``nodes``; references are mostly hubs (whose neighbourhood is complete)."""
    others = [s for s in nodes if s not in hubs]
    chosen: List[Tuple[State, State]] = []
    for i in range(n):
        for _ in range(20):
            ref = rng.choice(others) if rng.random() < FASHIONIQ_REVERSE_RATE else hubs[i % len(hubs)]
            distance = 2 if rng.random() < FASHIONIQ_TWO_EDIT_RATE else 1
            targets = [v for v in nodes if _hamming(ref, v) == distance and (ref, v) not in chosen]
            rng.shuffle(targets)
            target = next((v for v in targets if _has_near_duplicate(family, ref, v, nodes)), None)
            if target is not None:
                chosen.append((ref, target))
                break
    return chosen


def _cirr_groups(family: _Family, hubs: List[State], nodes: List[State], seen: set, rng: random.Random
                 ) -> List[Tuple[List[State], List[Tuple[State, State]]]]:
    """img_sets: a hub plus 5 of its one-edit variants, taken fan by fan (so a set holds the
    same object edited to several values); every variant of a hub lands in one of its sets,
    and the last set of a hub is topped up with new two-edit variants."""
    groups = []
    k = CIRR_GROUP_SIZE - 1
    for hub in hubs:
        variants = []
        for a in rng.sample(range(len(family.axes)), len(family.axes)):
            values = [v for v in range(len(family.axes[a].values)) if v != hub[a]]
            variants += [hub[:a] + (v,) + hub[a + 1:] for v in rng.sample(values, len(values))]
        for start in range(0, len(variants), k):
            members = variants[start:start + k]
            members += _two_edit_variants(family, members, k - len(members), nodes, seen, rng)
            members += rng.sample([s for s in variants if s not in members], k - len(members))  # rare
            group = [hub] + members
            pairs = [(_cirr_reference(hub, m, group, rng), m) for m in members]
            groups.append((rng.sample(group, len(group)), pairs))  # hidden order: shuffled
    return groups


def _two_edit_variants(family: _Family, parents: List[State], n: int, nodes: List[State], seen: set,
                       rng: random.Random) -> List[State]:
    """n new states, each one more edit away from one of ``parents``, with scenes new to ``seen``."""
    out: List[State] = []
    for _ in range(50 * n):
        if len(out) == n:
            break
        state = rng.choice(family.neighbours(rng.choice(parents)))
        key = family.scene(state).key()
        if state not in nodes and state not in out and key not in seen:
            out.append(state)
            seen.add(key)
    return out


def _cirr_reference(hub: State, target: State, group: List[State], rng: random.Random) -> State:
    """The reference for one target of a set: usually the hub, else a member 1 or 2 edits away."""
    one = [s for s in group if _hamming(s, target) == 1]
    two = [s for s in group if _hamming(s, target) == 2]
    r = rng.random()
    if r < CIRR_TWO_EDIT_RATE and two:
        return rng.choice(two)
    if hub in one and (r < CIRR_TWO_EDIT_RATE + CIRR_HUB_REFERENCE_RATE or len(one) == 1):
        return hub
    return rng.choice([s for s in one if s != hub] or one or two)


# --------------------------------------------------------------------------- edits to text

@dataclass(frozen=True)
class _Edit:
    kind: str  # color | shape | size | move | add | remove | background
    slot: int
    before: object  # _Obj, None or a background name
    after: object


def _edits(family: _Family, u: State, v: State) -> List[_Edit]:
    ref, tgt = family.scene(u), family.scene(v)
    edits = []
    for a in _diff(u, v):
        axis = family.axes[a]
        kind = _edit_kind(axis, u[a], v[a])
        if kind == "background":
            edits.append(_Edit(kind, -1, ref.background, tgt.background))
        else:
            edits.append(_Edit(kind, axis.slot, ref.slots[axis.slot], tgt.slots[axis.slot]))
    return edits


_SIZE_WORDS = {"small": ("small", "little"), "large": ("large", "big")}


def _loc(position: str, rng: random.Random) -> str:
    if position == "center":
        return rng.choice(("in the center", "at the center"))
    if " " in position:
        return rng.choice((f"at the {position}", f"in the {position} corner", f"in the {position}"))
    if position in ("left", "right"):
        return rng.choice((f"on the {position}", f"at the {position}"))
    return rng.choice((f"at the {position}", f"at the {position} edge"))


def _refer(scene: _Scene, slot: int, rng: random.Random) -> str:
    """A referring expression that singles out one object of the scene."""
    o = scene.slots[slot]
    others = [x for s, x in enumerate(scene.slots) if x is not None and s != slot]
    options = []
    if all(x.shape != o.shape for x in others):
        options += [f"the {o.shape}"] * 3
        if all(x.size != o.size for x in others):
            options.append(f"the {rng.choice(_SIZE_WORDS[o.size])} {o.shape}")
    elif all((x.size, x.shape) != (o.size, o.shape) for x in others):
        options.append(f"the {rng.choice(_SIZE_WORDS[o.size])} {o.shape}")
    if all(x.color != o.color for x in others):
        options += [f"the {o.color} one", f"the {o.color} shape", f"the {o.color} object"]
    if all((x.color, x.shape) != (o.color, o.shape) for x in others):
        options += [f"the {o.color} {o.shape}"] * 2
    loc = _loc(o.position, rng)
    options += [f"the {o.shape} {loc}", f"the object {loc}", f"the {o.color} {o.shape} {loc}"]
    return rng.choice(options)


_TEMPLATES = {
    "color": ("make {obj} {new}", "change {obj} to {new}", "paint {obj} {new}", "turn {obj} {new}",
              "{obj} should be {new}", "color {obj} {new}", "recolor {obj} {new}",
              "change the color of {obj} to {new}", "{obj} is {new} instead of {old}",
              "{obj} is now {new}", "make {obj} {new} instead of {old}", "give {obj} the color {new}"),
    "shape": ("swap {obj} for a {new}", "replace {obj} with a {new}", "turn {obj} into a {new}",
              "make {obj} a {new}", "change {obj} into a {new}", "{obj} becomes a {new}",
              "{obj} should be a {new}", "use a {new} instead of {obj}",
              "has a {color} {new} instead of {obj}", "{obj} is a {new} now"),
    "large": ("make {obj} bigger", "make {obj} larger", "enlarge {obj}", "{obj} is bigger",
              "increase the size of {obj}", "grow {obj}", "make {obj} large", "{obj} should be larger",
              "scale up {obj}"),
    "small": ("make {obj} smaller", "shrink {obj}", "{obj} is smaller", "reduce the size of {obj}",
              "make {obj} small", "make {obj} tiny", "{obj} should be smaller", "scale down {obj}"),
    "move": ("move {obj} to the {new}", "put {obj} {loc}", "{obj} should be {loc}", "shift {obj} to the {new}",
             "{obj} is now {loc}", "move {obj} over to the {new}", "place {obj} {loc}",
             "relocate {obj} to the {new}", "has {obj} moved to the {new}"),
    "add": ("add {thing}{loc}", "put {thing} {where}", "place {thing} {where}", "insert {thing}{loc}",
            "include {thing}{loc}", "there is an extra {bare}{loc}", "has an additional {bare}{loc}",
            "also has {thing}{loc}", "add one more shape: {thing}{loc}"),
    "remove": ("remove {obj}", "get rid of {obj}", "delete {obj}", "take away {obj}", "take out {obj}",
               "erase {obj}", "without {obj}", "{obj} is gone", "no longer has {obj}", "drop {obj}"),
    "background": ("change the background to {new}", "make the background {new}", "use a {new} background",
                   "put everything on a {new} background", "{new} background instead of {old}",
                   "the background is {new}", "is on a {new} background", "switch the background to {new}"),
}
_JOINS = ("{a} and {b}", "{a}, and {b}", "{a}, then {b}", "{a} and also {b}", "{a}; {b}")


def _phrase(edit: _Edit, ref: _Scene, rng: random.Random, pronoun: bool = False) -> str:
    """One wording of one atomic edit, the object named as in the reference (or 'it')."""
    key = edit.after.size if edit.kind == "size" else edit.kind
    templates = _TEMPLATES[key]
    if pronoun:
        templates = [t for t in templates if "instead of {obj}" not in t]
    template = rng.choice(templates)
    fields = {}
    if edit.kind in ("color", "shape", "size", "move", "remove"):
        fields["obj"] = "it" if pronoun else _refer(ref, edit.slot, rng)
    if edit.kind == "color":
        fields.update(new=edit.after.color, old=edit.before.color)
    elif edit.kind == "shape":
        fields.update(new=edit.after.shape, color=edit.before.color)
    elif edit.kind == "move":
        fields.update(new=edit.after.position, loc=_loc(edit.after.position, rng))
    elif edit.kind == "add":
        o = edit.after
        size = f"{rng.choice(_SIZE_WORDS[o.size])} " if rng.random() < 0.5 else ""
        where = _loc(o.position, rng)
        fields.update(thing=f"a {size}{o.color} {o.shape}", bare=f"{o.color} {o.shape}", where=where,
                      loc=f" {where}" if rng.random() < 0.6 else "")
    elif edit.kind == "background":
        fields.update(new=edit.after, old=edit.before)
    return template.format(**fields)


def _joined(edits: Sequence[_Edit], ref: _Scene, rng: random.Random) -> str:
    a, b = edits
    same_object = a.slot == b.slot and a.slot >= 0
    return rng.choice(_JOINS).format(a=_phrase(a, ref, rng), b=_phrase(b, ref, rng, pronoun=same_object))


def _two_different(make, rng: random.Random) -> Tuple[str, str]:
    first = make()
    for _ in range(20):
        second = make()
        if second != first:
            return first, second
    return first, second


def _fashioniq_captions(edits: List[_Edit], ref: _Scene, rng: random.Random) -> List[str]:
    """Two annotators' captions: two phrasings, or (for two edits) often one edit each."""
    if len(edits) == 1:
        c1, c2 = _two_different(lambda: _phrase(edits[0], ref, rng), rng)
    else:
        edits = rng.sample(edits, 2)
        r = rng.random()
        if r < 0.6:
            c1, c2 = _phrase(edits[0], ref, rng), _phrase(edits[1], ref, rng)
        elif r < 0.85:
            c1, c2 = _joined(edits, ref, rng), _phrase(rng.choice(edits), ref, rng)
        else:
            c1, c2 = _two_different(lambda: _joined(edits, ref, rng), rng)
    return [_annotator_noise(c.lower(), rng) for c in (c1, c2)]


def _annotator_noise(caption: str, rng: random.Random) -> str:
    r = rng.random()
    return caption + " " if r < 0.04 else caption + "." if r < 0.08 else caption


def _cirr_caption(edits: List[_Edit], ref: _Scene, rng: random.Random) -> str:
    text = _phrase(edits[0], ref, rng) if len(edits) == 1 else _joined(rng.sample(edits, 2), ref, rng)
    if rng.random() < 0.6:
        text = text[0].upper() + text[1:]
    return text + "." if rng.random() < 0.3 else text


# --------------------------------------------------------------------------- descriptions

_NUMBERS = {1: "one", 2: "two", 3: "three", 4: "four", 5: "five"}


def _describe_object(o: dict, rng: random.Random) -> str:
    size = rng.choice(_SIZE_WORDS[o["size"]])
    loc = _loc(o["position"], rng)
    return rng.choice((f"a {size} {o['color']} {o['shape']} {loc}",
                       f"a {o['color']} {o['shape']} {loc} ({size})",
                       f"a {size} {o['shape']} in {o['color']} {loc}",
                       f"{loc} a {size} {o['color']} {o['shape']}"))


def describe(objects_metadata: dict, rng: random.Random) -> str:
    """A varied natural-language description of one image from its metadata entry.

    ``objects_metadata`` is one value of ``metadata.json`` (``background`` optional,
    ``objects`` a list of ``{shape, color, size, position}``). Every object is described with
    all four attributes; wording, order and structure vary with ``rng`` (deterministic).
    """
    objects = list(objects_metadata["objects"])
    if rng.random() < 0.5:
        rng.shuffle(objects)
    parts = [_describe_object(o, rng) for o in objects]
    body = parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]
    background = objects_metadata.get("background")
    if background is None:
        return body
    count = _NUMBERS.get(len(objects), str(len(objects)))
    noun = "shape" if len(objects) == 1 else "shapes"
    return rng.choice((f"{body} on a {background} background",
                       f"a {background} background with {body}",
                       f"{count} {noun} on {background}: {body}",
                       f"there is {body}, on a {background} background",
                       f"an image of {body} against a {background} background"))


# --------------------------------------------------------------------------- rendering

def _polygon(cx: int, cy: int, radii: Sequence[float], phase: float = 0.0) -> List[Tuple[int, int]]:
    angles = [phase + 2 * math.pi * k / len(radii) for k in range(len(radii))]
    return [(round(cx + r * math.sin(t)), round(cy - r * math.cos(t))) for r, t in zip(radii, angles)]


def _draw_object(draw: ImageDraw.ImageDraw, o: _Obj) -> None:
    cx, cy = cell_center(o.position)
    r = RADII[o.size]
    fill = COLORS[o.color]
    if o.shape == "circle":
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=fill)
    elif o.shape == "square":
        s = round(r * 0.85)
        draw.rectangle([cx - s, cy - s, cx + s, cy + s], fill=fill)
    elif o.shape == "triangle":
        draw.polygon([(cx, cy - r), (cx + r, cy + r), (cx - r, cy + r)], fill=fill)
    elif o.shape == "diamond":
        draw.polygon([(cx, cy - r), (cx + r, cy), (cx, cy + r), (cx - r, cy)], fill=fill)
    elif o.shape == "star":
        draw.polygon(_polygon(cx, cy, [r, r * 0.45] * 5), fill=fill)
    elif o.shape == "cross":
        t = max(2, round(r / 3))
        draw.rectangle([cx - r, cy - t, cx + r, cy + t], fill=fill)
        draw.rectangle([cx - t, cy - r, cx + t, cy + r], fill=fill)
    elif o.shape == "heart":
        h = round(r * 0.5)
        draw.ellipse([cx - r, cy - r + 1, cx, cy - r + 1 + r], fill=fill)
        draw.ellipse([cx, cy - r + 1, cx + r, cy - r + 1 + r], fill=fill)
        draw.polygon([(cx - r, cy - h + 2), (cx + r, cy - h + 2), (cx, cy + r)], fill=fill)
    elif o.shape == "rectangle":  # a wide bar, unlike the square
        draw.rectangle([cx - r, cy - round(r * 0.45), cx + r, cy + round(r * 0.45)], fill=fill)
    else:  # pragma: no cover - the vocabulary is closed
        raise ValueError(f"unknown shape {o.shape!r}")


def _render(scene: _Scene) -> Image.Image:
    image = Image.new("RGB", (IMAGE_SIZE, IMAGE_SIZE), BACKGROUNDS[scene.background])
    draw = ImageDraw.Draw(image)
    for o in scene.objects:
        _draw_object(draw, o)
    return image


# --------------------------------------------------------------------------- writing

def _split_rng(seed: int, *parts: str) -> random.Random:
    return random.Random("/".join(["cirbench-shapes", str(seed), *parts]))


def _write_json(path: Path, data, indent: Optional[int] = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=indent) + "\n", encoding="utf-8")


def _write_png(path: Path, scene: _Scene) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    _render(scene).save(path, format="PNG")


def _fashioniq(root: Path, seed: int) -> None:
    metadata: Dict[str, dict] = {}
    seen: set = set()
    for category in ("dress", "shirt", "toptee"):
        for split, n_triplets in FASHIONIQ_TRIPLETS.items():
            rng = _split_rng(seed, "fashioniq", category, split)
            scenes: Dict[Tuple[int, State], _Scene] = {}
            queries = []
            f = 0
            while len(queries) < n_triplets:
                family, hubs, nodes = _draw_family(STYLES[category], FASHIONIQ_HUBS, seen, rng)
                n = min(FASHIONIQ_QUERIES_PER_HUB * len(hubs), n_triplets - len(queries))
                scenes.update(((f, s), family.scene(s)) for s in nodes)
                for u, v in _fashioniq_pairs(family, hubs, nodes, n, rng):
                    captions = _fashioniq_captions(_edits(family, u, v), family.scene(u), rng)
                    queries.append(((f, u), (f, v), captions))
                f += 1
            order = list(scenes)
            rng.shuffle(order)
            ids = {node: f"{category}-{split}-{i:05d}" for i, node in enumerate(order)}
            for node in order:
                _write_png(root / "images" / f"{ids[node]}.png", scenes[node])
                metadata[ids[node]] = scenes[node].metadata(category, split)
            rng.shuffle(queries)
            entries = [({"target": ids[v]} if split != "test" else {}) | {"candidate": ids[u], "captions": caps}
                       for u, v, caps in queries]
            _write_json(root / "captions" / f"cap.{category}.{split}.json", entries, indent=4)
            _write_json(root / "image_splits" / f"split.{category}.{split}.json", [ids[n] for n in order], indent=4)
    _write_json(root / "metadata.json", {k: metadata[k] for k in sorted(metadata)})


_CIRR_PREFIX = {"train": "train", "val": "dev", "test1": "test1"}


def _cirr(root: Path, seed: int) -> None:
    metadata: Dict[str, dict] = {}
    seen: set = set()
    pairid = set_id = 0
    for split, n_groups in CIRR_GROUPS.items():
        rng = _split_rng(seed, "cirr", split)
        families: List[_Family] = []
        groups = []  # (family index, hidden order of the set, pairs)
        while len(groups) < n_groups:
            family, hubs, nodes = _draw_family(STYLES["cirr"], CIRR_HUBS, seen, rng)
            groups += [(len(families), order, pairs)
                       for order, pairs in _cirr_groups(family, hubs, nodes, seen, rng)[:n_groups - len(groups)]]
            families.append(family)
        rng.shuffle(groups)
        images = list(dict.fromkeys((f, s) for f, order, _ in groups for s in order))
        numbers = rng.sample(range(10 * len(images)), len(images))
        names = {node: f"{_CIRR_PREFIX[split]}-{n}-{rng.randrange(4)}-img{rng.randrange(2)}"
                 for node, n in zip(images, numbers)}
        paths: Dict[str, str] = {}
        for (f, state), name in names.items():
            number = int(name.split("-")[1])
            bucket = f"train/{number % CIRR_TRAIN_BUCKETS}" if split == "train" else _CIRR_PREFIX[split]
            paths[name] = f"./{bucket}/{name}.png"
            scene = families[f].scene(state)
            _write_png(root / paths[name], scene)
            metadata[name] = scene.metadata("cirr", split)
        entries = []
        for f, order, pairs in groups:
            family = families[f]
            members = [names[(f, s)] for s in rng.sample(order, len(order))]
            for u, v in pairs:
                caption = _cirr_caption(_edits(family, u, v), family.scene(u), rng)
                entries.append(_cirr_entry(pairid, set_id, names[(f, u)], names[(f, v)], order.index(u),
                                           order.index(v), members, caption, with_target=split != "test1"))
                pairid += 1
            set_id += 1
        _write_json(root / "captions" / f"cap.rc2.{split}.json", entries)
        _write_json(root / "image_splits" / f"split.rc2.{split}.json", paths)
    _write_json(root / "metadata.json", {k: metadata[k] for k in sorted(metadata)})


def _cirr_entry(pairid, set_id, reference, target, reference_rank, target_rank, members, caption, with_target):
    if not with_target:
        return {"pairid": pairid, "reference": reference, "caption": caption,
                "img_set": {"id": set_id, "members": members, "reference_rank": reference_rank}}
    return {"pairid": pairid, "reference": reference, "target_hard": target, "target_soft": {target: 1.0},
            "caption": caption, "img_set": {"id": set_id, "members": members, "reference_rank": reference_rank,
                                            "target_rank": target_rank}}


_WRITERS = {"fashioniq": _fashioniq, "cirr": _cirr}
MARKER = ".complete"


def _marker(layout: str, seed: int) -> dict:
    sizes = ({"triplets": FASHIONIQ_TRIPLETS, "hubs": FASHIONIQ_HUBS,
              "queries_per_hub": FASHIONIQ_QUERIES_PER_HUB} if layout == "fashioniq"
             else {"groups": CIRR_GROUPS, "hubs": CIRR_HUBS})
    return {"generator": "cirbench.data.shapes", "generator_version": GENERATOR_VERSION,
            "layout": layout, "seed": seed, "sizes": sizes}


def _is_generated(folder: Path) -> bool:
    try:
        return json.loads((folder / MARKER).read_text())["generator"] == "cirbench.data.shapes"
    except (OSError, ValueError, KeyError, TypeError):
        return False


def generate(layout: str, out: Union[Path, str], seed: int = 0) -> Path:
    """Write the shapes dataset in ``layout`` ('fashioniq' or 'cirr') under ``out``; return ``out``.

    The dataset is written into a temporary folder next to ``out`` and renamed into place at
    the end, the marker ``out/.complete`` (JSON: generator, version, layout, seed, sizes) last;
    an interrupted run never leaves a folder that looks complete. An existing ``out`` is
    replaced only if it is empty or a previously generated shapes dataset.
    """
    if layout not in _WRITERS:
        raise ConfigError(f"unknown shapes layout {layout!r}; choose one of: {', '.join(LAYOUTS)}")
    out = Path(out)
    if out.exists() and not (out.is_dir() and (_is_generated(out) or not any(out.iterdir()))):
        raise ConfigError(f"{out} exists and is not a generated shapes dataset; refusing to overwrite it")
    out.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(out.parent, out.name)  # of a killed generation
    tmp = temporary_path(out, "partial")
    try:
        tmp.mkdir()
        _WRITERS[layout](tmp, seed)
        _write_json(tmp / MARKER, _marker(layout, seed), indent=2)
        if out.exists():
            old = temporary_path(out, "old")
            out.rename(old)
            tmp.rename(out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(out)
    except OSError as exc:  # e.g. a full disk: name the dataset, not a file of the hidden folder (or none: PIL)
        raise OSError(exc.errno, exc.strerror or str(exc), str(out)) from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out
