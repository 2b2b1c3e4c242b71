"""`cirbench score`: agrees with an independent implementation of the CLIP4Cir protocol on the real
annotation files, re-scores a run's saved rankings to its metrics.json, and rejects bad files clearly."""
import json
import random

import pytest

from cirbench.data.datasets import shapes_root
from cirbench.runner import Workspace, execute
from cirbench.runs import RunSpec
from tests.helpers import run_cli as cirbench

CATS = ("dress", "shirt", "toptee")




def score_json(capsys, *args):
    code, out, err = cirbench(capsys, "score", *args, "--json")
    assert code == 0, err
    return json.loads(out)


# ---------------------------------------------------------------- the protocol, written from scratch

def reference_fashioniq(annotations, predictions, drop_reference=False):
    """CLIP4Cir's FashionIQ validation: per category, hit if the target is in the top K; plain mean."""
    out = {}
    for cat in CATS:
        entries = json.loads((annotations / f"captions/cap.{cat}.val.json").read_text())
        hits = {10: 0, 50: 0}
        for i, e in enumerate(entries):
            ranking = predictions[f"{cat}/{i}"]
            if drop_reference:
                ranking = [x for x in ranking if x != e["candidate"]]
            for k in hits:
                hits[k] += e["target"] in ranking[:k]
        out[cat] = {f"R@{k}": 100 * h / len(entries) for k, h in hits.items()}
    avg = {f"R@{k}": sum(out[c][f"R@{k}"] for c in CATS) / 3 for k in (10, 50)}
    avg["Rmean"] = (avg["R@10"] + avg["R@50"]) / 2
    out["average"] = avg
    return out


def reference_cirr(annotations, predictions, subset=None):
    """CLIP4Cir's CIRR validation: drop the reference, R@K; subset = members in ranked order."""
    entries = json.loads((annotations / "captions/cap.rc2.val.json").read_text())
    r = {1: 0, 5: 0, 10: 0, 50: 0}
    rs = {1: 0, 2: 0, 3: 0}
    for e in entries:
        ranking = [x for x in predictions[str(e["pairid"])] if x != e["reference"]]
        group = [m for m in e["img_set"]["members"] if m != e["reference"]]
        source = ranking if subset is None else subset[str(e["pairid"])]
        ordered = [x for x in source if x in group]
        for k in r:
            r[k] += e["target_hard"] in ranking[:k]
        for k in rs:
            rs[k] += e["target_hard"] in ordered[:k]
    n = len(entries)
    out = {f"R@{k}": 100 * v / n for k, v in r.items()}
    out.update({f"Rsubset@{k}": 100 * v / n for k, v in rs.items()})
    out["Avg"] = (out["R@5"] + out["Rsubset@1"]) / 2
    return out


def assert_close(a, b):
    if isinstance(b, dict):
        assert set(a) == set(b)
        for k in b:
            assert_close(a[k], b[k])
    else:
        assert abs(a - b) <= 1e-6


def make_ranking(rng, gallery, target, reference, kind):
    """random: 50 gallery ids, target inserted half the time; perfect: target first;
    adversarial: reference first, target absent or at position 10 (0-based)."""
    others = rng.sample([g for g in gallery if g not in (target, reference)], 49)
    if kind == "random":
        ranking = others + [reference if rng.random() < 0.3 else rng.choice(gallery)]
        ranking = list(dict.fromkeys(ranking))
        if rng.random() < 0.5 and target not in ranking:
            ranking[rng.randrange(len(ranking))] = target
        while len(ranking) < 50:
            ranking.append(next(g for g in gallery if g not in ranking))
        rng.shuffle(ranking)
        return ranking
    if kind == "perfect":
        return [target] + others
    absent = rng.random() < 0.5
    return [reference] + others[:9] + ([others[9]] if absent else [target]) + others[10:]


@pytest.fixture(scope="module")
def fiq(real_annotations):
    root = real_annotations / "fashioniq"
    data = {c: (json.loads((root / f"captions/cap.{c}.val.json").read_text()),
                json.loads((root / f"image_splits/split.{c}.val.json").read_text())) for c in CATS}
    return root, data


@pytest.fixture(scope="module")
def cirr(real_annotations):
    root = real_annotations / "cirr"
    return (root, json.loads((root / "captions/cap.rc2.val.json").read_text()),
            list(json.loads((root / "image_splits/split.rc2.val.json").read_text())))


