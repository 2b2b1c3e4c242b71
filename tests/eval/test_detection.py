"""Noise-detection metrics of clean probabilities against hand-made noise manifests."""
import json
from pathlib import Path

import numpy as np
import pytest

from cirbench.errors import DataError
from cirbench.eval.detection import detection_metrics
from cirbench.report.tables import DETECTION_COLUMNS, build_tables, render
from cirbench.runs import RunRecord


def manifest(types):
    """A manifest whose triplet q<i> is clean (None) or noisy of type types[i]."""
    return {"triplets": [{"qid": f"q{i}", "is_noisy": t is not None, "type": t} for i, t in enumerate(types)]}


TYPES = [None, None, None, None, "reference", "text", "target", "text"]


def test_perfect_separation_scores_one_everywhere():
    probs = [0.9, 0.8, 0.95, 0.7, 0.1, 0.2, 0.05, 0.3]
    d = detection_metrics(probs, [f"q{i}" for i in range(8)], manifest(TYPES))
    assert d["auroc"] == d["ap"] == d["precision"] == d["recall"] == 1.0
    assert d["selected"] == d["clean_rate"] == 0.5 and d["n"] == 8 and d["threshold"] == 0.5
    assert set(d["by_type"]) == {"reference", "text", "target"}
    assert d["by_type"]["text"] == {"auroc": 1.0, "ap": 1.0, "flagged": 1.0, "n": 2}


def test_hand_computed_values_and_a_blind_spot_for_one_type():
    # the text-noise triplets look clean (0.9, 0.85): the other types are caught
    probs = [0.9, 0.8, 0.6, 0.4, 0.1, 0.9, 0.05, 0.85]
    d = detection_metrics(probs, [f"q{i}" for i in range(8)], manifest(TYPES))
    # selected (>= 0.5): q0 q1 q2 q5 q7 -> 3 clean of 5; clean selected 3 of 4
    assert d["precision"] == pytest.approx(3 / 5) and d["recall"] == pytest.approx(3 / 4)
    assert d["selected"] == pytest.approx(5 / 8) and d["clean_rate"] == 0.5
    # AUROC = share of (clean, noisy) pairs ranked right: clean 0.9 0.8 0.6 0.4 vs noisy 0.1 0.9 0.05 0.85
    pairs = [(c, n) for c in (0.9, 0.8, 0.6, 0.4) for n in (0.1, 0.9, 0.05, 0.85)]
    expected = sum(1.0 if c > n else 0.5 if c == n else 0.0 for c, n in pairs) / len(pairs)
    assert d["auroc"] == pytest.approx(expected)
    assert d["by_type"]["reference"]["auroc"] == 1.0 and d["by_type"]["target"]["flagged"] == 1.0
    text = d["by_type"]["text"]
    assert text["flagged"] == 0.0 and text["auroc"] == pytest.approx((0.5 + 1) / 8)  # only 0.9 = 0.9 (tie) and 0.9 > 0.85


def test_joined_by_qid_not_by_position():
    m = manifest(TYPES)
    order = [7, 0, 5, 1, 4, 2, 6, 3]  # the training set in another order
    probs = [0.0 if TYPES[i] else 1.0 for i in order]
    assert detection_metrics(probs, [f"q{i}" for i in order], m)["auroc"] == 1.0
    # a training set that dropped triplets (images missing on disk) is scored on what it kept
    kept = detection_metrics([1.0, 0.0], ["q0", "q5"], m)
    assert kept["n"] == 2 and set(kept["by_type"]) == {"text"} and kept["auroc"] == 1.0


def test_all_clean_has_no_auroc_but_a_selected_fraction():
    d = detection_metrics([0.9, 0.2, 0.7], ["q0", "q1", "q2"], manifest([None] * 3))
    assert d["auroc"] is None and d["ap"] is None and d["by_type"] == {}
    assert d["selected"] == pytest.approx(2 / 3) and d["clean_rate"] == 1.0 and d["precision"] == 1.0


def test_mismatches_are_clear_errors():
    with pytest.raises(DataError, match="2 clean probabilities for 3"):
        detection_metrics([0.5, 0.5], ["q0", "q1", "q2"], manifest(TYPES))
    with pytest.raises(DataError, match="not in the noise manifest"):
        detection_metrics([0.5], ["nope"], manifest(TYPES))


def test_the_table_shows_detection_columns():
    det = detection_metrics(np.array([0.9, 0.8, 0.95, 0.7, 0.1, 0.2, 0.05, 0.3]), [f"q{i}" for i in range(8)],
                            manifest(TYPES))
    cirr = {k: 10.0 for k in ("R@1", "R@5", "R@10", "R@50", "Rsubset@1", "Rsubset@2", "Rsubset@3", "Avg")}
    runs = [RunRecord(Path(f"r{s}"), {"method": "ncl-cir", "dataset": "shapes-cirr", "layout": "cirr",
                                        "noise": {"type": "mixed", "rate": 0.5}, "seed": s, "backbone": "tiny"},
                      json.loads(json.dumps({"status": "finished", "best": cirr, "last": cirr, "noise_detection": det})))
            for s in (0, 1)]
    table = build_tables(runs, extra_columns={"cirr": DETECTION_COLUMNS})["shapes-cirr"]
    text = render(table, "markdown")
    assert "AUROC text" in text and "| ncl-cir  | mixed 0.5 |" in text
    headers = [c.header for c in table.columns]
    assert table.rows[0].cells[headers.index("AUROC")] == (1.0, 0.0, 2)
    assert table.rows[0].cells[headers.index("Selected")][0] == 0.5
