import json
import random

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from cirbench.data.triplets import Split, Triplet
from cirbench.errors import ConfigError, DataError
from cirbench.eval.evaluation import (
    EvalResult,
    cirr_rankings,
    evaluate,
    primary_value,
    score_cirr,
    score_fashioniq,
    selection_value,
    topk_rankings,
)
from tests.helpers import REAL_ANNOTATIONS, shared_or_skip


def fiq(qid, ref, tgt, cat):
    return Triplet(qid, ref, tgt, ("c1", "c2"), cat)


def cirr(qid, ref, tgt, members):
    return Triplet(qid, ref, tgt, ("cap",), "cirr", tuple(members))


def fillers(prefix, n):
    return [f"{prefix}{i}" for i in range(n)]


# ------------------------------------------------------------------ scoring by hand

def test_score_fashioniq_by_hand():
    triplets = [fiq("dress/0", "r", "t0", "dress"), fiq("dress/1", "r", "t1", "dress"),
                fiq("shirt/0", "r", "t2", "shirt"), fiq("shirt/1", "r", "t3", "shirt"),
                fiq("toptee/0", "r", "t4", "toptee")]
    rankings = {
        "dress/0": fillers("x", 4) + ["t0"] + fillers("y", 45),     # rank 5: hit@10, hit@50
        "dress/1": fillers("x", 19) + ["t1"] + fillers("y", 30),    # rank 20: hit@50 only
        "shirt/0": fillers("x", 59) + ["t2"],                       # rank 60: miss both
        "shirt/1": fillers("x", 50),                                # absent
        "toptee/0": ["t4"] + fillers("x", 49),                      # rank 1
    }
    m = score_fashioniq(triplets, rankings)
    assert list(m) == ["dress", "shirt", "toptee", "average"]
    assert m["dress"] == {"R@10": 50.0, "R@50": 100.0}
    assert m["shirt"] == {"R@10": 0.0, "R@50": 0.0}
    assert m["toptee"] == {"R@10": 100.0, "R@50": 100.0}
    assert m["average"]["R@10"] == pytest.approx(50.0)
    assert m["average"]["R@50"] == pytest.approx(200 / 3)
    assert m["average"]["Rmean"] == pytest.approx((50.0 + 200 / 3) / 2)
    assert primary_value("fashioniq", m) == pytest.approx(50.0)
    assert selection_value("fashioniq", m) == pytest.approx((50.0 + 200 / 3) / 2)


def test_score_fashioniq_average_over_present_categories_and_drop_reference():
    triplets = [fiq("dress/0", "ref", "t", "dress"), fiq("shirt/0", "ref", "t", "shirt")]
    rankings = {"dress/0": ["ref"] + fillers("x", 9) + ["t"], "shirt/0": ["t"]}
    kept = score_fashioniq(triplets, rankings)
    assert set(kept) == {"dress", "shirt", "average"}
    assert kept["dress"]["R@10"] == 0.0 and kept["dress"]["R@50"] == 100.0
    assert kept["average"]["R@10"] == 50.0
    dropped = score_fashioniq(triplets, rankings, drop_reference=True)   # target moves up to rank 10
    assert dropped["dress"]["R@10"] == 100.0 and dropped["average"]["R@10"] == 100.0


CIRR_TRIPLETS = [
    cirr("1", "r1", "t1", ["r1", "t1", "a1", "b1", "c1", "d1"]),
    cirr("2", "r2", "t2", ["a2", "r2", "t2", "b2", "c2", "d2"]),
    cirr("3", "r3", "t3", ["r3", "t3", "a3", "b3", "c3", "d3"]),
    cirr("4", "r4", "t4", ["r4", "t4", "a4", "b4", "c4", "d4"]),
]
CIRR_RANKINGS = {
    "1": ["r1", "t1"] + fillers("x", 48),                        # reference first: t1 becomes rank 1
    "2": ["r2", "y1", "y2", "y3", "a2", "t2"] + fillers("x", 44),  # rank 5 after the drop (6 before)
    "3": ["i", "j", "k"],                                        # target and all members absent
    "4": ["a4"] + fillers("x", 8) + ["t4"],                      # rank 10; reference not in the list
}


CIRR_SUBSETS = {"1": ["t1"], "2": ["a2", "t2"], "3": [], "4": ["a4", "t4"]}   # members in ranked order


