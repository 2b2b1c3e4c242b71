"""NCL-CIR: the GMM noise-pair filter, the weight maps, and end-to-end runs (its soft-label NCE loss: tests/test_losses.py)."""
import json

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from cirbench.data.triplets import Triplet
from cirbench.errors import ConfigError
from cirbench.features import FeatureTable
from cirbench.registry import get_method
from cirbench.runner import Workspace, execute
from cirbench.runs import RunSpec
from cirbench.training import TrainConfig, TrainContext, TrainingSet
from cirbench.types import Dims, Features
from cirbench_methods.ncl_cir import (
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


def test_weight_compensation_starts_at_the_global_embedding_and_ignores_padding():
    torch.manual_seed(0)
    wcb = WeightCompensation(dim=8, heads=3, hidden=8)
    feats = Features(torch.randn(2, 8), torch.randn(2, 5, 8).half(), torch.tensor([[1, 1, 1, 0, 0]] * 2).bool())
    out, _ = wcb(feats)
    assert torch.equal(out, feats.embed)  # zero-initialised compensation
    torch.nn.init.normal_(wcb.fuse.weight)
    changed = Features(feats.embed, feats.tokens.clone(), feats.mask)
    changed.tokens[:, 3:] = 100  # padding must not matter
    assert torch.allclose(wcb(feats)[0], wcb(changed)[0])
    assert not torch.allclose(wcb(feats)[0], feats.embed)


def test_bad_hyper_parameters_are_clear_errors():
    cls = get_method("ncl-cir")
    with pytest.raises(ConfigError, match="filter_loss"):
        cls(Dims(8, 8), cls.make_hparams({"filter_loss": "nope"}))
    with pytest.raises(ConfigError, match="filter_fit"):
        cls(Dims(8, 8), cls.make_hparams({"filter_fit": "nope"}))
    with pytest.raises(ConfigError, match="heads"):
        cls(Dims(8, 8), cls.make_hparams({"heads": "0"}))


# -- the filter inside a training set with generated triplets -------------------------------------
def test_on_epoch_start_gives_probabilities_to_annotated_triplets_and_one_to_generated():
    torch.manual_seed(0)
    d, n_img = 8, 12
    images = FeatureTable([f"i{k}" for k in range(n_img)],
                          Features(torch.randn(n_img, d), torch.randn(n_img, 3, d).half()))
    triplets = [Triplet(str(k), f"i{k}", f"i{(k + 1) % n_img}", (f"text {k}",), "cirr") for k in range(n_img)]
    texts = FeatureTable([f"text {k}" for k in range(n_img)],
                         Features(torch.randn(n_img, d), torch.randn(n_img, 4, d).half(), torch.ones(n_img, 4).bool()))
    train = TrainingSet("cirr", triplets, images, texts, generated=4)
    cls = get_method("ncl-cir")
    method = cls(Dims(d, d), cls.make_hparams({"warmup": 1}))
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
    assert set(losses) == {"query", "text"}  # text_check is on by default
    for loss, null in losses.values():
        assert loss.shape == null.shape == (len(train),) and torch.isfinite(loss).all()
    # the null draw is seeded: the same seed gives the same mismatched pairs
    assert torch.equal(losses["query"][1], method.sample_losses(train, ctx, seed=1)["query"][1])


# -- end to end ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def ws():
    return Workspace(progress=False)


@pytest.mark.parametrize("dataset", ["shapes-fashioniq", "shapes-cirr"])
def test_ncl_cir_runs_end_to_end_and_reports_noise_detection(tmp_path, ws, dataset):
    spec = RunSpec(method="ncl-cir", dataset=dataset, noise_rate=0.5, weights="random", epochs=3, batch_size=32,
                   hparams={"warmup": 1})
    metrics = execute(spec, tmp_path, ws)
    run = tmp_path / spec.dirname()
    assert metrics["status"] == "finished"
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
