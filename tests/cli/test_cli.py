"""The command line as a user meets it: tables printed, and clear errors without tracebacks."""
import json

import pytest

from tests.helpers import run_cli as cirbench


def test_help_and_lists(capsys):
    code, out, _ = cirbench(capsys, "--help")
    assert code == 0 and "run" in out and "table" in out and "noise" in out
    code, out, _ = cirbench(capsys, "run", "--help")
    assert code == 0 and "--noise-rates" in out and "--quick" in out
    methods = cirbench(capsys, "list", "methods")[1].splitlines()
    assert any(line.startswith("clip4cir ") for line in methods)
    # named variants: listed under their method, marked as cirbench's, with their description
    ncl = next(i for i, line in enumerate(methods) if line.startswith("ncl-cir "))
    assert methods[ncl + 1].split()[:3] == ["ncl-cir:robust", "[cirbench's", "variant]"] and "anchored" in methods[ncl + 1]
    assert not any("dqe-cir:" in line for line in methods)  # ablations are not variants
    assert "shapes-cirr" in cirbench(capsys, "list", "datasets")[1]
    assert "open_clip" in cirbench(capsys, "list", "backbones")[1]
    assert "mixed" in cirbench(capsys, "list", "noise")[1]


def test_run_prints_both_layouts_and_table_rebuilds_them(capsys, tmp_path):
    out_dir = tmp_path / "runs"
    quick = ["run", "--quick", "-m", "clip4cir", "--weights", "random", "--out", str(out_dir), "--no-progress"]
    code, out, err = cirbench(capsys, *quick)
    assert code == 0, err
    assert "Dress R@10" in out and "Avg R@10" in out and "Rmean" in out  # FashionIQ layout
    assert "Rsubset@1" in out and "R@50" in out  # CIRR layout
    assert "mixed 0.5" in out and "clean" in out and "clip4cir" in out
    assert len(list(out_dir.rglob("metrics.json"))) == 4

    code, again, err = cirbench(capsys, *quick)
    assert code == 0 and again == out  # every cell reused, same tables

    code, md, _ = cirbench(capsys, "table", str(out_dir), "--format", "markdown")
    assert code == 0 and "| clip4cir" in md and "|---" in md.replace(":", "-")
    code, tex, _ = cirbench(capsys, "table", str(out_dir), "--format", "latex")
    assert code == 0 and "\\toprule" in tex and "\\bottomrule" in tex
    code, csv_text, _ = cirbench(capsys, "table", str(out_dir), "--format", "csv")
    assert code == 0 and csv_text.splitlines()[0].startswith("dataset")


@pytest.mark.parametrize("args, message", [
    (["run", "-m", "nope"], "unknown method 'nope'"),
    (["run", "--noise-rates", "0,1.5"], "noise rate must be a number in [0, 1], got 1.5"),
    (["run", "--noise-rates", "a,b"], "--noise-rates must be comma-separated numbers"),
    (["run", "-d", "fashioniq"], "needs --data-root"),
    (["run", "-d", "fashioniq", "--data-root", "/no/such/folder"], "is not a folder"),
    (["run", "-d", "imagenet"], "unknown dataset 'imagenet'"),
    (["run", "--backbone", "vgg"], "unknown backbone 'vgg'"),
    (["run", "--set", "clip4cir.nope=1"], "has no hyper-parameter 'nope'"),
    (["table", "/no/such/runs"], "does not exist"),
    (["run", "--noise-seed", "x"], "--noise-seed must be a non-negative integer or 'same'"),
    (["run", "--preprocess", "squash"], "--preprocess must be clip (the backbone's own transform) or targetpad"),
    (["run", "--preprocess", "targetpad:0.8"], "RATIO >= 1"),
    (["leaderboard", "run", "shapes-noise", "--preprocess", "pad"], "--preprocess must be clip"),
    (["leaderboard", "run", "shapes-noise", "--noise-seed", "-2"], "--noise-seed must be a non-negative integer"),
])
def test_user_mistakes_are_clear_errors_without_traceback(capsys, tmp_path, args, message):
    code, out, err = cirbench(capsys, *args, *(["--out", str(tmp_path)] if "run" in args[:2] else []))
    assert code != 0
    assert message in err
    assert "Traceback" not in err + out


