"""--preprocess: CLIP4Cir's TargetPad (pad only above the target ratio, then CLIP's resize and
centre crop), applied to every backbone, and keyed apart in the feature cache."""
import pytest
import torch
import torchvision.transforms.functional as TF
from PIL import Image

from cirbench.backbones import build_backbone
from cirbench.backbones.preprocess import TargetPad, targetpad_transform
from cirbench.errors import ConfigError
from cirbench.features import image_features, preprocess_id
from cirbench.runs import parse_preprocess


@pytest.fixture(scope="module")
def clip():
    return build_backbone("tiny", "random")


@pytest.fixture(scope="module")
def padded():
    return build_backbone("tiny", "random", preprocess="targetpad")


def reference_targetpad(image, ratio):
    """CLIP4Cir's TargetPad, as its src/data_utils.py states it (the test's independent oracle)."""
    w, h = image.size
    if max(w, h) / min(w, h) < ratio:
        return image
    scaled = max(w, h) / ratio
    hp, vp = max(int((scaled - w) / 2), 0), max(int((scaled - h) / 2), 0)
    return TF.pad(image, [hp, vp, hp, vp], 0, "constant")


@pytest.mark.parametrize("size", [(100, 200), (200, 100), (100, 110), (125, 100), (124, 100), (64, 300), (37, 91)])
@pytest.mark.parametrize("ratio", [1.0, 1.25, 1.5])
def test_targetpad_pads_exactly_as_clip4cir(size, ratio):
    image = Image.new("RGB", size, (200, 100, 50))
    ours, theirs = TargetPad(ratio)(image), reference_targetpad(image, ratio)
    assert ours.size == theirs.size
    assert ours.tobytes() == theirs.tobytes()


def test_targetpad_pads_only_tall_or_wide_images_and_pads_black():
    pad = TargetPad(1.25)
    assert pad(Image.new("RGB", (100, 110), "white")).size == (100, 110)  # ratio 1.1 < 1.25: untouched
    tall = pad(Image.new("RGB", (100, 200), "white"))
    assert tall.size == (160, 200)  # 200 / 1.25 = 160: 30 black columns on each side
    assert tall.getpixel((0, 100)) == (0, 0, 0) and tall.getpixel((29, 100)) == (0, 0, 0)
    assert tall.getpixel((30, 100)) == (255, 255, 255) and tall.getpixel((129, 0)) == (255, 255, 255)
    assert tall.getpixel((130, 100)) == (0, 0, 0)


def test_targetpad_backbone_transform_is_clip_after_the_pad(clip, padded):
    assert "TargetPad" not in repr(clip.preprocess)  # clip: open_clip's own transform, as before
    assert repr(padded.preprocess).splitlines()[1].strip() == "TargetPad(target_ratio=1.25)"
    square = Image.new("RGB", (90, 80), "white")  # ratio 1.125: TargetPad leaves it, the rest is CLIP's
    for x in range(90):
        square.putpixel((x, x % 80), (x * 2, 255 - x, 40))
    assert torch.allclose(padded.preprocess(square), clip.preprocess(square), atol=1e-6)
    tall = Image.new("RGB", (64, 160), "white")
    a, b = clip.preprocess(tall), padded.preprocess(tall)
    assert a.shape == b.shape == (3, 64, 64)
    assert torch.allclose(a, a[:, :1, :1].expand_as(a))  # CLIP's centre crop: all white
    assert b[:, 32, 0].max() < a[:, 32, 0].min()  # TargetPad: black columns at the sides
    assert torch.allclose(b[:, 32, 32], a[:, 32, 32], atol=1e-5)


