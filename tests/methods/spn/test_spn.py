"""SPN the method: the static bank of stage 2, the plug-in wrapper over a base, and end-to-end runs
on both small shapes layouts (its positives and captioners have files of their own)."""
import json
from dataclasses import dataclass

import pytest
import torch
import torch.nn.functional as F

from cirbench import registry
from cirbench.data.datasets import load
from cirbench.data.noise import load_manifest
from cirbench.data.triplets import Triplet
from cirbench.errors import ConfigError
from cirbench.features import FeatureTable
from cirbench.method import Method
from cirbench.runner import Workspace, execute, resolve_method
from cirbench.runs import RunSpec
from cirbench.training import TrainConfig, TrainingSet, Validation, fit
from cirbench.types import Dims, Features
from cirbench_methods.spn import SPN, STAGE2

# --------------------------------------------------------------------------- the static bank

@dataclass
class _Toy:
    images: FeatureTable
    train: TrainingSet


def _toy_training_set(n_images=12, dim=8):
    torch.manual_seed(0)
    keys = [f"im{i}" for i in range(n_images)]
    images = FeatureTable(keys, Features(torch.randn(n_images, dim)))
    triplets = [Triplet(str(i), f"im{i % 6}", f"im{(i * 5 + 1) % n_images}", (f"text {i}",), "cirr")
                for i in range(10)]
    texts = FeatureTable([f"text {i}" for i in range(10)], Features(torch.randn(10, dim)))
    return _Toy(images, TrainingSet("cirr", triplets, images, texts))


class _TargetProjection(Method):
    """A toy base whose target side has parameters (so stage 2 must freeze them)."""

    def __init__(self, dims, hparams=None):
        super().__init__(dims, hparams)
        self.query = torch.nn.Linear(2 * dims.embed, dims.embed)
        self.target = torch.nn.Linear(dims.embed, dims.embed)

    def compose(self, reference, text):
        return self.query(torch.cat([reference.embed, text.embed], -1))

    def embed_target(self, image):
        return self.target(image.embed)


def test_stage_two_builds_the_bank_once_with_each_training_image_once_and_freezes_the_image_side(
        tmp_path, monkeypatch):
    monkeypatch.setitem(registry._METHODS, "toy-target", _TargetProjection)
    toy = _toy_training_set()
    spn = SPN(Dims(8), SPN.make_hparams({"base": "toy-target", "positives": False, "stage2_epochs": 2,
                                         "lr": 1e-2}))
    assert {id(p) for p in spn.query_parameters()} == {id(p) for p in spn.base.query.parameters()}
    names = [s.name for s in spn.stages(1)]
    assert names == ["main", STAGE2]

    before = {}
    builds = []
    build_bank = SPN.build_bank
    monkeypatch.setattr(SPN, "build_bank", lambda self, train: builds.append(1) or build_bank(self, train))

    def validate(m):
        if m.bank is not None and not before:
            before.update({k: v.clone() for k, v in m.base.target.state_dict().items()})
            before["query"] = m.base.query.weight.detach().clone()
        return Validation({}, 0.0)

    result = fit(spn, toy.train, validate, TrainConfig(epochs=1, batch_size=4), tmp_path / "ckpt.pt",
                 progress=False)
    assert [h["stage"] for h in result["history"]] == ["main", STAGE2, STAGE2]
    assert len(builds) == 1
    used = torch.unique(torch.cat([toy.train.reference_rows, toy.train.target_rows]))
    assert torch.equal(spn.bank_rows, used) and len(set(spn.bank_rows.tolist())) == len(spn.bank_rows)
    assert torch.allclose(spn.bank.norm(dim=-1), torch.ones(len(used)), atol=1e-5)
    spn.eval()
    assert torch.allclose(spn.bank, F.normalize(spn.base.embed_target(toy.images.features[used]), dim=-1),
                          atol=1e-5)  # the image side did not move during stage 2
    for k, v in spn.base.target.state_dict().items():
        assert torch.equal(v, before[k])
    assert not torch.equal(spn.base.query.weight, before["query"])  # the query side did
    assert [h.get("spn_bank") for h in result["history"]] == [None, len(used), len(used)]


