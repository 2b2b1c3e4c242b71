"""NCL-CIR: the paper's method under the bare name and cirbench's ``ncl-cir:robust`` variant, the GMM
noise-pair filter, the weight maps, and end-to-end runs (its soft-label NCE loss: tests/test_losses.py)."""
import json

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from cirbench.data.triplets import Triplet
from cirbench.errors import ConfigError
from cirbench.features import FeatureTable
from cirbench.registry import expand_methods, get_method
from cirbench.runner import Workspace, execute, resolve_method
from cirbench.runs import RunSpec
from cirbench.training import TrainConfig, TrainContext, TrainingSet
from cirbench.types import Dims, Features
from cirbench_methods.ncl_cir import (
    MAP_FUSIONS,
    WeightCompensation,
    anchored_clean_probability,
    diversity_penalty,
    gmm_clean_probability,
)


# -- Noise-pair Filter Block ------------------------------------------------------------------
def test_gmm_filter_splits_planted_bimodal_losses():
    rng = np.random.default_rng(0)
    clean, noisy = rng.normal(0.5, 0.15, 700).clip(0), rng.normal(3.0, 0.5, 300)
    losses = np.concatenate([clean, noisy])
    probs = gmm_clean_probability(losses)
    assert probs.shape == (1000,)
    assert (probs[:700] > 0.9).mean() > 0.98 and (probs[700:] < 0.1).mean() > 0.98
    assert roc_auc_score(np.r_[np.ones(700), np.zeros(300)], probs) > 0.999
    # the clean component is the low-loss one whatever order the GMM found them in
    assert gmm_clean_probability(losses[::-1])[::-1] == pytest.approx(probs, abs=1e-6)
    # min-max normalisation: scale and shift do not change the split
    assert gmm_clean_probability(10 * losses + 3) == pytest.approx(probs, abs=1e-3)


def test_gmm_filter_degenerate_losses_keep_everything():
    assert (gmm_clean_probability(np.full(50, 1.3)) == 1).all()
    assert (gmm_clean_probability(np.array([0.7])) == 1).all()
    assert gmm_clean_probability(np.array([])).shape == (0,)


def test_anchored_filter_splits_planted_losses_with_the_noise_component_taken_from_null_losses():
    rng = np.random.default_rng(0)
    clean, noisy = rng.normal(0.5, 0.15, 700).clip(0), rng.normal(3.0, 0.5, 300)
    null = rng.normal(3.0, 0.5, 1000)  # what a mismatched pair's loss looks like
    probs = anchored_clean_probability(np.concatenate([clean, noisy]), null)
    assert (probs[:700] > 0.9).mean() > 0.98 and (probs[700:] < 0.1).mean() > 0.98
    assert roc_auc_score(np.r_[np.ones(700), np.zeros(300)], probs) > 0.999


def test_anchored_filter_keeps_a_long_tailed_clean_distribution_that_the_free_gmm_splits():
    # clean data only: skewed losses with a long right tail, far below the loss of a random pairing
    rng = np.random.default_rng(1)
    losses = rng.gamma(2.0, 1.0, 2000)
    null = rng.normal(20.0, 6.0, 2000)
    assert (gmm_clean_probability(losses) < 0.5).mean() > 0.1  # the free fit rejects the hard tail
    assert (anchored_clean_probability(losses, null) >= 0.5).mean() > 0.99


def test_anchored_filter_degenerate_inputs_keep_everything():
    assert (anchored_clean_probability(np.full(50, 1.3), np.arange(10.0)) == 1).all()
    assert (anchored_clean_probability(np.array([0.7]), np.arange(10.0)) == 1).all()
    assert (anchored_clean_probability(np.arange(5.0), np.array([np.inf, 3.0])) == 1).all()  # < 2 finite nulls
    assert anchored_clean_probability(np.array([]), np.arange(3.0)).shape == (0,)


# -- Weight Compensation Block ----------------------------------------------------------------------
def test_diversity_penalty_is_zero_for_disjoint_maps_and_one_for_identical():
    disjoint = torch.eye(4)[None]  # [B=1, L=4, K=4]: map k looks at token k only
    same = torch.full((1, 4, 3), 0.25)
    assert diversity_penalty(disjoint).item() == pytest.approx(0.0)
    assert diversity_penalty(same).item() == pytest.approx(1.0)
    assert diversity_penalty(torch.rand(2, 5, 1)).item() == 0.0