def test_score_cirr_by_hand_reference_dropped():
    m = score_cirr(CIRR_TRIPLETS, CIRR_RANKINGS, CIRR_SUBSETS)
    assert list(m) == ["R@1", "R@5", "R@10", "R@50", "Rsubset@1", "Rsubset@2", "Rsubset@3", "Avg"]
    assert m["R@1"] == 25.0 and m["R@5"] == 50.0 and m["R@10"] == 75.0 and m["R@50"] == 75.0
    assert m["Rsubset@1"] == 25.0 and m["Rsubset@2"] == 75.0 and m["Rsubset@3"] == 75.0
    assert m["Avg"] == (50.0 + 25.0) / 2
    assert primary_value("cirr", m) == selection_value("cirr", m) == 37.5


def test_score_cirr_without_subset_rankings_reports_rsubset_as_not_available():
    # query 3's target leads its subset but is absent from the top-k list: reading the subset
    # off that list would count it as a miss, so without subset rankings there is no Rsubset
    m = score_cirr(CIRR_TRIPLETS, CIRR_RANKINGS)
    assert list(m) == ["R@1", "R@5", "R@10", "R@50", "Rsubset@1", "Rsubset@2", "Rsubset@3", "Avg"]
    assert m["R@1"] == 25.0 and m["R@5"] == 50.0 and m["R@10"] == 75.0 and m["R@50"] == 75.0
    assert m["Rsubset@1"] is None and m["Rsubset@2"] is None and m["Rsubset@3"] is None and m["Avg"] is None
    full = score_cirr(CIRR_TRIPLETS, CIRR_RANKINGS, {**CIRR_SUBSETS, "3": ["t3", "a3", "b3"]})
    assert full["Rsubset@1"] == 50.0 and {k: full[k] for k in ("R@1", "R@5", "R@10", "R@50")} == \
        {k: m[k] for k in ("R@1", "R@5", "R@10", "R@50")}


def test_score_cirr_reference_would_count_if_not_dropped():
    t = [cirr("1", "r", "t", ["r", "t"])]
    m = score_cirr(t, {"1": ["r"] + fillers("x", 4) + ["t"]})   # rank 6 with the reference, 5 without
    assert m["R@5"] == 100.0 and m["R@1"] == 0.0


def test_score_cirr_explicit_subset_rankings():
    subset = {
        "1": ["a1", "b1"],                 # target absent -> not retrieved
        "2": ["r2", "t2", "a2"],           # reference dropped -> t2 first
        "3": ["t3"],
        "4": ["not-a-member", "t4"],       # non-members are ignored
    }
    m = score_cirr(CIRR_TRIPLETS, CIRR_RANKINGS, subset)
    assert m["Rsubset@1"] == 75.0 and m["Rsubset@2"] == 75.0 and m["Rsubset@3"] == 75.0
    assert m["R@5"] == 50.0 and m["Avg"] == (50.0 + 75.0) / 2


def test_scoring_errors():
    with pytest.raises(DataError, match="lack 1"):
        score_cirr(CIRR_TRIPLETS, {k: v for k, v in CIRR_RANKINGS.items() if k != "3"})
    with pytest.raises(DataError, match="subset"):
        score_cirr(CIRR_TRIPLETS, CIRR_RANKINGS, {"1": []})
    with pytest.raises(DataError, match="without targets"):
        score_fashioniq([fiq("dress/0", "r", None, "dress")], {"dress/0": []})
    with pytest.raises(DataError):
        score_cirr([], {})


# ------------------------------------------------------------------ ranking

def brute_force(q, g, ids, k, exclude):
    scores = F.normalize(q, dim=-1) @ F.normalize(g, dim=-1).T
    pos = {x: j for j, x in enumerate(ids)}
    out = []
    for i, row in enumerate(scores):
        e = pos.get(exclude[i]) if exclude and exclude[i] is not None else None
        order = [j for j in torch.argsort(row, descending=True).tolist() if j != e]
        out.append([ids[j] for j in order[:k]])
    return out