def test_clip4cir_has_no_target_side_parameters_so_stage_two_tunes_the_whole_combiner():
    spn = SPN(Dims(8))
    assert {id(p) for p in spn.query_parameters()} == {id(p) for p in spn.base.parameters()}


# --------------------------------------------------------------------------- the plug-in

def test_stage_two_has_its_own_batch_size_when_set():
    default = SPN(Dims(8), SPN.make_hparams({"base": "clip4cir"})).stages(2)
    assert [s.batch_size for s in default] == [None, None]  # the run's batch size in both stages
    paper = SPN(Dims(8), SPN.make_hparams({"base": "clip4cir", "stage2_batch_size": 256})).stages(2)
    assert [(s.name, s.batch_size) for s in paper] == [("main", None), (STAGE2, 256)]
    with pytest.raises(ConfigError, match="stage2_batch_size"):
        SPN(Dims(8), SPN.make_hparams({"stage2_batch_size": -1}))


def test_released_schedule_positives_in_stage_two_from_the_best_base_epoch():
    default = SPN(Dims(8), SPN.make_hparams({"base": "clip4cir"})).stages(2)
    assert [(s.annotated_only, s.from_best) for s in default] == [(False, False), (False, False)]
    released = SPN(Dims(8), SPN.make_hparams({"base": "clip4cir", "positives_in": "stage2",
                                               "stage2_from": "best"})).stages(2)
    assert [(s.name, s.annotated_only, s.from_best) for s in released] == [("main", True, False),
                                                                            (STAGE2, False, True)]
    with pytest.raises(ConfigError, match="positives_in"):
        SPN(Dims(8), SPN.make_hparams({"positives_in": "stage1"}))
    # a stage that trains on annotated triplets only never draws a generated one
    table = FeatureTable([f"i{k}" for k in range(6)], Features(torch.randn(6, 8)))
    triplets = [Triplet(f"q{k}", f"i{k}", f"i{(k + 1) % 6}", ["t"], "cirr") for k in range(6)]
    train = TrainingSet("cirr", triplets, table, FeatureTable(["t"], Features(torch.randn(1, 8))), generated=2)
    drawn = torch.cat([b.index for b in train.batches(2, torch.Generator().manual_seed(0), annotated_only=True)])
    assert sorted(drawn.tolist()) == [0, 1, 2, 3]
    assert len(torch.cat([b.index for b in train.batches(2, torch.Generator().manual_seed(0))])) == 6


def test_hyper_parameters_select_the_base_the_parts_and_pass_base_settings(monkeypatch):
    cls, hp = resolve_method(RunSpec(method="spn:clip4cir+positives", dataset="shapes-cirr",
                                     hparams={"base_lr": "5e-4"}))
    assert cls is SPN and (hp.base, hp.positives, hp.negatives) == ("clip4cir", True, False)
    assert hp.base_hparams == {"lr": 5e-4}
    m = SPN(Dims(8), hp)
    assert m.base.hp.lr == 5e-4 and m.hp.weight_decay == m.base.hp.weight_decay
    assert [s.lr for s in m.stages(2)] == [5e-4]
    assert SPN.make_hparams({"base": "clip4cir+positives+negatives"}).negatives is True
    with pytest.raises(ConfigError, match="parts"):
        SPN.make_hparams({"base": "clip4cir+both"})
    with pytest.raises(ConfigError, match="negatives"):
        SPN.make_hparams({"base": "clip4cir+positives", "negatives": "true"})
    with pytest.raises(ConfigError, match="base_"):
        SPN.make_hparams({"base_nonsense": 1})
    with pytest.raises(ConfigError, match="not another spn"):
        SPN.make_hparams({"base": "spn"})
    with pytest.raises(ConfigError, match="unknown method"):
        SPN.make_hparams({"base": "nope"})

    class Tokens(_TargetProjection):
        needs_tokens = True

    monkeypatch.setitem(registry._METHODS, "toy-tokens", Tokens)
    assert SPN.wants_tokens(SPN.make_hparams({"base": "toy-tokens"})) is True
    assert SPN.wants_tokens(SPN.make_hparams({})) is False


# --------------------------------------------------------------------------- end to end