def _randomise(wcb: WeightCompensation) -> WeightCompensation:
    """Non-zero projections and gates (they start at zero), so every fusion does something."""
    for layer in (wcb.fuse, *wcb.views):
        torch.nn.init.normal_(layer.weight)
    if wcb.gate is not None:
        torch.nn.init.normal_(wcb.gate, std=2.0)
    return wcb.eval()


@pytest.mark.parametrize("fusion", MAP_FUSIONS)
def test_weight_compensation_starts_at_the_global_embedding_and_ignores_padding(fusion):
    torch.manual_seed(0)
    wcb = WeightCompensation(dim=8, heads=3, hidden=8, fusion=fusion)
    feats = Features(torch.randn(2, 8), torch.randn(2, 5, 8).half(), torch.tensor([[1, 1, 1, 0, 0]] * 2).bool())
    out, _ = wcb(feats)
    assert torch.equal(out, feats.embed)  # zero-initialised compensation
    _randomise(wcb)
    changed = Features(feats.embed, feats.tokens.clone(), feats.mask)
    changed.tokens[:, 3:] = 100  # padding must not matter
    assert torch.allclose(wcb(feats)[0], wcb(changed)[0])
    assert not torch.allclose(wcb(feats)[0], feats.embed)


def test_mean_fusion_pools_with_one_effective_map_the_mean_of_the_k_softmaxes():
    torch.manual_seed(0)
    wcb = _randomise(WeightCompensation(dim=8, heads=4, hidden=8, fusion="mean"))
    tokens = torch.randn(3, 6, 8)
    att = torch.randn(3, 6, 4).softmax(1)
    one = att.mean(-1, keepdim=True)  # [B, L, 1]: a single weight map
    assert torch.allclose(wcb.compensation(att, tokens), wcb.fuse((one * tokens).sum(1)), atol=1e-5)
    # so any K maps with the same mean give the same output: the maps are a mixture, not K views
    assert torch.allclose(wcb.compensation(att, tokens), wcb.compensation(att.flip(-1), tokens), atol=1e-5)
    assert torch.allclose(wcb.compensation(att, tokens), wcb.compensation(one.expand(-1, -1, 4), tokens), atol=1e-5)


@pytest.mark.parametrize("fusion", ["channel", "project"])
def test_view_fusions_are_not_a_function_of_the_averaged_map(fusion):
    torch.manual_seed(0)
    wcb = _randomise(WeightCompensation(dim=8, heads=4, hidden=8, fusion=fusion))
    tokens = torch.randn(3, 6, 8)
    att = torch.randn(3, 6, 4).mul(3).softmax(1)
    # same mean map, the K maps reassigned: a single averaged map cannot tell these apart, K views do
    assert torch.allclose(att.mean(-1), att.flip(-1).mean(-1))
    assert not torch.allclose(wcb.compensation(att, tokens), wcb.compensation(att.flip(-1), tokens), atol=1e-3)
    # swapping just two of the maps (the mean again unchanged) moves the output too
    moved = att.clone()
    moved[..., 0] = att[..., 1]
    moved[..., 1] = att[..., 0]
    assert not torch.allclose(wcb.compensation(att, tokens), wcb.compensation(moved, tokens), atol=1e-3)


