"""DQE-CIR: attribute weights, mid-zone negatives, the loss, end to end (vocabularies: test_attributes.py; pairwise + KL: tests/test_losses.py)."""
import json
import math

import pytest
import torch

from cirbench.data.triplets import Triplet
from cirbench.errors import ConfigError
from cirbench.features import FeatureTable
from cirbench.registry import get_method
from cirbench.runner import Workspace, execute, resolve_method
from cirbench.runs import RunSpec
from cirbench.training import TrainConfig, TrainContext, TrainingSet
from cirbench.types import Dims, Features

DIM = 16


def method(**hp):
    cls = get_method("dqe-cir")
    torch.manual_seed(0)
    return cls(Dims(DIM), cls.make_hparams(hp))


def test_attribute_weights_respond_to_colour_versus_shape_wording():
    m = method().eval()
    texts = ["change the color to red", "make it a star", "recolor it blue, paint it green",
             "turn it into a heart shape"]
    embed = torch.randn(1, DIM).expand(len(texts), DIM)  # same embedding: only the wording differs
    w = m.attribute_weights(Features(embed, extra=m.text_side_features(texts)))
    assert w.shape == (4, 3) and torch.allclose(w.sum(1), torch.ones(4))
    for colour, shape in ((0, 1), (2, 3), (0, 3), (2, 1)):
        assert w[colour, 1] > w[shape, 1] + 0.2  # colour sub-query weighs more for colour wording
        assert w[shape, 2] > w[colour, 2] + 0.2  # shape sub-query weighs more for shape wording
    # without attribute weights the query is the global one and no side features are read
    flat = method(ablation="no-attr")
    assert flat.text_side_features(texts) is None and not hasattr(flat, "heads")


# --------------------------------------------------------------------------- mid-zone selection

def test_select_midzone_respects_bounds_and_never_picks_forbidden():
    from cirbench_methods.dqe_cir import select_midzone

    g = torch.Generator().manual_seed(0)
    delta = torch.rand(200, 50, generator=g) * 2 - 0.5
    forbidden = torch.zeros(200, 50, dtype=torch.bool)
    forbidden[torch.arange(200), torch.randint(50, (200,), generator=g)] = True
    forbidden[torch.arange(200), torch.randint(50, (200,), generator=g)] = True
    delta[forbidden] = 0.3  # forbidden candidates sit inside the zone: they must still be skipped
    pick = select_midzone(delta, forbidden, 0.1, 0.6, g)
    assert (pick >= 0).all()
    chosen = delta[torch.arange(200), pick]
    assert ((chosen > 0.1) & (chosen < 0.6)).all()
    assert not forbidden[torch.arange(200), pick].any()
    # uniform over the zone: many different columns get picked
    assert len(set(pick.tolist())) > 30
    # an empty zone gives -1
    only = torch.tensor([[0.0, 0.3, 0.9], [0.0, 0.05, 0.9]])
    got = select_midzone(only, torch.tensor([[False, False, False], [False, False, False]]), 0.1, 0.6)
    assert got.tolist() == [1, -1]
    assert select_midzone(only[:1], torch.tensor([[False, True, False]]), 0.1, 0.6).tolist() == [-1]


def _toy_training_set(n_images=30, n_triplets=40):
    g = torch.Generator().manual_seed(1)
    ids = [f"img{i}" for i in range(n_images)]
    images = FeatureTable(ids, Features(torch.randn(n_images, DIM, generator=g)))
    pairs = [(int(a), int(b)) for a, b in torch.randint(n_images - 5, (n_triplets, 2), generator=g)]
    pairs = [(a, b if b != a else (a + 1) % (n_images - 5)) for a, b in pairs]
    # img25..img29 are in no triplet (like validation images): never candidates
    triplets = [Triplet(str(k), ids[a], ids[b], (f"make the circle {['red', 'blue'][k % 2]} {k}",), "cirr")
                for k, (a, b) in enumerate(pairs)]
    texts = [t.captions[0] for t in triplets]
    m = method()
    feats = Features(torch.randn(len(texts), DIM, generator=g), extra=m.text_side_features(texts))
    train = TrainingSet("cirr", triplets, images, FeatureTable(texts, feats))
    return m, train, pairs


def _ctx(train, epoch=0):
    config = TrainConfig(epochs=4, batch_size=8)
    return TrainContext(train, config, torch.device("cpu"), epoch=epoch, epochs=4,
                        generator=torch.Generator().manual_seed(epoch))


