"""Label noise (TME protocol, honest): invariants on synthetic triplets with many repeated values
and on the real FashionIQ training triplets, determinism, validation, manifests."""
import json
import logging
import random

import numpy as np
import pytest

from cirbench.data.loaders import load_fashioniq
from cirbench.data.noise import (
    NOISE_TYPES,
    _shuffle_honestly,
    inject_noise,
    load_manifest,
    manifest_from_annotations,
    save_manifest,
)
from cirbench.data.triplets import Triplet
from cirbench.errors import ConfigError, DataError

RATES = [0, 0.2, 0.5, 0.8, 1]
FIELD = {"reference": "reference", "target": "target", "text": "captions", "partial": "captions"}


def synthetic(n=301, captions=2):
    """Few distinct values: 4 references, 3 texts, references and targets share one id space
    (so a naive permutation often keeps values or gives reference == target)."""
    out = []
    for i in range(n):
        ref = i % 4
        caps = (f"c{i % 3}", f"d{i % 2}")[:captions]
        out.append(Triplet(f"q{i}", f"img{ref}", f"img{(ref + 1 + i % 2) % 6}", caps, "dress", ("m",)))
    return out


def fields(t):
    return {"reference": t.reference, "target": t.target, "captions": list(t.captions)}


def check_invariants(original, res, rate, kind):
    n_total = len(original)
    n = round(rate * n_total)
    assert len(res.triplets) == n_total and res.is_noisy.dtype == bool
    assert int(res.is_noisy.sum()) == n == res.manifest["n_noisy"]
    assert res.manifest["realised_rate"] == pytest.approx(n / n_total) == res.is_noisy.mean()
    if kind == "mixed":
        sizes = [len(a) for a in np.array_split(np.arange(n), 3)]
        assert [res.types.count(t) for t in ("reference", "text", "target")] == sizes
        assert res.manifest["counts"] == dict(zip(("reference", "text", "target"), sizes))
    else:
        assert res.types.count(kind) == n and res.manifest["counts"] == {kind: n}
    assert len(res.manifest["triplets"]) == n_total
    for o, t, noisy, ty, m in zip(original, res.triplets, res.is_noisy, res.types, res.manifest["triplets"]):
        assert (t.qid, t.category, t.members) == (o.qid, o.category, o.members)
        assert m == {"qid": o.qid, "is_noisy": bool(noisy), "type": ty, "original": fields(o), "noisy": fields(t)}
        if not noisy:
            assert ty is None and t == o
            continue
        changed = {f for f in ("reference", "target", "captions") if getattr(t, f) != getattr(o, f)}
        assert changed == {FIELD[ty]}, (o, t, ty)
        assert t.reference != t.target
        if ty == "partial":
            diff = [k for k in range(2) if t.captions[k] != o.captions[k]]
            assert len(diff) == 1 and t.captions[diff[0]] not in o.captions


@pytest.mark.parametrize("kind", NOISE_TYPES)
@pytest.mark.parametrize("rate", RATES)
def test_invariants_on_repetitive_synthetic(kind, rate):
    triplets = synthetic()
    copy = list(triplets)
    res = inject_noise(triplets, rate, kind, seed=3)
    assert triplets == copy  # input untouched
    check_invariants(triplets, res, rate, kind)


@pytest.mark.parametrize("n_total,rate", [(5, 1), (7, 0.5), (10, 0.1), (10, 0.3), (6, 0.4)])
@pytest.mark.parametrize("kind", NOISE_TYPES)
def test_invariants_on_tiny_groups(n_total, rate, kind):
    # groups of one and two: no derangement, or a forced one; repairs re-draw from the pool
    triplets = synthetic(n_total)
    for seed in range(10):
        check_invariants(triplets, inject_noise(triplets, rate, kind, seed=seed), rate, kind)


