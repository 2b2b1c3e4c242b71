"""DQE-CIR's attribute vocabularies: colour and shape wording of generated and real captions."""
import json

import pytest

from cirbench_methods.dqe_cir.attributes import (
    attribute_counts,
    attribute_relevance,
    count_attributes,
)


def test_vocabularies_read_colour_and_shape_wording_of_every_dataset():
    c = count_attributes("Make the red circle blue")
    assert c == {"color": {"values": 2, "cues": 0}, "shape": {"values": 1, "cues": 0}}
    assert count_attributes("turn the star into a heart")["shape"]["values"] == 2
    assert count_attributes("is darker and has longer sleeves") == \
        {"color": {"values": 0, "cues": 1}, "shape": {"values": 0, "cues": 2}}
    assert count_attributes("is a navy v-neck")["color"]["values"] == 1  # FashionIQ wording
    assert count_attributes("is a navy v-neck")["shape"] == {"values": 1, "cues": 1}  # "v-neck", "neck"
    assert count_attributes("the dog is on a white couch")["color"]["values"] == 1  # CIRR wording
    assert count_attributes("move it to the left and make it bigger") == \
        {"color": {"values": 0, "cues": 0}, "shape": {"values": 0, "cues": 0}}
    counts = attribute_counts(["make the red circle blue", "turn the star into a heart", "move it left"])
    assert counts.shape == (3, 4)
    rel = attribute_relevance(counts)
    assert rel[0].tolist() == pytest.approx([2 / 3, 1 / 3])
    assert rel[1, 1] > rel[1, 0] and rel[2].tolist() == [0.0, 0.0]


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