@pytest.mark.parametrize("chunk_size", [1, 7, 37, 1024])
@pytest.mark.parametrize("k", [1, 10, 101])
def test_topk_matches_brute_force(chunk_size, k):
    gen = torch.Generator().manual_seed(k * 1000 + chunk_size)
    q, g = torch.randn(37, 16, generator=gen), torch.randn(101, 16, generator=gen)
    ids = [f"g{j}" for j in range(101)]
    exclude = [None if i % 5 == 0 else ("elsewhere" if i % 5 == 1 else f"g{(i * 13) % 101}") for i in range(37)]
    for ex in (None, exclude):
        got = topk_rankings(q, g, ids, k=k, exclude=ex, chunk_size=chunk_size)
        assert got == brute_force(q, g, ids, k, ex)
    got = topk_rankings(q, g, ids, k=k, exclude=exclude, chunk_size=chunk_size)
    for i, ranking in enumerate(got):
        assert exclude[i] not in ranking
        full = k == 101 and exclude[i] in ids
        assert len(ranking) == (100 if full else k)


def test_topk_exclude_shifts_and_cosine():
    g = torch.eye(4)
    ids = ["a", "b", "c", "d"]
    q = torch.tensor([[1.0, 0.8, 0.5, 0.1]])
    assert topk_rankings(q, g, ids, k=3) == [["a", "b", "c"]]
    assert topk_rankings(q, g, ids, k=3, exclude=["a"]) == [["b", "c", "d"]]
    # gallery norms do not matter: similarity is cosine
    assert topk_rankings(q, g * torch.tensor([[1.0], [100.0], [0.01], [1.0]]), ids, k=4) == [["a", "b", "c", "d"]]
    with pytest.raises(ValueError):
        topk_rankings(q, g, ids[:3])
    with pytest.raises(ValueError):
        topk_rankings(q, g, ["a", "a", "c", "d"])


def test_cirr_rankings_order_and_reference_removed():
    emb = torch.eye(6)
    t = cirr("1", "r", "t", list("rtabcd"))
    q = torch.tensor([[9.0, 0.5, 0.9, 0.1, 0.7, 0.3]])
    top, subset = cirr_rankings(q, emb, list("rtabcd"), [t], k=3)
    assert top == {"1": ["a", "c", "t"]} and subset == {"1": ["a", "c", "t", "d", "b"]}
    with pytest.raises(ValueError, match="query rows"):
        cirr_rankings(q, emb, list("rtabcd"), [t, t])


def test_members_outside_the_gallery_are_left_out_of_the_subset_ranking():
    # "gone": a member whose image is missing (the loader drops it from the gallery; it has no
    # embedding). As CLIP4Cir's filter of the gallery ranking, the subset ranking leaves it out.
    names = ["ref", "tgt", "m1", "m2"] + fillers("o", 3)
    emb, index = one_hot_index(names)
    q = torch.zeros(1, len(names))
    q[0, index["m1"]], q[0, index["tgt"]], q[0, index["m2"]] = 0.9, 0.8, 0.1
    t = cirr("1", "ref", "tgt", ["ref", "tgt", "gone", "m1", "m2"])
    res = evaluate("cirr", Split("val", [t], {"cirr": names}), q, emb, index)
    assert res.subset_rankings == {"1": ["m1", "tgt", "m2"]}
    assert res.metrics["Rsubset@1"] == 0.0 and res.metrics["Rsubset@2"] == 100.0


def near_tie_case(n=32, dim=512, n_fill=40):
    """CIRR queries whose members a_i, b_i score within a few ulps of each other (target a_i), at the
    first seed where scoring each query's members with a batched einsum (a separate product from the
    gallery matmul) orders some pair a_i, b_i strictly unlike the matmul does."""
    names = [f"a{i}" for i in range(n)] + [f"b{i}" for i in range(n)] + fillers("o", n_fill)
    index = {x: j for j, x in enumerate(names)}
    triplets = [cirr(str(i), f"o{i}", f"a{i}", [f"o{i}", f"b{i}", f"a{i}", f"o{i + 1}", f"o{i + 2}", f"o{i + 3}"])
                for i in range(n)]
    rows = torch.tensor([[index[m] for m in t.members if m != t.reference] for t in triplets])
    for seed in range(50):
        gen = torch.Generator().manual_seed(seed)
        q = torch.randn(n, dim, generator=gen)
        a = q + 0.3 * torch.randn(n, dim, generator=gen)
        b = a + 1e-6 * torch.randn(n, dim, generator=gen)
        gallery = torch.cat([a, b, torch.randn(n_fill, dim, generator=gen)])
        qn, gn = F.normalize(q, dim=-1), F.normalize(gallery, dim=-1)
        i = torch.arange(n)
        matmul = (qn @ gn.T)[i, i] - (qn @ gn.T)[i, i + n]                  # a_i - b_i
        einsum = torch.einsum("bd,bmd->bm", qn, gn[rows])                     # members b_i, a_i, ...
        if ((einsum[:, 1] - einsum[:, 0]) * matmul < 0).any():               # strictly opposite orders
            break
    return Split("val", triplets, {"cirr": names}), q, gallery, index