def test_channel_fusion_reaches_pooled_vectors_that_no_single_token_map_can():
    # two tokens e0, e1; map 0 looks at token 0, map 1 at token 1; channel 0 gated to map 0, channel 1
    # to map 1. One weight map pools a convex combination a·e0 + (1-a)·e1 (coordinates summing to 1);
    # the channel map takes channel 0 from token 0 and channel 1 from token 1: (1, 1).
    wcb = WeightCompensation(dim=2, heads=2, hidden=2, fusion="channel").eval()
    with torch.no_grad():
        wcb.fuse.weight.copy_(torch.eye(2))
        wcb.gate.copy_(torch.tensor([[50.0, -50.0], [-50.0, 50.0]]))
    tokens = torch.eye(2)[None]  # [B=1, L=2, d=2]
    att = torch.eye(2)[None]  # [B, L, K]: map k = token k
    assert torch.allclose(wcb.compensation(att, tokens), torch.tensor([[1.0, 1.0]]), atol=1e-6)
    mean = WeightCompensation(dim=2, heads=2, hidden=2, fusion="mean").eval()
    with torch.no_grad():
        mean.fuse.weight.copy_(torch.eye(2))
    assert torch.allclose(mean.compensation(att, tokens), torch.tensor([[0.5, 0.5]]))
    # with zero gates (the start) the channel map is the plain mean
    with torch.no_grad():
        wcb.gate.zero_()
    assert torch.allclose(wcb.compensation(att, tokens), mean.compensation(att, tokens))


def test_bad_hyper_parameters_are_clear_errors():
    cls = get_method("ncl-cir")
    with pytest.raises(ConfigError, match="filter_loss"):
        cls(Dims(8, 8), cls.make_hparams({"filter_loss": "nope"}))
    with pytest.raises(ConfigError, match="filter_fit"):
        cls(Dims(8, 8), cls.make_hparams({"filter_fit": "nope"}))
    with pytest.raises(ConfigError, match="heads"):
        cls(Dims(8, 8), cls.make_hparams({"heads": "0"}))
    with pytest.raises(ConfigError, match="map_fusion must be one of"):
        cls(Dims(8, 8), cls.make_hparams({"map_fusion": "concat"}))


# -- the paper's method and cirbench's variant ------------------------------------------------------
def test_the_bare_name_is_the_papers_method_and_robust_is_cirbenchs_named_variant():
    cls, paper = resolve_method(RunSpec(method="ncl-cir", dataset="shapes-cirr"))
    # the paper: WCB, a free two-component GMM on per-sample losses (NCR/DivideMix), soft labels; no text check
    assert (paper.filter, paper.filter_fit, paper.filter_loss, paper.text_check) == (True, "gmm", "targets", False)
    _, robust = resolve_method(RunSpec(method="ncl-cir:robust", dataset="shapes-cirr"))
    assert (robust.filter, robust.filter_fit, robust.filter_loss, robust.text_check) == (True, "anchored", "ref", True)
    # both pool with K maps mixed per channel (T ⊗ Att with a token × channel Att), not one averaged map
    assert (paper.heads, paper.map_fusion) == (robust.heads, robust.map_fusion) == (4, "channel")
    assert tuple(cls(Dims(8, 8), paper).wcb_text.gate.shape) == (4, 8)  # one gate per map and channel
    # everything else is shared: the variant differs from the paper's method only in the filter
    differ = {k for k, v in vars(paper).items() if getattr(robust, k) != v}
    assert differ == {"filter_fit", "filter_loss", "text_check"} == set(cls.variants["robust"].hparams)
    assert "cirbench" in cls.variants["robust"].description
    # both run in the default grid, side by side
    assert expand_methods(["*"]).index("ncl-cir:robust") == expand_methods(["*"]).index("ncl-cir") + 1
    # a user's setting wins over the variant's
    _, hp = resolve_method(RunSpec(method="ncl-cir:robust", dataset="shapes-cirr", hparams={"text_check": "false"}))
    assert (hp.filter_fit, hp.text_check) == ("anchored", False)


# -- the filter inside a training set with generated triplets -------------------------------------
def _tiny_training_set(d: int = 8, n_img: int = 12) -> TrainingSet:
    torch.manual_seed(0)
    images = FeatureTable([f"i{k}" for k in range(n_img)],
                          Features(torch.randn(n_img, d), torch.randn(n_img, 3, d).half()))
    triplets = [Triplet(str(k), f"i{k}", f"i{(k + 1) % n_img}", (f"text {k}",), "cirr") for k in range(n_img)]
    texts = FeatureTable([f"text {k}" for k in range(n_img)],
                         Features(torch.randn(n_img, d), torch.randn(n_img, 4, d).half(), torch.ones(n_img, 4).bool()))
    return TrainingSet("cirr", triplets, images, texts, generated=4)


