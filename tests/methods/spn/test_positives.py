"""SPN's generated positives: rank-window pairing, duplicate merging, templates and the generated
triplets' texts and categories."""
import json
import random

import pytest
import torch
import torch.nn.functional as F

from cirbench.data.triplets import Triplet
from cirbench.errors import ConfigError
from cirbench_methods.spn.positives import (
    TEMPLATES,
    compose_text,
    duplicate_groups,
    fill,
    generate,
    pair_by_window,
    parse_templates,
    triplet_pool,
    window_bounds,
    write_official,
)


def _ranks(embed):
    """rank[i][j]: position of j among i's other images by cosine similarity (0 = nearest)."""
    x = F.normalize(embed, dim=-1)
    sims = x @ x.t()
    sims.fill_diagonal_(float("-inf"))
    order = sims.argsort(dim=1, descending=True)
    return {(i, int(j)): r for i in range(len(x)) for r, j in enumerate(order[i, :-1])}


# --------------------------------------------------------------------------- pairing, templates

def test_window_pairing_picks_partners_inside_the_bounds_and_never_the_image_itself():
    torch.manual_seed(0)
    embed = torch.randn(40, 8)
    ranks = _ranks(embed)
    pairs = pair_by_window(embed, range(40), 0.25, 0.5, per_reference=3, seed=1)
    lo, hi = window_bounds(39, 0.25, 0.5)
    assert (lo, hi) == (9, 20)
    assert len(pairs) == 40 * 3
    for ref, tgt, rank in pairs:
        assert ref != tgt
        assert lo <= ranks[(ref, tgt)] < hi and rank == ranks[(ref, tgt)]
    per_ref = {}
    for ref, tgt, _ in pairs:
        per_ref.setdefault(ref, []).append(tgt)
    assert all(len(set(v)) == 3 for v in per_ref.values())  # without replacement
    # absolute ranks (> 1); a window of width one is deterministic: the 3rd nearest other image
    for ref, tgt, _ in pair_by_window(embed, [0, 5], 2, 3):
        assert ranks[(ref, tgt)] == 2
    [(ref, nearest, rank)] = pair_by_window(embed, [3], 0.0, 0.001)  # fractions: at least one candidate
    assert ranks[(3, nearest)] == 0 and rank == 0
    assert window_bounds(39, 0, 1) == (0, 1) and window_bounds(39, 0.5, 0.999) == (19, 39)
    for low, high in ((0.5, 0.5), (0.5, 3), (-1, 0.5)):
        with pytest.raises(ConfigError, match="window"):
            window_bounds(39, low, high)


def test_identical_images_are_merged_and_never_paired():
    torch.manual_seed(0)
    embed = torch.randn(6, 4)
    embed[3] = embed[0] * 2.0  # the same picture (identical direction)
    ids = [f"img{i}" for i in range(6)]
    captions = {i: [f"caption of {i}"] for i in ids}
    gen = generate("cirr", ids, {}, embed, captions, None, low=0, high=0.999, templates=(2,), per_reference=5)
    assert gen.summary["duplicates_merged"] == 1
    assert "img3" not in gen.captions
    assert not any({t.reference, t.target} == {"img0", "img3"} or t.reference == t.target for t in gen.triplets)
    assert len(gen.triplets) == 5 * 4  # 5 distinct images, each paired with the 4 others


def test_templates_fill_correctly_and_overlong_texts_fall_back_to_the_target_caption():
    ref, tgt = "a red circle on gray ", "a blue square on gray"
    assert [fill(t, ref, tgt) for t in TEMPLATES] == [
        "a blue square on gray instead of a red circle on gray",
        "Unlike a red circle on gray, I want a blue square on gray",
        "a blue square on gray",
    ]
    rng = random.Random(0)
    texts = {compose_text(ref, tgt, (0, 1), rng)[0] for _ in range(30)}
    assert texts == {fill(TEMPLATES[0], ref, tgt), fill(TEMPLATES[1], ref, tgt)}
    assert compose_text(ref, tgt, (1,), rng, fits=lambda s: len(s) < 30) == ("a blue square on gray", True)
    assert compose_text(ref, tgt, (1,), rng, fits=lambda s: True)[1] is False
    assert parse_templates("0, 2") == (0, 2)
    for bad in ("", "3", "x"):
        with pytest.raises(ConfigError, match="templates"):
            parse_templates(bad)


def test_a_generated_triplet_has_one_text_and_a_fashioniq_one_its_reference_category(tmp_path):
    """Issue 13, item 3: one text per generated triplet (SPN4CIR: FashionIQ ``captions`` = [target caption])."""
    torch.manual_seed(0)
    ids = [f"d{i}" for i in range(5)] + [f"s{i}" for i in range(5)]
    cats = {i: "dress" if i.startswith("d") else "shirt" for i in ids}
    captions = {i: [f"{i} one"] for i in ids}
    gen = generate("fashioniq", ids, cats, torch.randn(10, 4), captions, ["d0", "s1", "unknown"], low=0.2,
                   high=0.6, templates=(2,), per_reference=2, max_triplets=3, seed=0)
    assert len(gen.triplets) == 3 and gen.summary["references"] == 2 and gen.summary["texts"] == 3
    for t in gen.triplets:
        assert t.reference in ("d0", "s1") and t.category == cats[t.reference]
        assert t.captions == (f"{t.target} one", f"{t.target} one")  # the one text (twice: a FashionIQ triplet)
        assert t.qid.startswith(f"{t.category}/spn-")
    write_official("fashioniq", gen, tmp_path)
    entries = [e for f in sorted((tmp_path / "captions").glob("*.json")) for e in json.loads(f.read_text())]
    assert sorted(e["captions"] for e in entries) == sorted([t.captions[0]] for t in gen.triplets)
    cirr = generate("cirr", ids, {}, torch.randn(10, 4), captions, None, low=0.2, high=0.6, templates=(0, 1))
    assert all(len(t.captions) == 1 for t in cirr.triplets)


def test_the_pool_is_each_image_of_the_training_triplets_once():
    """Issue 13, item 1: SPN4CIR pairs the images of the training triplets, not the split's image list."""
    triplets = [Triplet("dress/0", "a", "b", ("x", "y"), "dress"), Triplet("shirt/0", "b", "c", ("x", "y"), "shirt"),
                Triplet("shirt/1", "d", "a", ("x", "y"), "shirt")]
    pool, categories = triplet_pool(triplets)
    assert pool == ["a", "b", "c", "d"]
    assert categories == {"a": "dress", "b": "dress", "c": "shirt", "d": "shirt"}


def test_duplicate_groups_point_every_copy_at_its_first_row():
    torch.manual_seed(0)
    embed = torch.randn(6, 4)
    embed[4] = embed[1]
    embed[5] = embed[1] * 3  # the same direction: the same picture
    embed[2] = 0  # a zero vector has no copy but itself
    assert duplicate_groups(embed, chunk=2).tolist() == [0, 1, 2, 3, 1, 1]