def test_refresh_draws_one_midzone_negative_per_query_never_target_or_reference():
    m, train, pairs = _toy_training_set()
    ctx = _ctx(train)
    m.on_epoch_start(ctx)
    neg = m.negatives
    assert neg.shape == (len(pairs),) and 0 < ctx.log["midzone_coverage"] <= 1
    assert (neg >= 0).float().mean().item() == pytest.approx(ctx.log["midzone_coverage"])
    # recompute the standardised Δ-scores and check every negative against the bounds
    m.eval()
    pool = torch.unique(torch.cat([train.reference_rows, train.target_rows]))
    q = m.query_embeddings(train.images.features[train.reference_rows], train.texts.features[train.text_rows[:, 0]])
    gal = m.gallery_embeddings(train.images.features)
    sims = q @ gal.t()
    spread = sims[:, pool].std(1)
    for i, (ref, tgt) in enumerate(pairs):
        if neg[i] < 0:
            continue
        assert neg[i].item() not in (ref, tgt) and neg[i].item() in pool.tolist()
        delta = (sims[i, tgt] - sims[i, neg[i]]) / spread[i]
        assert m.hp.delta_low < delta < m.hp.delta_high
    # the negatives stay until the next refresh, and travel with the state dict (resume)
    m.on_epoch_start(_ctx(train, epoch=1))
    assert torch.equal(m.negatives, neg)
    m.on_epoch_start(_ctx(train, epoch=2))
    assert not torch.equal(m.negatives, neg)
    fresh = method()
    fresh.load_state_dict(m.state_dict())
    assert torch.equal(fresh.negatives, m.negatives)


def test_no_midzone_ablation_draws_from_all_candidates_but_still_not_target_or_reference():
    _, train, pairs = _toy_training_set()
    m = method(ablation="no-midzone")
    m.on_epoch_start(_ctx(train))
    neg = m.negatives.tolist()
    assert all(n >= 0 and n not in p and n < 25 for n, p in zip(neg, pairs))


def test_options_are_checked():
    with pytest.raises(ConfigError, match="ablation"):
        method(ablation="no-everything")
    with pytest.raises(ConfigError, match="delta_low < delta_high"):
        method(delta_low=0.5, delta_high=0.1)
    cls, hp = resolve_method(RunSpec(method="dqe-cir:no-attr", dataset="shapes-cirr"))
    assert hp.ablation == "no-attr"


def test_loss_trains_the_sub_queries_and_the_weights():
    m, train, _ = _toy_training_set()
    ctx = _ctx(train)
    m.on_epoch_start(ctx)
    m.train()
    batch = train.batch(torch.arange(16))
    loss = m.loss(batch, ctx)
    loss.backward()
    assert torch.isfinite(loss)
    for part in (m.heads[0][0].weight, m.heads[1][0].weight, m.gate[-1].weight, m.prior,
                 m.combiner.mix[0].weight):
        assert part.grad is not None and part.grad.abs().sum() > 0


# --------------------------------------------------------------------------- end to end

@pytest.fixture(scope="module")
def ws():
    return Workspace(progress=False)


@pytest.mark.parametrize("dataset", ["shapes-fashioniq", "shapes-cirr"])
def test_dqe_cir_runs_end_to_end_on_shapes(tmp_path, ws, dataset):
    s = RunSpec(method="dqe-cir", dataset=dataset, weights="random", epochs=2, batch_size=32)
    metrics = execute(s, tmp_path, ws)
    assert metrics["status"] == "finished" and metrics["epochs_run"] == 2
    history = [json.loads(x) for x in (tmp_path / s.dirname() / "history.jsonl").read_text().splitlines()]
    assert 0 < history[0]["midzone_coverage"] <= 1 and history[0]["midzone_size"] > 0
    assert all(math.isfinite(h["loss"]) for h in history)


@pytest.mark.parametrize("kind", ["fashioniq", "cirr"])
def test_dqe_cir_runs_on_a_tiny_real_layout_folder(tmp_path, ws, make_fashioniq, make_cirr, kind):
    root = make_fashioniq() if kind == "fashioniq" else make_cirr()
    s = RunSpec(method="dqe-cir:no-midzone" if kind == "cirr" else "dqe-cir", dataset=kind, data_root=str(root),
                weights="random", epochs=2, batch_size=2)
    metrics = execute(s, tmp_path, ws)
    assert metrics["status"] == "finished"
    assert ("average" in metrics["best"]) == (kind == "fashioniq")