@pytest.mark.parametrize("kind", ["random", "perfect", "adversarial"])
def test_fashioniq_matches_the_protocol_on_real_annotations(capsys, tmp_path, fiq, kind):
    root, data = fiq
    rng = random.Random(kind)
    pred = {f"{c}/{i}": make_ranking(rng, gallery, e["target"], e["candidate"], kind)
            for c, (entries, gallery) in data.items() for i, e in enumerate(entries)}
    path = tmp_path / "pred.json"
    path.write_text(json.dumps(pred))
    kept = score_json(capsys, "--dataset", "fashioniq", "--annotations", root, "--predictions", path)
    assert_close(kept, reference_fashioniq(root, pred))
    dropped = score_json(capsys, "--dataset", "fashioniq", "--annotations", root, "--predictions", path,
                         "--exclude-reference")
    assert_close(dropped, reference_fashioniq(root, pred, drop_reference=True))
    if kind == "perfect":
        assert kept["average"] == {"R@10": 100.0, "R@50": 100.0, "Rmean": 100.0}
    if kind == "adversarial":  # target at rank 11 behind the reference: a hit only once the reference goes
        assert kept["average"]["R@10"] == 0 and 0 < dropped["average"]["R@10"] < 100


@pytest.mark.parametrize("kind", ["random", "perfect", "adversarial"])
def test_cirr_matches_the_protocol_on_real_annotations(capsys, tmp_path, cirr, kind):
    root, entries, gallery = cirr
    rng = random.Random(kind)
    main_ = {"version": "rc2", "metric": "recall"}
    sub = {"version": "rc2", "metric": "recall_subset"}
    for e in entries:
        main_[str(e["pairid"])] = make_ranking(rng, gallery, e["target_hard"], e["reference"], kind)
        group = [m for m in e["img_set"]["members"] if m != e["reference"]]
        rng.shuffle(group)
        if kind == "perfect":
            group.remove(e["target_hard"])
            group.insert(0, e["target_hard"])
        elif kind == "adversarial":
            group.remove(e["target_hard"])
        sub[str(e["pairid"])] = group[:3]
    p, s = tmp_path / "recall.json", tmp_path / "recall_subset.json"
    p.write_text(json.dumps(main_))
    s.write_text(json.dumps(sub))
    body = {k: v for k, v in main_.items() if k not in ("version", "metric")}
    alone = score_json(capsys, "--dataset", "cirr", "--annotations", root, "--predictions", p)
    recalls = {k: v for k, v in reference_cirr(root, body).items() if k.startswith("R@")}
    assert_close({k: v for k, v in alone.items() if k.startswith("R@")}, recalls)
    assert {k: v for k, v in alone.items() if not k.startswith("R@")} == dict.fromkeys(
        ["Rsubset@1", "Rsubset@2", "Rsubset@3", "Avg"])   # null without the subset file
    official = score_json(capsys, "--dataset", "cirr", "--annotations", root, "--predictions", p,
                          "--subset-predictions", s)
    assert_close(official, reference_cirr(root, body, {k: v for k, v in sub.items() if k.isdigit()}))
    if kind == "perfect":
        assert all(v == 100 for v in official.values())
    if kind == "adversarial":  # target absent or 10th behind the reference (= 9th once it is dropped)
        assert official["R@5"] == 0 and official["Rsubset@3"] == 0 and 0 < official["R@10"] < 100


def test_rsubset_is_never_read_off_the_top_50(capsys, tmp_path, cirr):
    """Every target leads its img_set but ranks below 50: derived from the top-50 lists, Rsubset
    would be 0. Without the subset file it is n/a (null in --json), with it 100."""
    root, entries, gallery = cirr
    main_ = {"version": "rc2", "metric": "recall"}
    sub = {"version": "rc2", "metric": "recall_subset"}
    for e in entries:
        group = [m for m in e["img_set"]["members"] if m != e["reference"]]
        main_[str(e["pairid"])] = [g for g in gallery if g != e["reference"] and g not in group][:50]
        sub[str(e["pairid"])] = [e["target_hard"]] + [m for m in group if m != e["target_hard"]][:2]
    p, s = write(tmp_path, "recall.json", main_), write(tmp_path, "recall_subset.json", sub)
    args = ("score", "--dataset", "cirr", "--annotations", root, "--predictions", p)
    code, out, err = cirbench(capsys, *args, "--json")
    assert code == 0, err
    metrics = json.loads(out)
    assert metrics == {"R@1": 0.0, "R@5": 0.0, "R@10": 0.0, "R@50": 0.0,
                       "Rsubset@1": None, "Rsubset@2": None, "Rsubset@3": None, "Avg": None}
    assert '"Rsubset@1": null' in out and "--subset-predictions" in err and "recall_subset" in err
    code, table, err = cirbench(capsys, *args)
    assert code == 0 and "--subset-predictions" in err
    header, row = [line for line in table.splitlines() if "Rsubset@1" in line or "0.00" in line]
    assert row.count("n/a") == 4 and row.count("0.00") == 4 and "Avg" in header
    full = score_json(capsys, *args[1:], "--subset-predictions", s)
    assert full["Rsubset@1"] == 100.0 and full["Avg"] == 50.0 and full["R@50"] == 0.0