@pytest.fixture(scope="module")
def ws():
    return Workspace(progress=False)


def _spec(**kw):
    base = dict(method="spn", dataset="shapes-fashioniq", noise_rate=0.5, weights="random", epochs=2,
                batch_size=32, hparams={"stage2_epochs": 1})
    base.update(kw)
    return RunSpec(**base)


@pytest.mark.parametrize("dataset", ["shapes-fashioniq", "shapes-cirr"])
def test_spn_runs_end_to_end_and_generated_triplets_stay_out_of_noise_and_evaluation(tmp_path, ws, dataset):
    s = _spec(dataset=dataset)
    metrics = execute(s, tmp_path, ws)
    run = tmp_path / s.dirname()
    assert metrics["status"] == "finished"
    history = [json.loads(x) for x in (run / "history.jsonl").read_text().splitlines()]
    assert [h["stage"] for h in history] == ["main", "main", STAGE2]
    generated = history[0]["spn_generated"]
    assert generated > 0 and history[-1]["spn_bank"] > 0

    data = load(dataset)
    annotated = data.split("train").triplets
    manifest = load_manifest(run / "noise_manifest.json")
    assert manifest["n_triplets"] == len(annotated)  # generated triplets are never noised
    assert manifest["n_noisy"] == round(0.5 * len(annotated))
    assert not any("spn" in str(e["qid"]) for e in manifest["triplets"])

    folder = run / "spn_positives"
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["triplets"] == generated
    if dataset == "shapes-fashioniq":
        files = sorted((folder / "captions").glob("cap.*.train.json"))
        entries = [e for f in files for e in json.loads(f.read_text())]
        assert {f.name for f in files} <= {f"cap.{c}.train.json" for c in ("dress", "shirt", "toptee")}
        assert all(set(e) == {"candidate", "target", "captions"} and len(e["captions"]) == 1 for e in entries)
        references = {t.reference for t in annotated}
        assert all(e["candidate"] in references and e["candidate"] != e["target"] for e in entries)
        predicted = json.loads((run / "predictions/val_rankings.json").read_text())
    else:
        entries = json.loads((folder / "captions" / "cap.rc2.train.json").read_text())
        assert all({"pairid", "reference", "target_hard", "caption", "img_set"} <= set(e) for e in entries)
        predicted = json.loads((run / "predictions/val_recall.json").read_text())
        predicted = {k: v for k, v in predicted.items() if k not in ("version", "metric")}
    assert len(entries) == generated
    assert set(predicted) == {t.qid for t in data.split("val").triplets}  # only val queries are evaluated
    assert set(json.loads((folder / "image_captions.json").read_text())) <= set(data.image_paths)


def test_spn_with_both_parts_off_is_exactly_its_base(tmp_path, ws):
    plain = execute(_spec(method="clip4cir", dataset="shapes-cirr", hparams={}), tmp_path, ws)
    wrapped = execute(_spec(dataset="shapes-cirr", hparams={"positives": False, "negatives": False}), tmp_path, ws)
    assert wrapped["best"] == plain["best"] and wrapped["last"] == plain["last"]


def test_grid_hparams_for_the_base_name_reach_every_wrapped_variant():
    from cirbench.grid import Grid

    g = Grid(methods=["spn:clip4cir", "spn:dqe-cir"], datasets=["shapes-cirr"], noise_rates=[0], seeds=[0],
             hparams={"spn": {"stage2_epochs": 3, "base_lr": 1e-4}, "spn:dqe-cir": {"stage2_epochs": 5}})
    by_method = {c.method: c.hparams for c in g.cells()}
    assert by_method["spn:clip4cir"] == {"stage2_epochs": 3, "base_lr": 1e-4}
    assert by_method["spn:dqe-cir"] == {"stage2_epochs": 5, "base_lr": 1e-4}  # the full name wins
    with pytest.raises(ConfigError, match="not in this grid's methods"):
        Grid(methods=["spn:clip4cir"], hparams={"clip4cir": {"lr": 1}}).validate()


# --------------------------------------------------------------------------- the released protocol (issue 13)