def test_targetpad_on_blip2_pads_then_resizes_the_shorter_side_and_crops():
    transformers = pytest.importorskip("transformers")
    from cirbench.backbones.blip2 import random_blip2

    config = transformers.Blip2Config(
        vision_config=dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                           image_size=32, patch_size=16),
        qformer_config=dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                            vocab_size=128, encoder_hidden_size=16, max_position_embeddings=40),
        num_query_tokens=2, image_text_hidden_size=8)
    backbone = random_blip2(config, ["a", "red", "circle"])
    own = backbone.preprocess
    transform = backbone.targetpad_preprocess(1.25)
    assert "TargetPad(target_ratio=1.25)" in repr(transform) and "CenterCrop(size=(32, 32))" in repr(transform)
    tall = Image.new("RGB", (40, 100), "white")
    out = transform(tall)
    assert out.shape == own(tall).shape == (3, 32, 32)
    mean, std = torch.tensor(backbone.image_processor.image_mean), torch.tensor(backbone.image_processor.image_std)
    assert torch.allclose(out[:, 16, 0], -mean / std, atol=1e-5)  # a black pad column, normalised


def test_build_backbone_applies_the_choice_and_refuses_bad_values(tmp_path):
    b = build_backbone("tiny", "random", preprocess="targetpad:1.5")
    assert "TargetPad(target_ratio=1.5)" in repr(b.preprocess)
    for bad in ("squash", "targetpad:0.9", "targetpad:x", "targetpad:", "targetpad:nan", 1.25, None):
        with pytest.raises(ConfigError, match=r"must be clip .* or targetpad\[:RATIO\]") as info:
            parse_preprocess(bad)
        assert "\n" not in str(info.value)
    with pytest.raises(ConfigError, match="targetpad"):
        build_backbone("tiny", "random", preprocess="pad")
    assert parse_preprocess("TargetPad") == "targetpad:1.25" == parse_preprocess("targetpad:1.250")
    assert parse_preprocess("targetpad:1") == "targetpad:1" and parse_preprocess(" clip ") == "clip"


def test_feature_cache_keeps_clip_targetpad_and_ratios_apart(clip, padded, tmp_path):
    paths = {}
    for i, size in enumerate([(64, 64), (40, 100)]):
        paths[f"im{i}"] = tmp_path / f"im{i}.png"
        Image.new("RGB", size, "white").save(paths[f"im{i}"])
    cache = tmp_path / "cache"
    other = build_backbone("tiny", "random", preprocess="targetpad:1.5")
    feats = [image_features(b, sorted(paths), paths, tokens=False, cache_dir=cache, progress=False)
             for b in (clip, padded, other)]
    assert len(list((cache / "features").glob("img-*.pt"))) == 3
    assert not torch.allclose(feats[0].features.embed[1], feats[1].features.embed[1])  # the tall image differs
    assert torch.allclose(feats[0].features.embed[0], feats[1].features.embed[0], atol=1e-5)  # square: alike
    image_features(build_backbone("tiny", "random", preprocess="targetpad"), sorted(paths), paths, tokens=False,
                   cache_dir=cache, progress=False)
    assert len(list((cache / "features").glob("img-*.pt"))) == 3  # the same choice reuses its entry


def test_the_preprocessing_part_of_the_cache_key_holds_nothing_a_process_owns(clip, padded):
    # a key made only of the steps' settings is the same in every process: no memory address in it
    for b in (clip, padded):
        assert "0x" not in preprocess_id(b.preprocess)
    assert preprocess_id(clip.preprocess) == repr(clip.preprocess)  # clip: today's key, old caches stay valid
    again = build_backbone("tiny", "random", preprocess="targetpad:1.25")
    assert preprocess_id(again.preprocess) == preprocess_id(padded.preprocess) != preprocess_id(clip.preprocess)
    # a plain function among the steps names itself without its memory address
    with_function = targetpad_transform(1.25, 8, (0.5,) * 3, (0.5,) * 3)
    with_function.transforms.insert(0, reference_targetpad)
    assert " at 0x" in repr(with_function)
    assert "0x" not in preprocess_id(with_function) and "reference_targetpad" in preprocess_id(with_function)