def test_repair_swaps_then_redraws_from_pool():
    rng = np.random.default_rng(0)
    # all-equal group: no swap can help, every value is re-drawn from the pool (value 7)
    new = _shuffle_honestly(rng, np.array([0, 0, 0]), np.full(3, -1), np.array([0, 0, 7, 0]), "text")
    assert new.tolist() == [7, 7, 7]
    # 'other' forbids the only swap partner's value: 0->? must avoid 0 and 1
    own, other = np.array([0, 1, 2, 2]), np.array([1, 3, 3, 0])
    for seed in range(20):
        new = _shuffle_honestly(np.random.default_rng(seed), own, other, np.array([0, 1, 2, 2, 5]), "reference")
        assert not ((new == own) | (new == other)).any()


def test_impossible_noise_is_an_error():
    same_ref = [Triplet(f"q{i}", "a", f"t{i}", (f"c{i}",), "cirr") for i in range(10)]
    with pytest.raises(ConfigError, match="no reference in the training triplets differs from the own reference of triplet 'q"):
        inject_noise(same_ref, 1.0, "reference")
    one = [Triplet("q0", "a", "b", ("x", "y"), "dress")]
    for kind in NOISE_TYPES:
        with pytest.raises(ConfigError, match="cannot inject honest"):
            inject_noise(one, 1.0, kind)
    # q1's only other target is its own reference
    two = [Triplet("q0", "img0", "img1", ("x",), "cirr"), Triplet("q1", "img1", "img3", ("y",), "cirr")]
    with pytest.raises(ConfigError, match="own target of triplet 'q1' and from its reference"):
        inject_noise(two, 1.0, "target")
    check_invariants(same_ref, inject_noise(same_ref, 1.0, "target"), 1.0, "target")


def test_mixed_thirds_follow_array_split_order():
    triplets = synthetic(1000)
    res = inject_noise(triplets, 0.5, "mixed", seed=11)
    chosen = np.random.default_rng(11).permutation(1000)[:500]
    for t, part in zip(("reference", "text", "target"), np.array_split(chosen, 3)):
        assert all(res.types[i] == t for i in part)


def test_determinism_and_seed_independence():
    triplets = synthetic(500)
    a = inject_noise(triplets, 0.5, "mixed", seed=1)
    np.random.seed(123)
    random.seed(123)
    state = np.random.get_state()[1].copy()
    b = inject_noise(triplets, 0.5, "mixed", seed=1)
    assert (np.random.get_state()[1] == state).all()  # global RNG neither used nor consumed
    assert a.manifest == b.manifest and a.triplets == b.triplets and a.types == b.types
    np.random.seed(999)
    assert inject_noise(triplets, 0.5, "mixed", seed=1).manifest == a.manifest
    c = inject_noise(triplets, 0.5, "mixed", seed=2)
    assert c.manifest != a.manifest and (c.is_noisy != a.is_noisy).any()
    assert c.manifest["seed"] == 2 and a.manifest["seed"] == 1


def test_rates_zero_and_one():
    triplets = synthetic(90)
    zero = inject_noise(triplets, 0, "mixed")
    assert zero.triplets == triplets and not zero.is_noisy.any() and zero.manifest["realised_rate"] == 0
    one = inject_noise(triplets, 1.0, "text")
    assert one.is_noisy.all() and one.manifest["realised_rate"] == 1.0
    assert all(t.captions != o.captions for t, o in zip(one.triplets, triplets))


def test_realised_rate_rounds_and_is_logged(caplog):
    triplets = synthetic(7)
    with caplog.at_level(logging.DEBUG, logger="cirbench"):  # a run logs the rate among the triplets it trains on
        res = inject_noise(triplets, 0.5, "reference", seed=0)
    assert res.is_noisy.sum() == round(3.5) == 4
    assert res.is_noisy.mean() == 4 / 7 == res.manifest["realised_rate"]
    assert "realised rate 0.5714" in caplog.text


@pytest.mark.parametrize("rate", [1.5, -0.1, float("nan"), "0.2", None, True])
def test_invalid_rate(rate):
    with pytest.raises(ConfigError, match=r"noise rate must be in \[0, 1\], got"):
        inject_noise(synthetic(10), rate)
    with pytest.raises(ConfigError, match=r"noise rate must be in \[0, 1\], got 1.5"):
        inject_noise(synthetic(10), 1.5)