def test_duplicates_in_a_real_ranking_are_rejected(capsys, tmp_path, cirr):
    root, entries, gallery = cirr
    pred = {"version": "rc2", "metric": "recall"}
    for e in entries:
        pred[str(e["pairid"])] = [g for g in gallery if g != e["reference"]][:50]
    first = str(entries[0]["pairid"])
    pred[first] = pred[first][:49] + pred[first][:1]
    path = tmp_path / "dup.json"
    path.write_text(json.dumps(pred))
    code, out, err = cirbench(capsys, "score", "--dataset", "cirr", "--annotations", root, "--predictions", path)
    assert code != 0 and out == ""
    assert "listed twice" in err and first in err and "Traceback" not in err


# ---------------------------------------------------------------- a run's own rankings

@pytest.mark.parametrize("dataset", ["shapes-fashioniq"])  # shapes-cirr: tests/test_submit.py, on its run
def test_saved_val_rankings_rescore_to_the_runs_metrics_exactly(capsys, tmp_path, dataset):
    spec = RunSpec(method="clip4cir", dataset=dataset, noise_rate=0.2, weights="random", epochs=2, batch_size=32)
    metrics = execute(spec, tmp_path, Workspace(progress=False))
    pred = tmp_path / spec.dirname() / "predictions"
    layout = dataset.split("-")[1]
    args = ["--dataset", layout, "--annotations", shapes_root(layout)]
    if layout == "fashioniq":
        args += ["--predictions", pred / "val_rankings.json"]
    else:
        args += ["--predictions", pred / "val_recall.json", "--subset-predictions", pred / "val_recall_subset.json"]
    assert score_json(capsys, *args) == metrics["best"]  # exactly, not approximately
    code, table, _ = cirbench(capsys, "score", *args)
    assert code == 0 and ("Avg R@10" in table if layout == "fashioniq" else "Rsubset@1" in table)


# ---------------------------------------------------------------- clear errors on tiny folders

def write(tmp_path, name, obj):
    path = tmp_path / name
    path.write_text(obj if isinstance(obj, str) else json.dumps(obj))
    return path


def fiq_pred(**changes):
    pred = {f"{c}/{k}": [f"{c}{i}" for i in range(6, 10)] for c in CATS for k in range(2)}
    pred.update(changes)
    return {k: v for k, v in pred.items() if v is not None}


@pytest.mark.parametrize("pred, message", [
    (fiq_pred(**{"dress/7": ["dress6"] * 1}), "unknown query id"),
    (fiq_pred(**{"shirt/1": None}), "have no ranking"),
    (fiq_pred(**{"dress/0": ["dress6", "dress7"]}), "needs at least 3"),
    (fiq_pred(**{"dress/0": ["dress6", "dress7", "dress7", "dress8"]}), "listed twice"),
    (fiq_pred(**{"dress/0": ["dress6", "dress7", "shirt8", "dress9"]}), "not in the dress gallery"),
    (fiq_pred(**{"dress/0": ["dress6", "dress7", 8, "dress9"]}), "strings"),
    (fiq_pred(**{"dress/0": "dress6"}), "expected a list"),
    ('{"dress/0": ["dress6"], "dress/0": ["dress7"]}', "appears twice"),
    ("[1, 2]", "JSON object"),
    ("{oops", "not valid JSON"),
    ({"version": "rc2", "metric": "recall"}, "CIRR format"),
])
def test_fashioniq_prediction_errors(capsys, tmp_path, make_fashioniq, pred, message):
    root = make_fashioniq(images=False)
    path = write(tmp_path, "pred.json", pred)
    code, out, err = cirbench(capsys, "score", "--dataset", "fashioniq", "--annotations", root, "--predictions", path)
    assert code == 2 and message in err and "Traceback" not in err, err


