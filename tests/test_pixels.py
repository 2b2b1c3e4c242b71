"""The pixel cache of trainable image towers: rows equal the backbone's own transform bit for bit, each
image is decoded once per cache entry, and pipelines it cannot split are refused."""
import os

import pytest
import torch
from PIL import Image
from torchvision import transforms

from cirbench import pixels
from cirbench.backbones import build_backbone
from cirbench.errors import ConfigError
from cirbench.pixels import pixel_table, split_preprocess

SIZES = [(80, 120), (64, 64), (200, 90), (31, 47)]


@pytest.fixture
def images(tmp_path):
    torch.manual_seed(0)
    out = {}
    for i, size in enumerate(SIZES):
        path = tmp_path / "images" / f"im{i}.png"
        path.parent.mkdir(exist_ok=True)
        Image.effect_noise(size, 60).convert("RGB").save(path)
        out[f"im{i}"] = path
    return out


@pytest.mark.parametrize("preprocess", ["clip", "targetpad:1.25", "targetpad:1"])
def test_rows_are_the_backbones_own_transform_bit_for_bit(tmp_path, images, preprocess):
    backbone = build_backbone("tiny", "random", tmp_path / "cache", preprocess=preprocess)
    table = pixel_table(backbone.preprocess, sorted(images), images, tmp_path / "cache", progress=False)
    assert table.array.dtype == "uint8" and table.array.shape == (len(images), 3, 64, 64)
    rows = torch.tensor([2, 0, 3])
    got = table.batch(rows, torch.device("cpu"))
    keys = sorted(images)
    expected = torch.stack([backbone.preprocess(Image.open(images[keys[r]]).convert("RGB")) for r in rows])
    assert torch.equal(got, expected)


def test_each_image_is_decoded_once_per_cache_entry(tmp_path, images, monkeypatch):
    calls = []
    decode = pixels.decode_image
    monkeypatch.setattr(pixels, "decode_image", lambda path, *a: calls.append(path) or decode(path, *a))
    backbone = build_backbone("tiny", "random", tmp_path / "cache")
    ids = sorted(images)
    first = pixel_table(backbone.preprocess, ids, images, tmp_path / "cache", progress=False)
    again = pixel_table(backbone.preprocess, ids, images, tmp_path / "cache", progress=False)
    assert sorted(calls) == sorted(images.values())  # once each, the second table read the cache
    assert (first.array == again.array).all()
    padded = build_backbone("tiny", "random", tmp_path / "cache", preprocess="targetpad:1.25")
    pixel_table(padded.preprocess, ids, images, tmp_path / "cache", progress=False)
    assert len(calls) == 2 * len(images)  # another geometry is another entry
    st = images["im1"].stat()
    os.utime(images["im1"], ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # a changed file: a new entry
    pixel_table(backbone.preprocess, ids, images, tmp_path / "cache", progress=False)
    assert len(calls) == 3 * len(images)
    assert not list((tmp_path / "cache" / "pixels").glob(".*tmp"))  # written atomically, nothing left over


def test_pipelines_that_cannot_be_split_are_refused():
    normalize = transforms.Normalize((0.5,) * 3, (0.5,) * 3)
    with pytest.raises(ConfigError, match="ToTensor and Normalize"):
        split_preprocess(lambda im: im)
    with pytest.raises(ConfigError, match="last steps"):
        split_preprocess(transforms.Compose([transforms.CenterCrop(8), transforms.ToTensor(), normalize,
                                             transforms.RandomHorizontalFlip()]))
    with pytest.raises(ConfigError, match="fixed size"):
        split_preprocess(transforms.Compose([transforms.Resize(8), transforms.ToTensor(), normalize]))
    steps = split_preprocess(transforms.Compose([transforms.Resize(8), transforms.CenterCrop((8, 6)),
                                                 transforms.ToTensor(), normalize]))
    assert steps.size == (8, 6) and steps.mean == (0.5, 0.5, 0.5)


def test_a_prefetched_batch_is_the_same_batch(tmp_path, images, monkeypatch):
    backbone = build_backbone("tiny", "random", tmp_path / "cache")
    table = pixel_table(backbone.preprocess, sorted(images), images, tmp_path / "cache", progress=False)
    cpu = torch.device("cpu")
    plain = table.batch(torch.tensor([3, 1]), cpu)
    gathered = []
    gather = table._gather
    monkeypatch.setattr(table, "_gather", lambda index, pin: gathered.append(list(index)) or gather(index, pin))
    table.prefetch(torch.tensor([3, 1]), cpu)
    assert torch.equal(table.batch(torch.tensor([3, 1]), cpu), plain)
    assert gathered == [[3, 1]]  # gathered once, by the prefetch
    table.prefetch(torch.tensor([0, 2]), cpu)
    assert torch.equal(table.batch(torch.tensor([3, 1]), cpu), plain)  # other rows than prefetched: gathered anew
    assert sorted(map(tuple, gathered)) == [(0, 2), (3, 1), (3, 1)]
