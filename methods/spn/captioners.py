"""Captioners: a short description of each (unlabelled) training image, for SPN's generated triplets.

SPN captions every training image with a multimodal LLM (LLaVA, near-greedy decoding) prompted for a
brief description "in k words" (SPN4CIR ``zscir/captioner_llava.py``; the CLIP-base commands read the
k = 4 FashionIQ and k = 8 CIRR files) and builds modification texts from two images' captions. cirbench
never runs such a model at run time; two captioners stand in:

* ``attributes`` — describes a generated *shapes* image from the dataset's ``metadata.json``. With a
  word budget ``words`` (what SPN uses) it is a brief caption of at most that many words, naming the
  salient objects first as an MLLM asked for k words does: large objects before small ones, each as
  "a <colour> <shape>", then, while words remain, their sizes and the background (:func:`brief`).
  ``words=0`` gives the full description (:func:`cirbench.data.shapes.describe`: every object with
  shape, colour, size and position, plus the background; 20-50 tokens, longer than the tiny text
  encoder's 24-token context). ``n`` phrasings per image, each deterministic in (seed, image id,
  phrasing index), like sampling an LLM several times.
* ``file`` — reads captions made offline by any captioning model: a JSON object mapping image id
  to a caption or a list of captions. This is how a user brings LLaVA (or BLIP, ...) captions for
  real FashionIQ / CIRR images. Images the file does not mention get no caption (the caller
  leaves them out); a list shorter than ``n`` is cycled.

Every captioner returns ``{image id: [caption_0, ..., caption_{n-1}]}``.
"""
from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

from cirbench.data.shapes import describe
from cirbench.data.triplets import CIRDataset
from cirbench.errors import ConfigError, DataError
from cirbench.files import read_json

Captions = Dict[str, List[str]]
_SIZES = {"small": ("small", "little"), "large": ("large", "big")}


def brief(meta: dict, words: int, rng: random.Random) -> str:
    """A caption of at most ``words`` words (at least one) of one shapes image's metadata entry: "a <colour>
    <shape>" for as many objects as fit (large ones first, ties in random order), joined by "and"; the
    words left name sizes ("a large red circle") and the background ("on navy"), in random order."""
    if words < 1:
        raise ConfigError(f"a brief caption needs at least one word; got {words}")
    objects = list(meta.get("objects") or [])
    rng.shuffle(objects)
    objects.sort(key=lambda o: o.get("size") != "large")  # stable: large first, random among equals
    if not objects:
        return " ".join(f"a {meta.get('background', 'plain')} background".split()[:words])
    first = objects[0]
    if words < 3:  # "circle", "red circle"
        return " ".join([first["color"], first["shape"]][-words:])
    named, used = [first], 3
    for o in objects[1:]:
        if used + 4 > words:  # " and a <colour> <shape>"
            break
        named.append(o)
        used += 4
    sized = [False] * len(named)
    background = False
    extras = ["size"] * len(named) + (["background"] if meta.get("background") else [])
    rng.shuffle(extras)
    for extra in extras:
        if extra == "size" and used + 1 <= words:
            sized[sized.index(False)] = True
            used += 1
        elif extra == "background" and used + 2 <= words:
            background, used = True, used + 2
    parts = [f"a {rng.choice(_SIZES[o['size']]) + ' ' if s else ''}{o['color']} {o['shape']}"
             for o, s in zip(named, sized)]
    return " and ".join(parts) + (f" on {meta['background']}" if background else "")


def attributes_captions(data: CIRDataset, ids: Sequence[str], n: int = 1, seed: int = 0,
                        words: int = 0) -> Captions:
    """Captions of generated shapes images from ``<root>/metadata.json`` (``n`` phrasings each): brief ones of
    at most ``words`` words, or (``words=0``) the full description."""
    path = Path(data.root) / "metadata.json"
    if not path.exists():
        raise DataError(f"the 'attributes' captioner describes images from {path}, which only the generated "
                        "shapes datasets have; for real data caption the images offline and pass "
                        "captioner=file with captions=<JSON file: image id -> caption>")
    try:
        metadata = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise DataError(f"{path} is not valid JSON ({exc}); regenerate the shapes dataset") from None
    out: Captions = {}
    for image in ids:
        if image in metadata:
            rngs = [random.Random(f"spn-caption/{seed}/{image}/{j}") for j in range(n)]
            out[image] = [brief(metadata[image], words, r) if words else describe(metadata[image], r) for r in rngs]
    return out


def file_captions(path, ids: Sequence[str], n: int = 1) -> Captions:
    """Captions from a JSON file ``{image id: caption or [captions]}``, for the images ``ids`` it has."""
    if not path:
        raise ConfigError("captioner=file needs the caption file: set captions=<JSON file mapping image id to a "
                          "caption or a list of captions> (e.g. --set spn.captions=llava_captions.json)")
    path = Path(path).expanduser()
    raw = read_json(path, "caption file", DataError)
    if not isinstance(raw, dict):
        raise DataError(f"caption file {path} must be a JSON object mapping image id to a caption "
                        "(or a list of captions)")
    out: Captions = {}
    for image in ids:
        value = raw.get(image)
        if value is None:
            continue
        texts = [value] if isinstance(value, str) else value
        if not isinstance(texts, list) or not texts or not all(isinstance(t, str) and t.strip() for t in texts):
            raise DataError(f"caption file {path}: the entry of {image!r} must be a non-empty string or a "
                            f"list of them, got {value!r}")
        out[image] = [texts[j % len(texts)].strip() for j in range(n)]
    return out


CAPTIONERS: Dict[str, str] = {
    "attributes": "describe generated shapes images from their metadata.json (stand-in for an MLLM)",
    "file": "captions made offline by any captioning model: JSON {image id: caption or [captions]}",
}


def caption_images(name: str, data: CIRDataset, ids: Sequence[str], n: int = 1, seed: int = 0,
                   path: Optional[str] = None, words: int = 0) -> Captions:
    """Run the captioner ``name`` over ``ids``; images it cannot caption are absent from the result.
    ``words`` is the word budget of captioners that write captions (0: none); ``file`` captions are as given."""
    makers: Dict[str, Callable[[], Captions]] = {
        "attributes": lambda: attributes_captions(data, ids, n, seed, words),
        "file": lambda: file_captions(path, ids, n),
    }
    if name not in makers:
        raise ConfigError(f"unknown captioner {name!r}; choose one of: "
                          + "; ".join(f"{k} ({v})" for k, v in CAPTIONERS.items()))
    return makers[name]()


__all__ = ["CAPTIONERS", "Captions", "attributes_captions", "brief", "caption_images", "file_captions"]
