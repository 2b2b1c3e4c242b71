"""DQE-CIR: attribute weights, mid-zone negatives, the loss, end to end (vocabularies: test_attributes.py; pairwise + KL: tests/test_losses.py)."""
import json
import math

import pytest
import torch
import torch.nn.functional as F

from cirbench.data.triplets import Triplet, fashioniq_train_texts
from cirbench.errors import ConfigError
from cirbench.features import FeatureTable
from cirbench.losses import info_nce
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
    ctx = _ctx(train, epoch=1)  # the first refresh, after one epoch of InfoNCE
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
    m.on_epoch_start(_ctx(train, epoch=2))
    assert torch.equal(m.negatives, neg)
    m.on_epoch_start(_ctx(train, epoch=3))
    assert not torch.equal(m.negatives, neg)
    fresh = method()
    fresh.load_state_dict(m.state_dict())
    assert torch.equal(fresh.negatives, m.negatives)


def test_no_midzone_ablation_draws_from_all_candidates_but_still_not_target_or_reference():
    _, train, pairs = _toy_training_set()
    m = method(ablation="no-midzone")
    m.on_epoch_start(_ctx(train, epoch=1))
    neg = m.negatives.tolist()
    assert all(n >= 0 and n not in p and n < 25 for n, p in zip(neg, pairs))


def test_first_refresh_comes_after_a_warm_up_epoch_of_plain_infonce():
    m, train, _ = _toy_training_set()
    assert [e for e in range(10) if m.refresh_due(e)] == [1, 3, 5, 7, 9]
    ctx = _ctx(train, epoch=0)
    m.on_epoch_start(ctx)
    assert m.negatives is None and "midzone_coverage" not in ctx.log  # nothing drawn from the untrained model
    m.eval()
    batch = train.batch(torch.arange(16))
    q = F.normalize(m.compose(batch.reference, batch.text), dim=-1)
    assert torch.allclose(m.loss(batch, ctx), info_nce(q, F.normalize(batch.target.embed, dim=-1),
                                                       m.hp.temperature))
    m.on_epoch_start(_ctx(train, epoch=1))
    assert m.negatives is not None
    # warmup_epochs=0: the first refresh at epoch 0, as the paper's schedule may be read
    early = method(warmup_epochs=0, refresh_every=3)
    assert [e for e in range(10) if early.refresh_due(e)] == [0, 3, 6, 9]
    early.on_epoch_start(_ctx(train, epoch=0))
    assert early.negatives is not None


def test_midzone_holds_under_every_training_caption():
    """FashionIQ trains on four captions per triplet (c1+c2, c2+c1, c1, c2) drawn at random; a candidate
    that beats the target under one of them (c1 alone) is a false negative for it, even when the
    evaluation caption (variant 0) puts it in the mid-zone."""
    e = torch.eye(DIM)
    target, reference = e[0], F.normalize(e[2] + e[3], dim=0)
    tied = F.normalize(0.97 * e[0] + 0.243 * e[1], dim=0)  # close behind the target under c1+c2, ahead under c1
    fine = F.normalize(0.95 * e[0] - 0.31 * e[1], dim=0)  # behind the target under every caption
    g = torch.Generator().manual_seed(0)
    others = F.normalize(torch.cat([torch.zeros(12, 4), torch.randn(12, DIM - 4, generator=g)], 1), dim=1)
    images = torch.stack([target, reference, tied, fine, *others])
    ids = [f"img{i}" for i in range(len(images))]
    triplets = [Triplet("dress/0", "img1", "img0", ("is red", "is a star"), "dress"),
                Triplet("dress/1", "img4", "img2", ("x1", "y1"), "dress"),
                Triplet("dress/2", "img5", "img3", ("x2", "y2"), "dress")]
    triplets += [Triplet(f"dress/{k}", ids[k], ids[k + 1], (f"a{k}", f"b{k}"), "dress") for k in range(6, 15)]
    texts = sorted({v for t in triplets for v in fashioniq_train_texts(t.captions)})
    embed = torch.randn(len(texts), DIM, generator=g)
    for i, text in enumerate(texts):
        if text in ("Is red and is a star", "Is a star and is red", "Is a star"):
            embed[i] = target
        elif text == "Is red":  # c1 alone: the query points at `tied`, which now beats the target
            embed[i] = tied
    train = TrainingSet("fashioniq", triplets, FeatureTable(ids, Features(images)),
                        FeatureTable(texts, Features(embed)))
    m = method()
    m.compose = lambda reference, text: text.embed  # the query is the caption's embedding
    # under the evaluation caption alone, `tied` would be the mid-zone candidate
    sims = target @ images[:4].t()
    pool = torch.unique(torch.cat([train.reference_rows, train.target_rows]))
    spread = (target @ images[pool].t()).std()
    delta_eval = (sims[0] - sims) / spread
    assert m.hp.delta_low < delta_eval[2] < m.hp.delta_high and m.hp.delta_low < delta_eval[3] < m.hp.delta_high
    for seed in range(8):  # eight refreshes, each its own uniform draw from the zone
        m.refresh_negatives(_ctx(train, epoch=seed))
        assert m.negatives[0].item() == 3  # `fine`, never `tied`


def test_options_are_checked():
    with pytest.raises(ConfigError, match="ablation"):
        method(ablation="no-everything")
    with pytest.raises(ConfigError, match="delta_low < delta_high"):
        method(delta_low=0.5, delta_high=0.1)
    with pytest.raises(ConfigError, match="warmup_epochs"):
        method(warmup_epochs=-1)
    cls, hp = resolve_method(RunSpec(method="dqe-cir:no-attr", dataset="shapes-cirr"))
    assert hp.ablation == "no-attr"


def test_loss_trains_the_sub_queries_and_the_weights():
    m, train, _ = _toy_training_set()
    ctx = _ctx(train, epoch=1)
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
    assert "midzone_coverage" not in history[0]  # epoch 1: InfoNCE alone, the model is untrained
    assert 0 < history[1]["midzone_coverage"] <= 1 and history[1]["midzone_size"] > 0
    assert all(math.isfinite(h["loss"]) for h in history)


@pytest.mark.parametrize("kind", ["fashioniq", "cirr"])
def test_dqe_cir_runs_on_a_tiny_real_layout_folder(tmp_path, ws, make_fashioniq, make_cirr, kind):
    root = make_fashioniq() if kind == "fashioniq" else make_cirr()
    s = RunSpec(method="dqe-cir:no-midzone" if kind == "cirr" else "dqe-cir", dataset=kind, data_root=str(root),
                weights="random", epochs=2, batch_size=2)
    metrics = execute(s, tmp_path, ws)
    assert metrics["status"] == "finished"
    assert ("average" in metrics["best"]) == (kind == "fashioniq")