def _fake_run(tmp_path, dataset, triplets=None, tokenizer=None, dim=8, preprocess="clip"):
    """A RunContext over a small shapes dataset with random image features (seed 0)."""
    from types import SimpleNamespace

    data = load(dataset)
    keys = sorted(data.image_paths)
    torch.manual_seed(0)
    images = FeatureTable(keys, Features(torch.randn(len(keys), dim)))
    backbone = SimpleNamespace(tokenizer=tokenizer) if tokenizer is not None else None
    run_dir = tmp_path / "run"
    run_dir.mkdir(exist_ok=True)
    spec = RunSpec(method="spn:clip4cir", dataset=dataset, preprocess=preprocess)
    return SimpleNamespace(spec=spec, data=data, images=images, backbone=backbone, run_dir=run_dir,
                           cache_dir=tmp_path / "cache", device=torch.device("cpu"),
                           train_triplets=list(data.split("train").triplets if triplets is None else triplets))


def _summary(run):
    return json.loads((run.run_dir / "spn_positives" / "summary.json").read_text())


def test_positives_pair_the_training_triplets_images_in_the_released_window(tmp_path):
    """Item 1: the pool is each reference and target of the training triplets once (not the split's image list),
    and the window is the released CLIP-base ranks 10,000-20,000 of FashionIQ's 25,136 such images."""
    from cirbench_methods.spn.positives import window_bounds

    data = load("shapes-fashioniq")
    triplets = data.split("train").triplets[::2]  # half of them: the split's gallery has many other images
    used = {x for t in triplets for x in (t.reference, t.target)}
    gallery = {i for ids in data.split("train").gallery.values() for i in ids}
    assert len(gallery) > len(used)
    run = _fake_run(tmp_path, "shapes-fashioniq", triplets)
    generated = SPN(Dims(8)).generate_positives(run)
    summary = _summary(run)
    assert summary["pool"] == len(used)
    assert all(t.reference in used and t.target in used for t in generated)
    assert {t.reference for t in generated} <= {t.reference for t in triplets}  # FashionIQ: annotated references
    lo, hi = window_bounds(len(used) - 1, 10_000 / 25_136, 20_000 / 25_136)
    assert summary["rank_window"] == [lo, hi]
    assert 0.39 < lo / len(used) < 0.41 and 0.78 < hi / len(used) < 0.81


def test_pixel_identical_copies_share_one_bank_row_and_label(monkeypatch):
    """Item 2: copies of an image are one bank row, so a copy of a query's target is never its negative."""
    monkeypatch.setitem(registry._METHODS, "toy-target", _TargetProjection)
    toy = _toy_training_set()
    feats = toy.images.features.embed
    feats[7] = feats[1]  # im7 is a copy of im1 (both are targets of the toy triplets)
    used = torch.unique(torch.cat([toy.train.reference_rows, toy.train.target_rows]))
    assert {1, 7} <= set(used.tolist())
    spn = SPN(Dims(8), SPN.make_hparams({"base": "toy-target", "positives": False}))
    spn.build_bank(toy.train)
    assert spn.bank.shape[0] == len(used) - 1 and spn.bank_merged == 1
    assert 7 not in spn.bank_rows.tolist() and 1 in spn.bank_rows.tolist()
    index = spn._bank_index
    assert index[7] == index[1] and torch.equal(spn.bank_rows[index[used]], torch.where(used == 7, 1, used))
    spn.eval()
    assert torch.allclose(spn.bank[index[7]], F.normalize(spn.base.embed_target(toy.images.features[7:8]), dim=-1)[0],
                          atol=1e-6)
    batch = toy.train.batch(torch.arange(len(toy.train)))
    labels = index[batch.target_rows]
    assert (labels >= 0).all() and len(set(labels.tolist())) == len(set(spn.bank_rows[labels].tolist()))


