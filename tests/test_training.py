"""The shared training loop's pieces: batches line up with their triplets; the loss goes down."""
import torch

from cirbench.data.triplets import Triplet, fashioniq_train_texts
from cirbench.features import FeatureTable
from cirbench.registry import get_method
from cirbench.training import TrainConfig, TrainingSet, Validation, fit
from cirbench.types import Dims, Features


def make_set(n=12, dim=8):
    triplets = [Triplet(f"dress/{i}", f"r{i}", f"t{i}", (f"caption a{i}", f"caption b{i}"), "dress") for i in range(n)]
    images = [f"r{i}" for i in range(n)] + [f"t{i}" for i in range(n)]
    texts = sorted({x for t in triplets for x in fashioniq_train_texts(t.captions)})
    g = torch.Generator().manual_seed(0)
    img = FeatureTable(images, Features(torch.randn(len(images), dim, generator=g)))
    txt = FeatureTable(texts, Features(torch.randn(len(texts), dim, generator=g)))
    return TrainingSet("fashioniq", triplets, img, txt), triplets


def test_batches_carry_the_features_of_their_own_triplets():
    train, triplets = make_set()
    index = torch.tensor([7, 2, 11])
    variant = torch.tensor([3, 0, 2])
    batch = train.batch(index, variant)
    for k, (i, v) in enumerate(zip(index.tolist(), variant.tolist())):
        t = triplets[i]
        text = fashioniq_train_texts(t.captions)[v]
        assert torch.equal(batch.reference.embed[k], train.images.features.embed[train.images.row[t.reference]])
        assert torch.equal(batch.target.embed[k], train.images.features.embed[train.images.row[t.target]])
        assert torch.equal(batch.text.embed[k], train.texts.features.embed[train.texts.row[text]])
    default = train.batch(index)  # no variant: the evaluation form "<c1> and <c2>"
    assert torch.equal(default.text.embed[0],
                       train.texts.features.embed[train.texts.row["Caption a7 and caption b7"]])


def test_shuffled_batches_cover_every_triplet_once_per_epoch():
    train, _ = make_set(n=10)
    g = torch.Generator().manual_seed(1)
    seen = torch.cat([b.index for b in train.batches(4, g)])
    assert sorted(seen.tolist()) == list(range(10))
    assert [len(b.index) for b in train.batches(4, g, drop_last=True)] == [4, 4]


def test_fit_lowers_the_training_loss(tmp_path):
    train, _ = make_set(n=64, dim=16)
    cls = get_method("clip4cir")
    torch.manual_seed(0)
    method = cls(Dims(embed=16), cls.make_hparams({"lr": 3e-3, "temperature": 0.1}))
    out = fit(method, train, lambda m: Validation({}, 0.0), TrainConfig(epochs=15, batch_size=16),
              tmp_path / "ckpt.pt", progress=False)
    losses = [row["loss"] for row in out["history"]]
    assert len(losses) == 15 and losses[-1] < 0.7 * losses[0]


def test_a_stage_from_best_starts_from_the_best_epochs_weights(tmp_path):
    """``Stage.from_best``: the second stage starts from the weights of the best epoch so far, not the last."""
    from cirbench.files import save_torch
    from cirbench.method import Method
    from cirbench.types import Stage

    class TwoStages(Method):
        def __init__(self, dims, hparams=None):
            super().__init__(dims, hparams)
            self.proj = torch.nn.Linear(dims.embed, dims.embed)

        def compose(self, reference, text):
            return self.proj(reference.embed + text.embed)

        def stages(self, epochs):
            return [Stage("first", 3, self.parameters, self.loss),
                    Stage("second", 1, self.parameters, self.loss, from_best=True)]

    train, _ = make_set()
    method = TwoStages(Dims(8))
    selections = iter([5.0, 9.0, 1.0, 0.0])  # epoch 2 of the first stage is the best
    states, starts = {}, []
    best_file = tmp_path / "best.pt"
    original = method.on_epoch_start

    def on_epoch_start(ctx):
        if ctx.stage == "second":
            starts.append({k: v.clone() for k, v in method.state_dict().items()})
        return original(ctx)

    method.on_epoch_start = on_epoch_start

    def validate(m):
        return Validation({}, next(selections))

    def on_best(val):
        states["best"] = {k: v.clone() for k, v in method.state_dict().items()}
        save_torch(method.state_dict(), best_file)

    fit(method, train, validate, TrainConfig(epochs=3, batch_size=4), tmp_path / "ckpt.pt", on_best=on_best,
        progress=False, best_state=lambda: torch.load(best_file, weights_only=False))
    assert all(torch.equal(starts[0][k], v) for k, v in states["best"].items())  # epoch 2's, not epoch 3's
