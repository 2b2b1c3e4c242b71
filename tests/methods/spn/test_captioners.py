"""SPN's captioners: descriptions of generated shapes images, and captions read from a file."""
import json
import random

import pytest

from cirbench.data.datasets import load
from cirbench.errors import ConfigError, DataError
from cirbench_methods.spn.captioners import brief, caption_images, file_captions


def test_captioners(tmp_path, make_fashioniq):
    data = load("shapes-cirr")
    ids = sorted(data.image_paths)[:4]
    a = caption_images("attributes", data, ids, n=2, seed=0)
    assert set(a) == set(ids) and all(len(v) == 2 and v[0] != v[1] for v in a.values())
    assert a == caption_images("attributes", data, ids, n=2, seed=0)  # deterministic
    meta = json.loads((data.root / "metadata.json").read_text())[ids[0]]
    assert all(o["shape"] in a[ids[0]][0] and o["color"] in a[ids[0]][0] for o in meta["objects"])

    path = tmp_path / "caps.json"
    path.write_text(json.dumps({"x": "a cat", "y": ["one", "two"], "other": "unused"}))
    assert file_captions(path, ["x", "y", "z"], n=2) == {"x": ["a cat", "a cat"], "y": ["one", "two"]}
    path.write_text(json.dumps({"x": 3}))
    with pytest.raises(DataError, match="'x'"):
        file_captions(path, ["x"])
    with pytest.raises(ConfigError, match="captions="):
        caption_images("file", data, ids)
    with pytest.raises(ConfigError, match="unknown captioner"):
        caption_images("llava", data, ids)
    real_layout = load("fashioniq", make_fashioniq())
    with pytest.raises(DataError, match="captioner=file"):
        caption_images("attributes", real_layout, ["dress0"])


def test_brief_captions_keep_to_the_word_budget_and_name_the_large_objects_first():
    """Issue 13, item 4: SPN's captions are brief ("describe the image in k words"); the full scene
    descriptions (20-50 tokens) overflow the tiny text encoder's 24-token context."""
    import open_clip

    from cirbench.backbones.openclip import TINY_ARCH

    tokenizer = open_clip.get_tokenizer(TINY_ARCH)
    data = load("shapes-cirr")
    ids = sorted(data.image_paths)[:60]
    meta = json.loads((data.root / "metadata.json").read_text())
    for words in (1, 2, 4, 8):
        caps = caption_images("attributes", data, ids, n=2, seed=0, words=words)
        assert caps == caption_images("attributes", data, ids, n=2, seed=0, words=words)  # deterministic
        for image, (text, _) in caps.items():
            assert 1 <= len(text.split()) <= words
            objects = meta[image]["objects"]
            large = [o for o in objects if o["size"] == "large"] or objects
            if words >= 3:  # the first object named is a large one (when there is one), colour and shape
                assert any(text.startswith(f"a {o['color']} {o['shape']}") or
                           text.split(" and ")[0].endswith(f"{o['color']} {o['shape']}") for o in large)
    caps8 = caption_images("attributes", data, ids, words=8)
    assert all(len(tokenizer.encode(c[0])) + 2 <= 13 for c in caps8.values())  # two fit one 24-token template
    full = caption_images("attributes", data, ids, words=0)
    assert sum(len(tokenizer.encode(c[0])) + 2 > tokenizer.context_length for c in full.values()) > len(ids) / 2
    with pytest.raises(ConfigError, match="at least one word"):
        brief(meta[ids[0]], 0, random.Random(0))