def test_spec_file_errors_name_the_bad_key(capsys, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("methods: [clip4cir]\nepochz: 3\n")
    code, _, err = cirbench(capsys, "run", "--spec", str(bad), "--out", str(tmp_path))
    assert code == 2 and "unknown key(s) epochz" in err
    bad.write_text("methods: [clip4cir\n")
    code, _, err = cirbench(capsys, "run", "--spec", str(bad), "--out", str(tmp_path))
    assert code == 2 and "not valid YAML" in err


def test_spec_file_drives_the_grid(capsys, tmp_path):
    spec = tmp_path / "grid.yaml"
    spec.write_text("methods: [clip4cir]\ndatasets: [shapes-cirr]\nnoise: {type: target, rates: [0.2], seed: 3}\n"
                    "seeds: [0]\nweights: random\nepochs: 1\n")
    code, out, err = cirbench(capsys, "run", "--spec", str(spec), "--out", str(tmp_path / "runs"), "--no-progress")
    assert code == 0, err
    (metrics,) = list((tmp_path / "runs").rglob("metrics.json"))
    assert "target-0.2-ns3" in str(metrics)
    assert json.loads(metrics.read_text())["noise"]["type"] == "target"
    assert "target 0.2" in out


def test_run_with_noise_seed_same_and_targetpad_records_both(capsys, tmp_path):
    out_dir = tmp_path / "runs"
    code, out, err = cirbench(capsys, "run", "-m", "clip4cir", "-d", "shapes-cirr", "--noise-rates", "0,0.2",
                              "--seeds", "0,1", "--noise-seed", "same", "--preprocess", "targetpad", "--weights", "random",
                              "--epochs", "1", "--out", str(out_dir), "--no-progress")
    assert code == 0, err
    for seed in (0, 1):
        run = out_dir / f"shapes-cirr/clip4cir/mixed-0.2-ns-same/seed{seed}"
        config = json.loads((run / "config.json").read_text())
        assert config["noise"] == {"type": "mixed", "rate": 0.2, "seed": seed, "same_as_training_seed": True}
        assert config["preprocess"] == "targetpad:1.25"
        assert json.loads((run / "metrics.json").read_text())["config"] == config
        assert json.loads((run / "noise_manifest.json").read_text())["seed"] == seed
    clean = json.loads((out_dir / "shapes-cirr/clip4cir/clean/seed1/config.json").read_text())
    assert clean["noise"] == {"type": "mixed", "rate": 0.0, "seed": 0} and clean["preprocess"] == "targetpad:1.25"
    assert "noise seed = training seed" in out and "preprocessing targetpad:1.25" in out
    code, robust, _ = cirbench(capsys, "robustness", str(out_dir))
    assert code == 0 and "noise seed = training seed" in robust
    # an integer noise seed and the default preprocessing: the folders and config.json of before
    code, _, err = cirbench(capsys, "run", "-m", "clip4cir", "-d", "shapes-cirr", "--noise-rates", "0.2",
                            "--noise-seed", "2", "--weights", "random", "--epochs", "1", "--out", str(out_dir),
                            "--no-progress")
    assert code == 0, err
    config = json.loads((out_dir / "shapes-cirr/clip4cir/mixed-0.2-ns2/seed0/config.json").read_text())
    assert config["noise"] == {"type": "mixed", "rate": 0.2, "seed": 2} and "preprocess" not in config


def test_noise_command_writes_a_manifest_from_annotations_alone(capsys, tmp_path, real_annotations):
    out = tmp_path / "m.json"
    code, text, err = cirbench(capsys, "noise", "--dataset", "fashioniq", "--annotations",
                               str(real_annotations / "fashioniq"), "--rate", "0.2", "--seed", "1", "--out", str(out))
    assert code == 0, err
    manifest = json.loads(out.read_text())
    assert manifest["n_triplets"] == 18000 and manifest["n_noisy"] == 3600
    assert "3600 of 18000" in text
    code, _, err = cirbench(capsys, "noise", "--dataset", "fashioniq", "--annotations", str(tmp_path / "nothing"),
                            "--rate", "0.2", "--out", str(out))
    assert code == 2 and "Traceback" not in err
    code, _, err = cirbench(capsys, "noise", "--dataset", "fashioniq", "--annotations",
                            str(real_annotations / "fashioniq"), "--rate", "-0.1", "--out", str(out))
    assert code == 2 and "[0, 1]" in err


def test_data_synth_writes_the_official_layout(capsys, tmp_path):
    code, out, err = cirbench(capsys, "data", "synth", "--layout", "cirr", "--out", str(tmp_path / "c"))
    assert code == 0, err
    assert (tmp_path / "c/captions/cap.rc2.val.json").exists() and (tmp_path / "c/metadata.json").exists()
    code, _, err = cirbench(capsys, "data", "synth", "--layout", "cirr", "--out", str(tmp_path / "c"))
    assert code == 2 and "not empty" in err
