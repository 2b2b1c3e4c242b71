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