def test_subset_ranking_uses_the_main_rankings_scores_on_near_ties():
    split, q, gallery, index = near_tie_case()
    res = evaluate("cirr", split, q, gallery, index)
    for t in split.triplets:
        members = set(t.members) - {t.reference}
        in_main = [x for x in res.rankings[t.qid] if x in members]
        assert set(in_main[:2]) == {f"a{t.qid}", f"b{t.qid}"}   # the near-tied pair leads the ranking
        assert res.subset_rankings[t.qid][:len(in_main)] == in_main, t.qid
    assert res.metrics["Rsubset@1"] == res.metrics["R@1"]   # the target is a_i, a_i or b_i leads both


def test_ties_keep_gallery_order_in_every_ranking():
    # gallery rows are basis vectors, so a query's scores are its own (normalised) entries, exactly:
    # rows sharing a basis vector tie bit for bit, whatever the matmul's summation order
    gen = torch.Generator().manual_seed(0)
    cluster = torch.randint(0, 4, (300,), generator=gen)
    gallery = torch.eye(4)[cluster]
    ids = [f"g{j}" for j in range(300)]
    q = torch.tensor([[0.9, 0.7, 0.5, 0.3], [0.1, 0.2, 0.8, 0.4], [0.5, 0.5, 0.1, 0.1], [1.0, 1.0, 1.0, 1.0]])

    def stable(i, exclude=None):
        order = sorted(range(300), key=lambda j: (-float(q[i, cluster[j]]), j))
        return [ids[j] for j in order if ids[j] != exclude]

    exclude = ["g3", None, ids[int((cluster == 0).nonzero()[0])], "g299"]
    clean_cut = int((cluster == 2).sum())   # query 1 (nothing excluded): ties inside its top-k, none across the cut
    for k in (1, 49, 50, clean_cut, 120, 300):
        for chunk_size in (1, 3, 1024):
            got = topk_rankings(q, gallery, ids, k=k, exclude=exclude, chunk_size=chunk_size)
            assert got == [stable(i, exclude[i])[:k] for i in range(4)], (k, chunk_size)
    # CIRR: the subset ranking keeps gallery order on ties too, whatever order members are listed in
    members = [ids[j] for j in (cluster == 1).nonzero().squeeze(1).tolist()[:5]][::-1]   # five tied members
    t = cirr("1", "g0", members[2], ["g0"] + members)
    top, subset = cirr_rankings(q[2:3], gallery, ids, [t], k=300)
    assert subset == {"1": sorted(members, key=lambda x: int(x[1:]))}
    assert subset["1"] == [x for x in top["1"] if x in members]


# ------------------------------------------------------------------ evaluate on hand-made embeddings

def one_hot_index(names):
    return torch.eye(len(names)), {n: i for i, n in enumerate(names)}


def test_evaluate_fashioniq_reference_kept_vs_excluded():
    dress = ["dref", "dtgt"] + fillers("d", 10)
    shirt = ["sref", "stgt"] + fillers("s", 3)
    emb, index = one_hot_index(dress + shirt)
    q_dress = torch.zeros(len(index))
    q_dress[index["dref"]] = 1.0
    for j, w in enumerate(np.linspace(0.9, 0.5, 9)):    # nine distractors between reference and target
        q_dress[index[f"d{j}"]] = float(w)
    q_dress[index["dtgt"]] = 0.45
    q_shirt = torch.zeros(len(index))
    q_shirt[index["stgt"]], q_shirt[index["sref"]] = 1.0, 0.5
    split = Split("val", [fiq("dress/0", "dref", "dtgt", "dress"), fiq("shirt/0", "sref", "stgt", "shirt")],
                  {"dress": dress, "shirt": shirt})
    queries = torch.stack([q_dress, q_shirt])

    kept = evaluate("fashioniq", split, queries, emb, index)
    assert kept.rankings["dress/0"][0] == "dref" and kept.rankings["dress/0"][10] == "dtgt"
    assert len(kept.rankings["dress/0"]) == 12 and set(kept.rankings["shirt/0"]) == set(shirt)
    assert kept.metrics["dress"] == {"R@10": 0.0, "R@50": 100.0}
    assert kept.metrics["shirt"] == {"R@10": 100.0, "R@50": 100.0}
    assert kept.metrics["average"] == {"R@10": 50.0, "R@50": 100.0, "Rmean": 75.0}
    assert kept.protocol["reference_in_gallery"] is True
    assert kept.protocol["gallery_size"] == {"dress": 12, "shirt": 5} and kept.subset_rankings == {}

    excluded = evaluate("fashioniq", split, queries, emb, index, exclude_reference=True)
    assert "dref" not in excluded.rankings["dress/0"] and excluded.rankings["dress/0"][9] == "dtgt"
    assert excluded.metrics["dress"]["R@10"] == 100.0 and excluded.metrics["average"]["Rmean"] == 100.0
    assert excluded.protocol["reference_in_gallery"] is False
    # metrics are exactly what step 2 gives on the returned rankings
    assert excluded.metrics == score_fashioniq(split.triplets, excluded.rankings)


