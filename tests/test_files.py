"""Atomic writes leave the old file or the new one, never a part; user files get one-line errors."""
import json

import pytest

from cirbench.errors import DataError
from cirbench.files import atomic_write, read_json, read_yaml, save_torch, write_json


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    path = write_json(tmp_path / "sub" / "metrics.json", {"a": 1})
    assert json.loads(path.read_text()) == {"a": 1}

    def half_then_fail(tmp):
        tmp.write_text('{"a": 2, "b"')
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError):
        atomic_write(path, half_then_fail)
    assert json.loads(path.read_text()) == {"a": 1}
    assert sorted(p.name for p in path.parent.iterdir()) == ["metrics.json"]


def test_save_torch_round_trips(tmp_path):
    import torch

    save_torch({"w": torch.arange(3)}, tmp_path / "m.pt")
    assert torch.equal(torch.load(tmp_path / "m.pt")["w"], torch.arange(3))


def test_reading_a_bad_user_file_says_which_file_and_what_is_wrong(tmp_path):
    with pytest.raises(DataError, match=r"^caption file .*nope.json does not exist$"):
        read_json(tmp_path / "nope.json", "caption file", DataError)
    with pytest.raises(DataError, match="^expected it here$"):
        read_json(tmp_path / "nope.json", "caption file", DataError, missing="expected it here")
    bad = tmp_path / "bad.json"
    bad.write_text('{"a": 1,\n "b": }')
    with pytest.raises(DataError, match=r"bad.json is not valid JSON: Expecting value at line 2, column 7"):
        read_json(bad, "caption file", DataError)
    bad.write_bytes(b'{"a": "\xff"}')
    with pytest.raises(DataError, match="is not UTF-8 JSON text"):
        read_json(bad, "caption file", DataError)
    spec = tmp_path / "spec.yaml"
    spec.write_text("methods: [a\n")
    with pytest.raises(ValueError, match=r"spec file .*spec.yaml is not valid YAML"):
        read_yaml(spec, "spec file", ValueError)
    spec.write_text("methods: [a, b]\n")
    assert read_yaml(spec, "spec file", ValueError) == {"methods": ["a", "b"]}