def test_invalid_kind_seed_and_triplets():
    with pytest.raises(ConfigError, match="unknown noise type 'label'; valid types: mixed, reference, text, target, partial"):
        inject_noise(synthetic(10), 0.2, "label")
    with pytest.raises(ConfigError, match="seed must be a non-negative integer"):
        inject_noise(synthetic(10), 0.2, seed=-1)
    with pytest.raises(ConfigError, match="partial noise replaces one of a triplet's two captions.*has 1"):
        inject_noise(synthetic(10, captions=1), 0.2, "partial")
    test_like = [Triplet("1", "a", None, ("x",), "cirr"), Triplet("2", "b", None, ("y",), "cirr")]
    with pytest.raises(ConfigError, match="only injected into training triplets"):
        inject_noise(test_like, 0.5, "text")


def test_manifest_round_trip(tmp_path):
    res = inject_noise(synthetic(50), 0.4, "mixed", seed=5)
    m = res.manifest
    assert m["version"] == 1 and m["protocol"] == "TME thirds (reference/text/target)"
    assert (m["type"], m["rate"], m["seed"], m["n_triplets"]) == ("mixed", 0.4, 5, 50)
    path = tmp_path / "run" / "noise.json"
    save_manifest(m, path)
    assert load_manifest(path) == m
    assert sorted(p.name for p in path.parent.iterdir()) == ["noise.json"]  # no temporary left
    save_manifest(inject_noise(synthetic(50), 0.2, "text").manifest, path)  # overwrite in place
    assert load_manifest(path)["type"] == "text"


def test_load_manifest_errors(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load_manifest(tmp_path / "none.json")
    (tmp_path / "bad.json").write_text('{"version": 1,\n "triplets": [}')
    with pytest.raises(DataError, match="not valid JSON: .* line 2, column 15"):
        load_manifest(tmp_path / "bad.json")
    (tmp_path / "v2.json").write_text(json.dumps({"version": 2, "triplets": []}))
    with pytest.raises(DataError, match="unsupported noise manifest version 2"):
        load_manifest(tmp_path / "v2.json")


def test_50k_triplets():
    """Speed is measured by benchmarks, not asserted here (timed tests flake on a loaded machine)."""
    rng = np.random.default_rng(0)
    triplets = [Triplet(str(i), f"r{rng.integers(20000)}", f"t{rng.integers(20000)}",
                        (f"c{rng.integers(30000)}", f"d{rng.integers(30000)}"), "dress") for i in range(50000)]
    res = inject_noise(triplets, 0.8, "mixed", seed=0)
    assert res.is_noisy.sum() == 40000


# --------------------------------------------------------------------------- real FashionIQ train


@pytest.fixture(scope="module")
def fiq_train(real_annotations):
    return load_fashioniq(real_annotations / "fashioniq", splits="train", require_images=False).split("train").triplets


@pytest.mark.parametrize("kind,rate", [("mixed", 0.2), ("mixed", 0.5), ("mixed", 0.8), ("text", 0.5),
                                       ("reference", 0.8), ("target", 0.8), ("partial", 0.5)])
def test_real_fashioniq_train(fiq_train, kind, rate):
    assert len(fiq_train) == 18000
    res = inject_noise(fiq_train, rate, kind, seed=0)
    assert res.is_noisy.sum() == round(rate * 18000)
    check_invariants(fiq_train, res, rate, kind)


def test_manifest_from_annotations(real_annotations, fiq_train):
    m = manifest_from_annotations("fashioniq", real_annotations / "fashioniq", 0.2, "mixed", 7)
    assert (m["dataset"], m["split"], m["n_triplets"], m["n_noisy"]) == ("fashioniq", "train", 18000, 3600)
    assert m["triplets"] == inject_noise(fiq_train, 0.2, "mixed", 7).manifest["triplets"]
    with pytest.raises(ConfigError, match="noise rate"):
        manifest_from_annotations("fashioniq", real_annotations / "fashioniq", 2, "mixed", 7)
    if not (real_annotations / "cirr/captions/cap.rc2.train.json").exists():
        with pytest.raises(DataError, match="cap.rc2.train.json"):
            manifest_from_annotations("cirr", real_annotations / "cirr", 0.2, "text", 0)
