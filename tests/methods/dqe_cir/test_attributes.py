"""DQE-CIR's attribute vocabularies: general colour / shape wording, none of it from the shapes generator."""
import json
import re

import pytest

from cirbench.data import shapes
from cirbench.data.datasets import shapes_root
from cirbench_methods.dqe_cir import attributes
from cirbench_methods.dqe_cir.attributes import (
    COLOR,
    SHAPE,
    attribute_counts,
    attribute_relevance,
    count_attributes,
    words,
)
from tests.test_imports import import_graph

LEXICON = COLOR.values | COLOR.cues | SHAPE.values | SHAPE.cues
ATTRIBUTE_NAMES = {"color", "shape"}  # the attributes' own names: general words the generator also writes


def test_vocabularies_read_colour_and_shape_wording_of_every_dataset():
    c = count_attributes("Make the red circle blue")
    assert c == {"color": {"values": 2, "cues": 0}, "shape": {"values": 1, "cues": 0}}
    assert count_attributes("turn the star into a heart")["shape"] == {"values": 2, "cues": 0}
    assert count_attributes("is darker and has longer sleeves") == \
        {"color": {"values": 0, "cues": 1}, "shape": {"values": 0, "cues": 2}}
    assert count_attributes("is a navy v-neck")["color"]["values"] == 1  # FashionIQ wording
    assert count_attributes("is a navy v-neck")["shape"] == {"values": 1, "cues": 1}  # "v-neck", "neck"
    assert count_attributes("has a striped print")["color"]["values"] == 2  # patterns count for colour
    assert count_attributes("the dog is on a white couch")["color"]["values"] == 1  # CIRR wording
    assert count_attributes("move it to the left and make it bigger") == \
        {"color": {"values": 0, "cues": 0}, "shape": {"values": 0, "cues": 0}}
    assert count_attributes("no longer has the circle")["shape"] == {"values": 1, "cues": 0}  # time, not length
    counts = attribute_counts(["make the red circle blue", "turn the star into a heart", "move it left"])
    assert counts.shape == (3, 4)
    rel = attribute_relevance(counts)
    assert rel[0].tolist() == pytest.approx([2 / 3, 1 / 3])
    assert rel[1].tolist() == [0.0, 1.0] and rel[2].tolist() == [0.0, 0.0]


def test_every_lexicon_word_comes_from_a_documented_general_vocabulary():
    sources = attributes.SOURCES
    assert set(sources) == {"BASIC_COLOR_TERMS", "COLOR_NAMES", "COLOR_QUALITIES", "PATTERN_NAMES",
                            "GEOMETRIC_SHAPES", "SHAPE_QUALITIES", "GARMENT_CUTS", "GARMENT_PARTS"}
    for name in sources:
        assert f"``{name}``" in attributes.__doc__, f"{name} is not documented in the module docstring"
    assert LEXICON == set().union(*sources.values())
    assert {"black", "white", "red", "green", "yellow", "blue", "brown", "purple", "pink", "orange",
            "grey"} <= sources["BASIC_COLOR_TERMS"]  # Berlin & Kay's eleven
    # the lexicon is not built from the generator: attributes.py imports nothing of cirbench
    assert not any(m.startswith("cirbench.") for m in import_graph()["cirbench_methods.dqe_cir.attributes"])


def _template_glue():
    """The generator's caption templates with their {fields} removed: the words it writes around
    the colour / shape / size / position names it fills in."""
    templates = [t for group in shapes._TEMPLATES.values() for t in group] + list(shapes._JOINS)
    return [re.sub(r"\{[a-z]+\}", " ", t) for t in templates]


def _generated_captions():
    out = []
    for layout in shapes.LAYOUTS:
        for path in sorted((shapes_root(layout) / "captions").glob("*.json")):
            for e in json.loads(path.read_text()):
                out += e["captions"] if "captions" in e else [e["caption"]]
    return out


def test_no_lexicon_word_comes_from_the_generators_templates():
    for cue in ("becomes", "into", "paint", "recolor", "swap", "replace", "turn", "instead"):
        assert cue not in LEXICON, f"{cue!r} is template glue of the shapes generator, not an attribute word"
    # the words around the filled-in names: the lexicon counts none of them but the attributes' names
    for glue in _template_glue():
        counted = sum(n for c in count_attributes(glue).values() for n in c.values())
        assert counted == sum(w in ATTRIBUTE_NAMES for w in words(glue)), glue
    # in generated captions the lexicon counts the generator's colour and shape names (which the
    # general lists name too) and the attributes' names, nothing else
    fills = {w for name in (*shapes.COLORS, *shapes.BACKGROUNDS, *shapes.SHAPES) for w in words(name)}
    assert fills <= LEXICON  # the general lists know every colour and shape the generator draws
    captions = _generated_captions()
    assert len(captions) > 300
    general = set().union(*attributes.SOURCES.values())
    seen = set()
    for caption in captions:
        ws = words(caption)
        seen |= {w for w in ws if w in LEXICON}
        counted = sum(n for c in count_attributes(caption).values() for n in c.values())
        assert counted == sum(w in fills or w in ATTRIBUTE_NAMES for w in ws), caption
    assert seen <= general  # ("longer" of "no longer has ..." is general too, and not counted there)


def test_vocabularies_cover_real_captions(real_annotations):
    texts = []
    for cat in ("dress", "shirt", "toptee"):
        for e in json.loads((real_annotations / f"fashioniq/captions/cap.{cat}.val.json").read_text()):
            texts += e["captions"]
    rel = attribute_relevance(attribute_counts(texts))
    assert (rel.sum(1) > 0).float().mean() > 0.6  # most FashionIQ captions name a colour or a cut
    assert (rel[:, 0] > 0).float().mean() > 0.3 and (rel[:, 1] > 0).float().mean() > 0.2
    cirr = [e["caption"] for e in json.loads((real_annotations / "cirr/captions/cap.rc2.val.json").read_text())]
    assert (attribute_relevance(attribute_counts(cirr))[:, 0] > 0).float().mean() > 0.1