def test_the_papers_filter_is_the_free_gmm_on_the_query_loss_alone():
    train = _tiny_training_set()
    cls = get_method("ncl-cir")
    method = cls(Dims(8, 8), cls.make_hparams({"warmup": 0}))
    ctx = TrainContext(train, TrainConfig(), torch.device("cpu"), epoch=0)
    method.on_epoch_start(ctx)
    losses = method.sample_losses(train, ctx, seed=0)
    assert set(losses) == {"query"}  # no text check
    expected = gmm_clean_probability(losses["query"][0][:8].numpy())
    assert method.clean_probabilities() == pytest.approx(expected)


def test_on_epoch_start_gives_probabilities_to_annotated_triplets_and_one_to_generated():
    train = _tiny_training_set()
    d = 8
    cls, hp = resolve_method(RunSpec(method="ncl-cir:robust", dataset="shapes-cirr", hparams={"warmup": 1}))
    method = cls(Dims(d, d), hp)
    ctx = TrainContext(train, TrainConfig(), torch.device("cpu"), epoch=0)
    method.on_epoch_start(ctx)  # still warming up
    assert method.clean_probabilities() is None
    ctx.epoch = 1
    method.on_epoch_start(ctx)
    probs = method.clean_probabilities()
    assert probs.shape == (8,) and ((probs >= 0) & (probs <= 1)).all()
    assert (method._labels[8:] == 1).all() and torch.allclose(method._labels[:8], torch.tensor(probs).float())
    assert 0 <= ctx.log["filter_selected"] <= 1
    batch = train.batch(torch.arange(6))
    assert torch.isfinite(method.loss(batch, ctx))
    losses = method.sample_losses(train, ctx, seed=1)
    assert set(losses) == {"query", "text"}  # the robust variant's text check
    for loss, null in losses.values():
        assert loss.shape == null.shape == (len(train),) and torch.isfinite(loss).all()
    # the null draw is seeded: the same seed gives the same mismatched pairs
    assert torch.equal(losses["query"][1], method.sample_losses(train, ctx, seed=1)["query"][1])


# -- end to end ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def ws():
    return Workspace(progress=False)


@pytest.mark.parametrize("dataset,method", [("shapes-fashioniq", "ncl-cir"), ("shapes-cirr", "ncl-cir"),
                                            ("shapes-cirr", "ncl-cir:robust")])
def test_ncl_cir_runs_end_to_end_and_reports_noise_detection(tmp_path, ws, dataset, method):
    spec = RunSpec(method=method, dataset=dataset, noise_rate=0.5, weights="random", epochs=3, batch_size=32,
                   hparams={"warmup": 1})
    metrics = execute(spec, tmp_path, ws)
    run = tmp_path / spec.dirname()
    assert metrics["status"] == "finished"
    assert metrics["hparams"]["filter_fit"] == ("anchored" if method == "ncl-cir:robust" else "gmm")
    det = metrics["noise_detection"]
    assert det["n"] == metrics["noise"]["n_triplets"] and det["clean_rate"] == pytest.approx(0.5)
    assert 0 <= det["auroc"] <= 1 and set(det["by_type"]) == {"reference", "text", "target"}
    history = [json.loads(x) for x in (run / "history.jsonl").read_text().splitlines()]
    assert "noise_detection" not in history[0]  # warm-up epoch: no filter yet
    assert all("noise_detection" in h and "filter_selected" in h for h in history[1:])
    assert history[-1]["noise_detection"] == det


@pytest.mark.parametrize("layout", ["fashioniq", "cirr"])
def test_ncl_cir_runs_on_real_layout_folders(tmp_path, ws, make_fashioniq, make_cirr, layout):
    root = make_fashioniq() if layout == "fashioniq" else make_cirr(layout="nested")
    spec = RunSpec(method="ncl-cir", dataset=layout, data_root=str(root), noise_rate=0.5, weights="random",
                   epochs=2, batch_size=4, hparams={"warmup": 1})
    metrics = execute(spec, tmp_path, ws)
    assert metrics["status"] == "finished" and metrics["noise_detection"]["n"] == metrics["noise"]["n_triplets"]
