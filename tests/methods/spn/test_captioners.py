"""SPN's captioners: descriptions of generated shapes images, and captions read from a file."""
import json

import pytest

from cirbench.data.datasets import load
from cirbench.errors import ConfigError, DataError
from cirbench_methods.spn.captioners import caption_images, file_captions


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
