"""The blip2 backbone: a tiny random-weight BLIP-2 built offline, saved in the transformers format,
loaded through ``build_backbone`` / ``--weights FOLDER``, trained on and evaluated by the normal path."""
import json
import sys

import pytest
import torch
import torch.nn.functional as F
from torch import nn

pytest.importorskip("transformers")

from cirbench import registry  # noqa: E402
from cirbench.backbones import build_backbone  # noqa: E402
from cirbench.backbones.blip2 import random_blip2  # noqa: E402
from cirbench.cli.app import main  # noqa: E402
from cirbench.errors import ConfigError  # noqa: E402
from cirbench.method import Method  # noqa: E402
from cirbench.runner import Workspace, execute  # noqa: E402
from cirbench.runs import RunSpec  # noqa: E402

WORDS = "a an the is and with of to red blue green circle square triangle star left right top bottom".split()


def tiny_config():
    from transformers import Blip2Config

    vision = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                  image_size=32, patch_size=8)
    qformer = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                   vocab_size=256, encoder_hidden_size=32, cross_attention_frequency=1, max_position_embeddings=80)
    return Blip2Config(vision_config=vision, qformer_config=qformer, num_query_tokens=4, image_text_hidden_size=16)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return random_blip2(tiny_config(), WORDS).save_pretrained(tmp_path_factory.mktemp("blip2-tiny"))


@pytest.fixture(scope="module")
def backbone(folder):
    return build_backbone("blip2", weights=str(folder))