def test_fashioniq_options(capsys, tmp_path, make_fashioniq):
    root = make_fashioniq(images=False)
    # val targets: <c>7 for query 0, <c>9 for query 1; rank them first for dress only
    pred = fiq_pred(**{"dress/0": ["dress7", "dress6", "dress8", "dress9"], "dress/1": ["dress9", "dress8", "dress7"]})
    path = write(tmp_path, "pred.json", pred)
    m = score_json(capsys, "--dataset", "fashioniq", "--annotations", root, "--predictions", path,
                   "--categories", "dress")
    assert set(m) == {"dress", "average"} and m["dress"]["R@10"] == 100.0
    partial = write(tmp_path, "partial.json", {k: v for k, v in pred.items() if k != "toptee/1"})
    m = score_json(capsys, "--dataset", "fashioniq", "--annotations", root, "--predictions", partial, "--allow-missing")
    assert m["dress"]["R@10"] == 100.0 and m["toptee"]["R@10"] == 100.0  # toptee/0 ranks <c>7 second
    code, _, err = cirbench(capsys, "score", "--dataset", "fashioniq", "--annotations", root, "--predictions", path,
                            "--split", "test")
    assert code == 2 and "no public targets" in err


def cirr_pred(metric="recall", **changes):
    names = [f"dev-{k}-0-img0" for k in range(6)]
    pred = {"version": "rc2", "metric": metric}
    for pairid, ref in ((2, 0), (3, 2), (4, 4)):
        pred[str(pairid)] = [n for n in names if n != names[ref]][: 5 if metric == "recall" else 3]
    pred.update(changes)
    return {k: v for k, v in pred.items() if v is not None}


@pytest.mark.parametrize("pred, subset, message", [
    (cirr_pred(version="rc1"), None, "\"version\" is 'rc1'"),
    (cirr_pred(version=None), None, 'missing "version"'),
    (cirr_pred("recall_subset"), None, "--subset-predictions"),
    (cirr_pred(**{"2": ["dev-1-0-img0"] * 5}), None, "listed twice"),
    (cirr_pred(**{"2": ["dev-0-0-img0", "dev-1-0-img0", "dev-2-0-img0", "dev-3-0-img0"]}), None, "needs at least 5"),
    (cirr_pred(**{"9": ["dev-1-0-img0"]}), None, "unknown query id"),
    (cirr_pred(), cirr_pred("recall_subset", **{"3": ["dev-2-0-img0", "dev-0-0-img0", "dev-1-0-img0"]}),
     "is the query's reference"),
    (cirr_pred(), cirr_pred("recall_subset", **{"3": ["dev-0-0-img0"]}), "needs at least 3"),
    (cirr_pred(), cirr_pred("recall"), "\"metric\" is 'recall'"),
])
def test_cirr_prediction_errors(capsys, tmp_path, make_cirr, pred, subset, message):
    root = make_cirr(images=False)
    args = ["score", "--dataset", "cirr", "--annotations", root, "--predictions", write(tmp_path, "p.json", pred)]
    if subset is not None:
        args += ["--subset-predictions", write(tmp_path, "s.json", subset)]
    code, out, err = cirbench(capsys, *args)
    assert code == 2 and message in err and "Traceback" not in err, err


def test_cirr_test_split_points_to_submit(capsys, tmp_path, make_cirr):
    root = make_cirr(images=False)
    code, _, err = cirbench(capsys, "score", "--dataset", "cirr", "--annotations", root, "--split", "test1",
                            "--predictions", write(tmp_path, "p.json", cirr_pred()))
    assert code == 2 and "cirbench submit cirr" in err


def test_a_ranked_reference_is_dropped_and_noted(capsys, tmp_path, make_cirr):
    root = make_cirr(images=False)
    # query 2: reference dev-0, target dev-1 ranked second behind the reference -> R@1 hit once it is dropped
    pred = cirr_pred(**{"2": ["dev-0-0-img0", "dev-1-0-img0", "dev-2-0-img0", "dev-3-0-img0", "dev-4-0-img0"]})
    code, out, err = cirbench(capsys, "score", "--dataset", "cirr", "--annotations", root, "--json",
                              "--predictions", write(tmp_path, "p.json", pred))
    assert code == 0 and "1 list(s) rank the query's own reference" in err
    assert json.loads(out)["R@1"] == pytest.approx(100 / 3)
