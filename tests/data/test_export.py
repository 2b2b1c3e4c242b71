"""Issue 18 item 8: noisy annotations in the official layout load back as exactly cirbench's noisy triplets."""
import json

import pytest

from cirbench.data.loaders import load_dataset
from cirbench.data.noise import inject_noise
from tests.helpers import run_cli


@pytest.mark.parametrize("layout", ["fashioniq", "cirr"])
def test_exported_annotations_are_the_noisy_training_triplets(capsys, tmp_path, make_fashioniq, make_cirr, layout):
    root = make_fashioniq() if layout == "fashioniq" else make_cirr(layout="nested")
    out = tmp_path / "noisy"
    code, stdout, err = run_cli(capsys, "noise", "--dataset", layout, "--annotations", root, "--rate", "1",
                                "--type", "mixed", "--seed", "3", "--out", tmp_path / "m.json",
                                "--export-annotations", out)
    assert code == 0, err
    assert "noisy annotations ->" in stdout
    original = load_dataset(layout, root, splits=("train", "val"), require_images=False)
    expected = inject_noise(original.split("train").triplets, 1.0, "mixed", 3).triplets
    exported = load_dataset(layout, out, splits=("train", "val"), require_images=False)
    got = exported.split("train").triplets
    assert [(t.qid, t.reference, t.target, t.captions) for t in got] == \
        [(t.qid, t.reference, t.target, t.captions) for t in expected]
    assert got != original.split("train").triplets  # rate 1: something changed
    assert exported.split("val").triplets == original.split("val").triplets  # the rest is copied
    manifest = json.loads((tmp_path / "m.json").read_text())
    assert manifest["n_noisy"] == len(expected)

    code, _, err = run_cli(capsys, "noise", "--dataset", layout, "--annotations", root, "--rate", "1",
                           "--out", tmp_path / "m2.json", "--export-annotations", out)
    assert code == 2 and "exists and is not empty" in err and not (tmp_path / "m2.json").exists()