def test_evaluate_cirr_hand_made():
    names = ["ref", "tgt", "dis", "m3", "m4", "m5"] + fillers("o", 4)
    emb, index = one_hot_index(names)
    q = torch.zeros(1, len(names))
    q[0, index["ref"]], q[0, index["dis"]], q[0, index["o0"]], q[0, index["tgt"]] = 1.0, 0.95, 0.9, 0.8
    q[0, index["m3"]] = 0.1
    t = cirr("7", "ref", "tgt", ["ref", "tgt", "dis", "m3", "m4", "m5"])
    split = Split("val", [t], {"cirr": names})
    res = evaluate("cirr", split, q, emb, index)
    assert isinstance(res, EvalResult)
    assert res.rankings["7"][:3] == ["dis", "o0", "tgt"] and "ref" not in res.rankings["7"]
    assert len(res.rankings["7"]) == len(names) - 1
    assert res.subset_rankings["7"][:3] == ["dis", "tgt", "m3"] and sorted(res.subset_rankings["7"][3:]) == ["m4", "m5"]
    assert res.metrics == {"R@1": 0.0, "R@5": 100.0, "R@10": 100.0, "R@50": 100.0,
                           "Rsubset@1": 0.0, "Rsubset@2": 100.0, "Rsubset@3": 100.0, "Avg": 50.0}
    assert res.metrics == score_cirr(split.triplets, res.rankings, res.subset_rankings)
    assert res.protocol["reference_in_gallery"] is False and res.protocol["gallery_size"] == len(names)
    with pytest.raises(ConfigError):
        evaluate("cirr", split, q, emb, index, exclude_reference=False)
    with pytest.raises(ConfigError):
        evaluate("nope", split, q, emb, index)

    test_split = Split("test1", [t.replace(target=None)], {"cirr": names})
    res = evaluate("cirr", test_split, q, emb, index)
    assert res.metrics == {} and res.rankings["7"][0] == "dis"


# ------------------------------------------------------------------ real annotations

def load_cirr_val():
    root = REAL_ANNOTATIONS / "cirr"
    shared_or_skip(root / "captions/cap.rc2.val.json")
    captions = json.loads((root / "captions/cap.rc2.val.json").read_text())
    gallery = list(json.loads((root / "image_splits/split.rc2.val.json").read_text()))
    triplets = [cirr(str(c["pairid"]), c["reference"], c["target_hard"], c["img_set"]["members"]) for c in captions]
    return Split("val", triplets, {"cirr": gallery})


def clip4cir_reference_metrics(query, emb, split, index):
    """CLIP4Cir's compute_cirr_val_metrics (full argsort, remove reference, group mask), on integer ids."""
    gallery = split.gallery["cirr"]
    g = F.normalize(emb[[index[x] for x in gallery]], dim=-1)
    sorted_idx = torch.argsort(1 - F.normalize(query, dim=-1) @ g.T, dim=-1).numpy()
    pos = {x: j for j, x in enumerate(gallery)}
    ref = np.array([pos[t.reference] for t in split.triplets])
    tgt = np.array([pos[t.target] for t in split.triplets])
    members = np.array([[pos[m] for m in t.members] for t in split.triplets])
    sorted_idx = sorted_idx[sorted_idx != ref[:, None]].reshape(len(ref), -1)
    labels = sorted_idx == tgt[:, None]
    group_mask = (sorted_idx[..., None] == members[:, None, :]).any(-1)
    group_labels = labels[group_mask].reshape(len(ref), -1)
    m = {f"R@{k}": labels[:, :k].sum() / len(ref) * 100 for k in (1, 5, 10, 50)}
    m.update({f"Rsubset@{k}": group_labels[:, :k].sum() / len(ref) * 100 for k in (1, 2, 3)})
    return m


