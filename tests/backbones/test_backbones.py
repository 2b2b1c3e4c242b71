import pytest
import torch
from PIL import Image

from cirbench.backbones import build_backbone, list_backbones
from cirbench.errors import ConfigError
from cirbench.features import image_features, text_features


@pytest.fixture(scope="module")
def tiny():
    return build_backbone("tiny", "random")


def test_list_backbones_names_tiny_and_open_clip():
    assert {"tiny", "open_clip"} <= set(list_backbones())


def test_tiny_encodes_images_and_texts_with_tokens(tiny):
    pixels = torch.randn(3, 3, 64, 64)
    f = tiny.encode_images(pixels, tokens=True)
    assert f.embed.shape == (3, tiny.embed_dim)
    assert f.tokens.shape == (3, 1 + (64 // 16) ** 2, tiny.embed_dim)
    assert torch.allclose(f.tokens[:, 0], f.embed)  # global token first
    assert torch.allclose(tiny.encode_images(pixels).embed, f.embed)
    t = tiny.encode_texts(["make the circle red", "a"], tokens=True)
    assert t.embed.shape == (2, tiny.embed_dim)
    assert t.mask.sum(1).tolist() == [6, 3]  # start + words + end
    eot = t.mask.sum(1) - 1
    assert torch.allclose(t.tokens[torch.arange(2), eot], t.embed, atol=1e-6)


def test_random_weights_are_reproducible_and_local_file_loads(tiny, tmp_path):
    again = build_backbone("tiny", "random")
    x = torch.randn(2, 3, 64, 64)
    assert torch.equal(tiny.encode_images(x).embed, again.encode_images(x).embed)
    ckpt = tmp_path / "tiny.pt"
    state = {k: v + 0.01 * torch.randn_like(v) if v.is_floating_point() else v
             for k, v in tiny.model.state_dict().items()}
    torch.save(state, ckpt)
    loaded = build_backbone("tiny", str(ckpt))
    assert loaded.cache_id != tiny.cache_id and loaded.cache_id.startswith("open_clip:cirbench-tiny:file:")
    assert not torch.allclose(loaded.encode_images(x).embed, tiny.encode_images(x).embed)
    assert torch.allclose(loaded.model.visual.proj, state["visual.proj"])


def test_bad_backbone_specs_are_clear_errors():
    with pytest.raises(ConfigError, match="unknown backbone 'vgg'"):
        build_backbone("vgg")
    with pytest.raises(ConfigError, match="has no model 'NotAModel'"):
        build_backbone("open_clip:NotAModel")
    with pytest.raises(ConfigError, match="does not exist"):
        build_backbone("tiny", "/no/such/weights.pt")


def test_feature_cache_is_reused_and_keyed_by_inputs(tiny, tmp_path, monkeypatch):
    paths = {}
    for i, colour in enumerate(["red", "blue", "green"]):
        paths[f"im{i}"] = tmp_path / f"im{i}.png"
        Image.new("RGB", (64, 64), colour).save(paths[f"im{i}"])
    cache = tmp_path / "cache"
    first = image_features(tiny, ["im0", "im1", "im2"], paths, tokens=True, cache_dir=cache)
    assert first.features.tokens.dtype == torch.float16 and len(first) == 3

    def must_not_encode(*args, **kwargs):
        raise RuntimeError("encoded again")

    monkeypatch.setattr(tiny, "encode_images", must_not_encode)
    second = image_features(tiny, ["im0", "im1", "im2"], paths, tokens=True, cache_dir=cache)
    assert torch.equal(first.features.embed, second.features.embed)
    assert second.rows(["im2", "im0"]).tolist() == [2, 0]
    with pytest.raises(RuntimeError, match="encoded again"):  # another image list is another cache key
        image_features(tiny, ["im0", "im1"], paths, tokens=True, cache_dir=cache)
    monkeypatch.undo()
    texts = text_features(tiny, ["a red circle", "a", "a red circle"], tokens=True, cache_dir=cache)
    assert texts.keys == ["a red circle", "a"] and texts.features.tokens.shape[1] == 5


def test_a_clip4cir_checkpoint_loads_as_the_weights_of_its_architecture(tmp_path):
    """Issue 17: CLIP4Cir's fine-tuned model file (utils.save_model: {"epoch", "CLIP": OpenAI state dict}) is a
    --weights file: the backbone holds exactly its weights; one that does not fit the architecture is one line."""
    from cirbench.backbones.openclip import OpenClipBackbone
    from cirbench.errors import ConfigError

    source = OpenClipBackbone("cirbench-tiny", None)
    with torch.no_grad():
        for p in source.model.parameters():
            p.add_(torch.randn_like(p))  # weights no fresh model has
    state = {**source.model.state_dict(), "input_resolution": torch.tensor(64), "context_length": torch.tensor(77),
             "vocab_size": torch.tensor(49408)}  # OpenAI's extra buffers
    torch.save({"epoch": 7, "CLIP": state}, tmp_path / "tuned_clip_best.pt")
    loaded = OpenClipBackbone("cirbench-tiny", str(tmp_path / "tuned_clip_best.pt"))
    for (name, a), b in zip(source.model.state_dict().items(), loaded.model.state_dict().values()):
        assert torch.equal(a, b), name
    with pytest.raises(ConfigError, match="does not fit open_clip:RN50.*pass the architecture it was fine-tuned"):
        OpenClipBackbone("RN50", str(tmp_path / "tuned_clip_best.pt"))
