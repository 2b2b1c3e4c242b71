"""Grid cells from options and spec files: the preprocessing choice and ``noise seed: same``
resolved per cell, config.json unchanged for the defaults, bad values as one-line errors."""
import re

import pytest

from cirbench.errors import ConfigError
from cirbench.grid import Grid, spec_from_mapping
from cirbench.leaderboards.schema import parse
from cirbench.runs import RunSpec

BASE = dict(methods=["clip4cir"], datasets=["shapes-cirr"], noise_rates=[0.0, 0.5], seeds=[0, 2])


def test_noise_seed_same_gives_each_noisy_cell_its_training_seed():
    cells = Grid(**BASE, noise_seed="same").cells()
    noisy = [c for c in cells if c.noise_rate > 0]
    assert [(c.seed, c.noise_seed, c.noise_seed_same) for c in noisy] == [(0, 0, True), (2, 2, True)]
    assert [c.dirname() for c in noisy] == ["shapes-cirr/clip4cir/mixed-0.5-ns-same/seed0",
                                            "shapes-cirr/clip4cir/mixed-0.5-ns-same/seed2"]
    assert noisy[1].to_config()["noise"] == {"type": "mixed", "rate": 0.5, "seed": 2, "same_as_training_seed": True}
    assert RunSpec.from_config(noisy[1].to_config()) == noisy[1]
    # a clean cell draws no noise: it is the very cell (folder and config) a fixed-seed grid writes
    clean = [c for c in cells if c.noise_rate == 0]
    fixed = [c for c in Grid(**BASE).cells() if c.noise_rate == 0]
    assert [c.to_config() for c in clean] == [c.to_config() for c in fixed]
    assert [c.dirname() for c in clean] == [c.dirname() for c in fixed]


def test_integer_noise_seeds_keep_working_and_keep_their_config():
    cells = Grid(**BASE, noise_seed=3).cells()
    assert {(c.noise_seed, c.noise_seed_same) for c in cells} == {(3, False)}
    assert cells[-1].dirname() == "shapes-cirr/clip4cir/mixed-0.5-ns3/seed2"


def test_default_cells_write_the_config_json_of_before():
    config = Grid(**BASE).cells()[-1].to_config()
    assert set(config) == {"method", "dataset", "layout", "noise", "seed", "backbone", "weights", "epochs",
                           "batch_size", "hparams", "data_root", "exclude_reference", "train_limit"}
    assert config["noise"] == {"type": "mixed", "rate": 0.5, "seed": 0}


def test_preprocess_reaches_every_cell_in_canonical_form():
    cells = Grid(**BASE, preprocess="targetpad").cells()
    assert {c.preprocess for c in cells} == {"targetpad:1.25"}
    config = cells[0].to_config()
    assert config["preprocess"] == "targetpad:1.25" and RunSpec.from_config(config) == cells[0]
    assert {c.preprocess for c in Grid(**BASE).cells()} == {"clip"}
    with pytest.raises(ConfigError, match="preprocess must be clip"):
        Grid(**BASE, preprocess="squash").cells()
    with pytest.raises(ConfigError, match="noise seed must be a non-negative integer or 'same'"):
        Grid(**BASE, noise_seed="sometimes").cells()


def test_spec_keys_for_preprocess_and_noise_seed():
    kw = spec_from_mapping({"preprocess": "targetpad:1.5", "noise": {"seed": "same"}}, "spec file g.yaml")
    assert kw["preprocess"] == "targetpad:1.5" and kw["noise_seed"] == "same"
    assert spec_from_mapping({"noise": {"seed": 4}}, "w")["noise_seed"] == 4
    for raw, message in (({"preprocess": "targetpad:0.5"}, "spec file g.yaml: 'preprocess' must be clip"),
                         ({"noise": {"seed": -1}}, "spec file g.yaml: 'noise.seed' must be a non-negative integer"),
                         ({"noise": {"seed": True}}, "'noise.seed' must be"),
                         ({"noise": {"seed": "different"}}, "or 'same'")):
        with pytest.raises(ConfigError, match=message) as info:
            spec_from_mapping(raw, "spec file g.yaml")
        assert "\n" not in str(info.value)


def test_leaderboard_grids_take_the_new_keys(tmp_path):
    raw = {"name": "lb", "title": "t", "source": {"paper": "p"},
           "grid": {"methods": ["clip4cir"], "datasets": ["shapes-cirr"], "preprocess": "targetpad",
                    "noise": {"type": "mixed", "rates": [0.0, 0.2], "seed": "same"}}}
    lb = parse(raw, tmp_path / "lb.yaml")
    assert lb.grid["preprocess"] == "targetpad:1.25" and lb.grid["noise_seed"] == "same"
    raw["grid"]["preprocess"] = "letterbox"
    with pytest.raises(ConfigError, match=r"leaderboard lb.yaml: 'grid': 'preprocess' must be clip"):
        parse(raw, tmp_path / "lb.yaml")


@pytest.mark.parametrize("change, message", [
    ({"seeds": [-1]}, "seeds must be whole numbers >= 0, got -1"),
    ({"seeds": ["a"]}, "seeds must be whole numbers >= 0, got 'a'"),
    ({"epochs": "ten"}, "epochs must be a whole number, got 'ten'"),
    ({"methods": [5]}, "methods must be names"),
])
def test_nonsense_grids_are_refused_with_one_line(change, message):
    """Issue 20's accepted nonsense: a negative seed trained a folder 'seed-1', a spec's `methods: 5` ran the
    default grid, `epochs: ten` raised a TypeError."""
    with pytest.raises(ConfigError, match=re.escape(message)):
        Grid(**change).validate()