def test_a_generated_fashioniq_triplet_trains_on_its_one_text_only(tmp_path):
    """Item 3: the released loader uses a generated triplet's one caption as is; cirbench's caption variants
    (c1+c2, c2+c1, c1, c2) would make "A and A" of it half the time."""
    from cirbench.data.triplets import train_texts
    from cirbench.training import TrainContext

    run = _fake_run(tmp_path, "shapes-fashioniq")
    spn = SPN(Dims(8))
    generated = spn.extra_triplets(run)
    annotated = run.train_triplets
    texts = sorted({x for t in annotated + generated for x in train_texts("fashioniq", t)})
    table = FeatureTable(texts, Features(torch.randn(len(texts), 8)))
    train = TrainingSet("fashioniq", annotated + generated, run.images, table, generated=len(generated))
    before = train.text_rows[: len(annotated)].clone()
    spn.on_epoch_start(TrainContext(train, TrainConfig(), torch.device("cpu")))
    captions = json.loads((run.run_dir / "spn_positives" / "image_captions.json").read_text())
    for i, t in enumerate(generated, start=len(annotated)):
        drawn = {table.keys[r] for r in train.text_rows[i].tolist()}
        assert len(drawn) == 1 and drawn.pop().lower() == captions[t.target][0].lower()  # template "{tgt}"
    assert torch.equal(train.text_rows[: len(annotated)], before)  # annotated triplets keep their four variants
    assert all(len(set(r.tolist())) > 1 for r in before)


def test_shapes_cirr_templates_fit_the_tiny_context_and_fallbacks_are_warned(tmp_path, caplog):
    """Item 4: brief captions (8 words on CIRR) keep both templates inside the tiny model's 24-token context;
    the full descriptions do not, and a warning says so."""
    import logging

    import open_clip

    from cirbench.backbones.openclip import TINY_ARCH

    tokenizer = open_clip.get_tokenizer(TINY_ARCH)
    run = _fake_run(tmp_path, "shapes-cirr", tokenizer=tokenizer)
    with caplog.at_level(logging.WARNING, logger="cirbench"):
        generated = SPN(Dims(8)).generate_positives(run)
    summary = _summary(run)
    assert summary["caption_words"] == 8
    assert summary["texts_fell_back_to_target"] <= 0.05 * summary["texts"]
    assert summary["target_captions_too_long"] == 0
    assert sum(" instead of " in t.captions[0] or t.captions[0].startswith("Unlike ") for t in generated) \
        >= 0.95 * len(generated)
    assert not [r for r in caplog.records if "fell back" in r.getMessage()]

    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="cirbench"):
        SPN(Dims(8), SPN.make_hparams({"caption_words": 0})).generate_positives(run)
    summary = _summary(run)
    assert summary["texts_fell_back_to_target"] > 0.5 * summary["texts"]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("fell back to the target caption" in w and "24-token" in w for w in warnings)
    assert any("truncated" in w for w in warnings)


def test_the_pairing_encoder_is_a_backbone_option(tmp_path):
    """Item 5: pair_backbone / pair_weights name the image encoder that pairs (default: the run's own); it
    preprocesses images as the run does."""
    from cirbench.backbones import build_backbone
    from cirbench.features import image_features
    from cirbench_methods.spn.positives import generate, triplet_pool

    run = _fake_run(tmp_path, "shapes-cirr", preprocess="targetpad:1.25")
    hp = SPN.make_hparams({"pair_backbone": "tiny", "pair_weights": "random", "caption_words": 8})
    other = SPN(Dims(8), hp).generate_positives(run)
    assert _summary(run)["pairing_backbone"] == "tiny"
    own = SPN(Dims(8)).generate_positives(run)
    assert _summary(run)["pairing_backbone"] == "the run's backbone"
    pool, _ = triplet_pool(run.train_triplets)
    embed = image_features(build_backbone("tiny", "random", run.cache_dir, preprocess="targetpad:1.25"), pool, run.data.image_paths, tokens=False,
                           cache_dir=run.cache_dir, progress=False).features.embed
    captions = json.loads((run.run_dir / "spn_positives" / "image_captions.json").read_text())
    expected = generate("cirr", pool, {}, embed, captions, None, low=10_000 / 16_939, high=15_000 / 16_939,
                        templates=(0, 1))
    pairs = lambda ts: [(t.reference, t.target) for t in ts]  # noqa: E731
    assert pairs(other) == pairs(expected.triplets) and pairs(other) != pairs(own)
    with pytest.raises(ConfigError, match="unknown backbone"):
        SPN(Dims(8), SPN.make_hparams({"pair_backbone": "nope"})).generate_positives(run)