def test_features_are_blip2_contrastive_embeddings(backbone):
    torch.manual_seed(0)
    pixels = torch.randn(3, 3, 32, 32)
    texts = ["a red circle", "the blue square is left of a green star and a triangle", "xyz"]
    img, txt = backbone.encode_images(pixels, tokens=True), backbone.encode_texts(texts, tokens=True)
    enc = backbone.tokenizer(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        out = backbone.model(pixel_values=pixels, input_ids=enc["input_ids"], attention_mask=enc["attention_mask"])
    # text: BLIP-2's own normalised [CLS] projection; tokens carry it first, padding masked out
    assert torch.allclose(F.normalize(txt.embed, dim=-1), out.text_embeds, atol=1e-5)
    assert txt.tokens.shape[:2] == txt.mask.shape and torch.equal(txt.mask, enc["attention_mask"].bool())
    assert torch.allclose(txt.tokens[:, 0], txt.embed)
    # image: tokens = [global, projected queries]; BLIP-2's per-query embeddings, global = their normalised mean
    assert img.tokens.shape == (3, 1 + 4, 16) and img.embed.shape == (3, 16) and backbone.embed_dim == 16
    assert torch.allclose(F.normalize(img.tokens[:, 1:], dim=-1), out.image_embeds, atol=1e-5)
    assert torch.allclose(img.embed, out.image_embeds.mean(1), atol=1e-5)
    # BLIP-2's ITC score (max over queries) is recoverable from the token features
    itc = torch.einsum("iqd,td->itq", F.normalize(img.tokens[:, 1:], dim=-1), F.normalize(txt.embed, dim=-1)).amax(-1)
    assert torch.allclose(itc, out.logits_per_image, atol=1e-5)
    assert backbone.encode_images(pixels).tokens is None


def test_loading_is_deterministic_and_keyed_by_the_folder(folder, backbone, tmp_path):
    again = build_backbone("blip2", weights=str(folder))
    assert again.cache_id == backbone.cache_id and again.cache_id.startswith("blip2:")
    other = random_blip2(tiny_config(), WORDS, seed=1).save_pretrained(tmp_path / "other")
    assert build_backbone("blip2", weights=str(other)).cache_id != backbone.cache_id
    assert "blip2" in __import__("cirbench.backbones", fromlist=["x"]).list_backbones()


def test_clear_errors(folder, tmp_path, monkeypatch):
    with pytest.raises(ConfigError, match="needs --weights"):
        build_backbone("blip2")
    with pytest.raises(ConfigError, match="does not exist"):
        build_backbone("blip2", weights=str(tmp_path / "nowhere"))
    with pytest.raises(ConfigError, match="no config.json"):
        build_backbone("blip2", weights=str(tmp_path))
    with pytest.raises(ConfigError, match="takes no architecture"):
        build_backbone("blip2:vit-g", weights=str(folder))
    config = json.loads((folder / "config.json").read_text())

    def variant(name, **changes):
        d = tmp_path / name
        d.mkdir()
        (d / "config.json").write_text(json.dumps({**config, **changes}))
        return str(d)

    with pytest.raises(ConfigError, match="not a BLIP-2 image-text retrieval"):
        build_backbone("blip2", weights=variant("opt", architectures=["Blip2ForConditionalGeneration"]))
    with pytest.raises(ConfigError, match="no text input"):
        build_backbone("blip2", weights=variant("notext", qformer_config={**config["qformer_config"],
                                                                       "use_qformer_text_input": False}))
    with pytest.raises(ConfigError, match="cannot load BLIP-2"):
        build_backbone("blip2", weights=variant("noweights"))
    # weights that leave parameters uninitialised are refused, not silently random
    partial = tmp_path / "partial"
    model = random_blip2(tiny_config(), WORDS)
    model.save_pretrained(partial)
    from safetensors.torch import load_file, save_file

    state = load_file(partial / "model.safetensors")
    save_file({k: v for k, v in state.items() if not k.startswith("text_projection")}, partial / "model.safetensors",
              metadata={"format": "pt"})
    with pytest.raises(ConfigError, match="lacks weights"):
        build_backbone("blip2", weights=str(partial))
    monkeypatch.setitem(sys.modules, "transformers", None)  # as if not installed
    with pytest.raises(ConfigError, match=r"cirbench\[blip2\]"):
        build_backbone("blip2", weights=str(folder))


class TokenProbe(Method):
    """A minimal method over token features: masked mean of text tokens + the image's token 0."""

    needs_tokens = True

    def __init__(self, dims, hparams=None):
        super().__init__(dims, hparams)
        self.mix = nn.Linear(2 * dims.tokens, dims.embed)

    def compose(self, reference, text):
        m = text.mask[..., None].to(text.tokens.dtype)
        words = (text.tokens * m).sum(1) / m.sum(1)
        return self.mix(torch.cat([reference.tokens[:, 0], words], -1).float())


def test_training_and_evaluation_through_the_normal_path(folder, tmp_path, monkeypatch):
    monkeypatch.setitem(registry._METHODS, "token-probe", TokenProbe)
    ws = Workspace(progress=False)
    for method, dataset in (("clip4cir", "shapes-fashioniq"), ("token-probe", "shapes-cirr")):
        spec = RunSpec(method=method, dataset=dataset, backbone="blip2", weights=str(folder), epochs=1,
                       batch_size=16, noise_rate=0.2)
        metrics = execute(spec, tmp_path / "runs", ws)
        assert metrics["status"] == "finished" and metrics["epochs_run"] == 1
        assert metrics["config"]["backbone"] == "blip2"
        history = [json.loads(x) for x in (tmp_path / "runs" / spec.dirname() / "history.jsonl").read_text().splitlines()]
        assert len(history) == 1 and history[0]["loss"] > 0
    assert {"R@1", "Rsubset@1", "Avg"} <= set(metrics["best"])
    images = ws.images(spec, tokens=True)
    assert images.features.tokens.shape[1:] == (1 + 4, 16)


def test_cli_run_with_blip2_weights_folder(folder, tmp_path, capsys):
    try:
        main(["run", "-m", "clip4cir", "-d", "shapes-cirr", "--backbone", "blip2", "--weights", str(folder),
              "--epochs", "1", "--noise-rates", "0", "--out", str(tmp_path / "runs"), "--no-progress"])
        code = 0
    except SystemExit as exc:
        code = exc.code
    out = capsys.readouterr()
    assert code == 0, out.err
    assert "backbone blip2" in out.out and "Rsubset@1" in out.out
