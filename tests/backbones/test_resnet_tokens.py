"""Token features of open_clip ResNet towers (ModifiedResNet, as CLIP4Cir's RN50x4): the attention
pool's input grid, projected as the pool projects its output, the global embedding first. A tiny
ResNet CLIP is built offline from a config file."""
import json

import open_clip
import pytest
import torch

from cirbench.backbones.openclip import OpenClipBackbone

ARCH = "cirbench-test-rn"
CONFIG = {"embed_dim": 24,
          "vision_cfg": {"image_size": 64, "layers": [1, 1, 1, 1], "width": 8, "head_width": 16},
          "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1}}


@pytest.fixture(scope="module")
def resnet(tmp_path_factory):
    folder = tmp_path_factory.mktemp("rn-config")
    (folder / f"{ARCH}.json").write_text(json.dumps(CONFIG))
    open_clip.add_model_config(folder)
    return OpenClipBackbone(ARCH, None)


def test_the_tiny_config_is_a_resnet_tower(resnet):
    assert type(resnet.model.visual).__name__ == "ModifiedResNet" and resnet.embed_dim == 24


@pytest.mark.parametrize("batch", [1, 3])
def test_resnet_tokens_global_first_then_the_grid_in_the_joint_space(resnet, batch):
    torch.manual_seed(0)
    pixels = torch.randn(batch, 3, 64, 64)
    f = resnet.encode_images(pixels, tokens=True)
    grid = (64 // 32) ** 2
    assert f.embed.shape == (batch, 24) and f.tokens.shape == (batch, 1 + grid, 24)
    assert torch.allclose(f.tokens[:, 0], f.embed)
    assert torch.allclose(resnet.encode_images(pixels).embed, f.embed)  # the pooled embedding as without tokens
    assert torch.allclose(f.embed, resnet.model.encode_image(pixels), atol=1e-6)
    # each image's rows do not depend on the batch around it
    one = resnet.encode_images(pixels[-1:], tokens=True)
    assert torch.allclose(one.tokens[0], f.tokens[-1], atol=1e-5)


def test_grid_tokens_are_what_the_attention_pool_outputs_when_it_attends_to_one_position(resnet):
    """With the pool's queries, keys and positional embedding zeroed, attention is uniform, so the
    pooled output is the mean of the projected values: the mean of the grid tokens exactly."""
    pool = resnet.model.visual.attnpool
    saved = {k: v.clone() for k, v in pool.state_dict().items()}
    try:
        with torch.no_grad():
            for layer in (pool.q_proj, pool.k_proj):
                layer.weight.zero_()
                layer.bias.zero_()
            pool.positional_embedding.zero_()
        f = resnet.encode_images(torch.randn(3, 3, 64, 64), tokens=True)
        assert torch.allclose(f.embed, f.tokens[:, 1:].mean(1), atol=1e-5)
        assert not torch.allclose(f.tokens[:, 1], f.tokens[:, 2])  # the grid positions differ
    finally:
        pool.load_state_dict(saved)