def test_real_cirr_val_random_and_perfect():
    split = load_cirr_val()
    gallery = split.gallery["cirr"]
    assert len(split.triplets) == 4181 and len(gallery) == 2297
    index = {x: i for i, x in enumerate(gallery)}
    gen = torch.Generator().manual_seed(0)
    emb = torch.randn(len(gallery), 64, generator=gen)
    query = torch.randn(len(split.triplets), 64, generator=gen)

    res = evaluate("cirr", split, query, emb, index, chunk_size=500)
    assert res.protocol["n_queries"] == 4181 and res.protocol["gallery_size"] == 2297
    assert all(0.0 <= v <= 100.0 for v in res.metrics.values())
    assert all(len(r) == 50 for r in res.rankings.values())
    assert all(t.reference not in res.rankings[t.qid] for t in split.triplets)
    assert all(len(res.subset_rankings[t.qid]) == 5 for t in split.triplets)
    # random queries -> chance level (n = 4181; tolerances are ~5 standard errors)
    chance = 100 / (len(gallery) - 1)
    for k in (1, 5, 10, 50):
        assert res.metrics[f"R@{k}"] == pytest.approx(k * chance, abs=max(0.6, 5 * (k * chance * 100 / 4181) ** 0.5))
    for k in (1, 2, 3):
        assert res.metrics[f"Rsubset@{k}"] == pytest.approx(20.0 * k, abs=4.0)
    # identical to CLIP4Cir's full-argsort implementation
    reference = clip4cir_reference_metrics(query, emb, split, index)
    for key, value in reference.items():
        assert res.metrics[key] == pytest.approx(value, abs=1e-9), key

    # a query equal to its target's embedding ranks the target first: 100 everywhere
    perfect = evaluate("cirr", split, emb[[index[t.target] for t in split.triplets]], emb, index)
    assert all(v == pytest.approx(100.0) for v in perfect.metrics.values())
    # the same from rankings alone: target first, then random others
    rng = random.Random(0)
    rankings = {t.qid: [t.target] + rng.sample(gallery, 49) for t in split.triplets}
    subsets = {t.qid: [t.target] for t in split.triplets}
    assert all(v == pytest.approx(100.0) for v in score_cirr(split.triplets, rankings, subsets).values())
    # random top-50 lists scored directly -> R@K near chance
    rankings = {t.qid: rng.sample(gallery, 51) for t in split.triplets}
    m = score_cirr(split.triplets, rankings)
    assert m["R@50"] == pytest.approx(50 * chance, abs=1.2) and m["R@1"] < 0.5 and m["Avg"] is None


def test_real_fashioniq_val_random_and_perfect():
    root = REAL_ANNOTATIONS / "fashioniq"
    shared_or_skip(root / "captions/cap.dress.val.json")
    triplets, gallery = [], {}
    for cat in ("dress", "shirt", "toptee"):
        caps = json.loads((root / f"captions/cap.{cat}.val.json").read_text())
        triplets += [fiq(f"{cat}/{i}", c["candidate"], c["target"], cat) for i, c in enumerate(caps)]
        gallery[cat] = json.loads((root / f"image_splits/split.{cat}.val.json").read_text())
    split = Split("val", triplets, gallery)
    names = sorted({x for g in gallery.values() for x in g})
    index = {x: i for i, x in enumerate(names)}
    emb = torch.randn(len(names), 32, generator=torch.Generator().manual_seed(1))

    perfect = evaluate("fashioniq", split, emb[[index[t.target] for t in triplets]], emb, index)
    assert perfect.metrics["average"] == {"R@10": 100.0, "R@50": 100.0, "Rmean": 100.0}
    assert perfect.protocol["gallery_size"] == {c: len(g) for c, g in gallery.items()}

    query = torch.randn(len(triplets), 32, generator=torch.Generator().manual_seed(2))
    res = evaluate("fashioniq", split, query, emb, index)
    for cat in ("dress", "shirt", "toptee"):
        assert res.metrics[cat]["R@50"] == pytest.approx(5000 / len(gallery[cat]), abs=2.5)
    assert res.metrics == score_fashioniq(triplets, res.rankings)
