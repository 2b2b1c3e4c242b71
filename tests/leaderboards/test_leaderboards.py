"""Leaderboards: the shipped files load and print the papers' numbers exactly, malformed files get
errors naming the bad key, and a run prints cirbench's numbers beside the paper's."""
import json
import re
from pathlib import Path

import pytest
import yaml

from cirbench.errors import ConfigError
from cirbench.grid import Grid, default_spec
from cirbench.leaderboards.render import compare, render_comparison
from cirbench.leaderboards.schema import available, load
from cirbench.registry import get_method, list_methods
from tests.helpers import PAPER_RESULTS, fake_run, shared_or_skip
from tests.helpers import run_cli as cirbench

SHIPPED = ["dqe-cir-fashioniq", "shapes-noise", "spn-cirr", "spn-fashioniq", "tme-noise-cirr", "tme-noise-fashioniq"]




def test_shipped_leaderboards_load_and_their_hparams_fit_the_installed_methods():
    assert sorted(available()) == SHIPPED
    registered = set(list_methods())
    for name in SHIPPED:
        lb = load(name)
        assert lb.name == name and lb.source["paper"]
        for method, hp in (lb.grid.get("hparams") or {}).items():
            if method.split(":")[0] in registered:
                get_method(method.split(":")[0]).make_hparams(hp)
        if lb.paper:
            assert lb.source.get("table") and all(r.ours is None or r.ours in lb.grid["methods"]
                                                  or lb.grid["methods"] == ["*"] for r in lb.paper.rows)


def test_shapes_noise_is_the_default_grid_of_cirbench_run():
    spec = default_spec()
    assert spec == load("shapes-noise").grid
    assert Grid() == Grid(**spec)
    g = Grid()
    assert (g.methods, g.datasets, g.noise_type, g.noise_rates, g.noise_seed, g.seeds, g.backbone, g.weights,
            g.epochs) == (["*"], ["shapes-fashioniq", "shapes-cirr"], "mixed", [0.0, 0.2, 0.5, 0.8], 0, [0],
                          "tiny", None, 10)
    # "*" runs every method and its named variants: the paper's ncl-cir beside cirbench's ncl-cir:robust,
    # never the arg_hparam ablations
    methods = g.validate().methods
    assert {"clip4cir", "ncl-cir", "ncl-cir:robust", "dqe-cir", "spn"} <= set(methods)
    assert methods.index("ncl-cir:robust") == methods.index("ncl-cir") + 1
    assert not any(m.startswith(("dqe-cir:", "spn:")) for m in methods)


def _paper_tables():
    """(leaderboard, method, noise rate) -> the numbers in ../shared/data/paper_results.yaml, in column order."""
    raw = yaml.safe_load(PAPER_RESULTS.read_text())
    out = {}
    for board, key in (("spn-fashioniq", "spn_2404.11317"), ("dqe-cir-fashioniq", "dqe_cir_2603.04037")):
        for r in raw[key]["fashioniq"]:
            avg = raw[key].get("reported_averages", {}).get(r["method"])
            extra = [avg["R@10"], avg["R@50"]] if avg else ([None, None] if board.startswith("dqe") else [])
            out[(board, r["method"], 0.0)] = [*r["dress"], *r["shirt"], *r["toptee"], *extra]
    for r in raw["spn_2404.11317"]["cirr"]:
        out[("spn-cirr", r["method"], 0.0)] = [*r["recall"], *r["subset"]]
    tme = raw["noisy_triplets_tme_protocol"]
    for board, key in (("tme-noise-fashioniq", "fashioniq_average"), ("tme-noise-cirr", "cirr_test")):
        for method, per_rate in tme[key].items():
            for rate, values in zip(tme["noise_rates"], per_rate):
                out[(board, method, rate)] = values
    return out


def test_leaderboard_numbers_are_the_papers_numbers():
    shared_or_skip(PAPER_RESULTS)
    expected = _paper_tables()
    ours = {(name, r.method, r.rate): r.values for name in SHIPPED if (lb := load(name)).paper
            for r in lb.paper.rows}
    assert ours == expected


@pytest.mark.parametrize("name", [n for n in SHIPPED if n != "shapes-noise"])
def test_show_prints_every_reported_number_on_its_row(capsys, name):
    lb = load(name)
    code, out, err = cirbench(capsys, "leaderboard", "show", name)
    assert code == 0, err
    lines = out.splitlines()
    assert lb.source["table"] in lines[0]
    noise_type = lb.grid["noise_type"]
    for row in lb.paper.rows:
        noise = "clean" if row.rate == 0 else f"{noise_type} {row.rate:g}"
        line = next(x for x in lines if re.search(rf"│ {re.escape(row.method)} +│", x)
                    and (row.noise is None or f" {noise} " in x))
        cells = [c.strip() for c in line.strip("│").split("│")]
        assert cells[-len(row.values):] == ["-" if v is None else f"{v:.2f}" for v in row.values]
        assert (row.ours or "no (paper only)") in cells


def test_list_shows_every_leaderboard(capsys):
    code, out, _ = cirbench(capsys, "leaderboard", "list")
    assert code == 0 and all(n in out for n in SHIPPED) and "arXiv 2404.11317, Table 2" in out


TINY = {
    "name": "tiny",
    "title": "A tiny test table",
    "source": {"paper": "A test paper", "arxiv": "0000.00000", "table": "Table 1"},
    "grid": {"methods": ["clip4cir"], "datasets": ["shapes-fashioniq"], "noise": {"type": "mixed", "rates": [0, 0.5]},
             "seeds": [0], "weights": "random", "epochs": 1, "batch_size": 32},
    "paper": {"layout": "fashioniq", "split": "val", "columns": ["Dress R@10", "Avg R@10"],
              "rows": [{"method": "Base", "values": [10.0, 20.0], "ours": "clip4cir"},
                       {"method": "Base", "noise": 0.5, "values": [5.0, None], "ours": "clip4cir"},
                       {"method": "Other", "backbone": "X", "values": [99.5, 98.25]}]},
}


def load_board_dict(board):
    """A leaderboard from a dict, validated as a file would be."""
    from cirbench.leaderboards.schema import parse

    return parse(json.loads(json.dumps(board)), Path("tiny.yaml"))


def write_board(tmp_path, board, name="tiny") -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(board, sort_keys=False))
    return path


def _edit(**changes):
    board = json.loads(json.dumps(TINY))
    for dotted, value in changes.items():
        *parents, last = dotted.split("__")
        node = board
        for p in parents:
            node = node[int(p)] if isinstance(node, list) else node[p]
        node[last] = value
    return board


def _drop(key):
    board = json.loads(json.dumps(TINY))
    del board[key]
    return board


@pytest.mark.parametrize("board, message", [
    (_edit(papers={}), "unknown key 'papers' in the file"),
    (_drop("grid"), "the file lacks the required key 'grid'"),
    (_edit(name="other"), "'name' is 'other' but the file is tiny.yaml"),
    (_edit(source={"table": "T1"}), "'source' lacks the required key 'paper'"),
    (_edit(grid__noise={"type": "mixed", "rate": [0]}), "'grid': 'noise' takes rates, seed, type"),
    (_edit(grid__epoch=3), "'grid': unknown key(s) epoch"),
    (_edit(grid__datasets=["imagenet"]), "'grid.datasets': unknown dataset 'imagenet'"),
    (_edit(grid__noise={"rates": [0, 2]}), "'grid.noise.rates' must be numbers in [0, 1], got 2"),
    (_edit(paper__layout="coco"), "'paper.layout' is 'coco'"),
    (_edit(paper__columns=["Dress R@10", "Avg R@1"]), "'paper.columns' has 'Avg R@1', not a fashioniq column"),
    (_edit(paper__rows__0__values=[1.0]), "'paper.rows[0]'.values has 1 numbers, expected 2"),
    (_edit(paper__rows__1__values=[1.0, "n/a"]), "'paper.rows[1]'.values must be numbers"),
    (_edit(paper__rows__2__ours="spn"), "'paper.rows[2]'.ours is 'spn', which 'grid.methods' does not run"),
    (_edit(paper__rows__2__score=1), "unknown key 'score' in 'paper.rows[2]'"),
    (_edit(paper__rows__2__method="Base"), "'paper.rows[2]' repeats method 'Base' at noise 0"),
    (_edit(paper__rows__2__approximation="frozen"), "'paper.rows[2]'.approximation describes cirbench's row, but"),
    (_edit(paper__rows__0__approximation=""), "'paper.rows[0]'.approximation must say, in words, why"),
    (_edit(paper__reference_in_gallery="no"), "'paper.reference_in_gallery' must be true or false"),
])
def test_a_malformed_leaderboard_gets_an_error_naming_the_bad_key(tmp_path, capsys, board, message):
    path = write_board(tmp_path, board)
    with pytest.raises(ConfigError) as exc:
        load(path)
    assert message in str(exc.value) and "tiny.yaml" in str(exc.value)
    code, out, err = cirbench(capsys, "leaderboard", "show", str(path))
    assert code == 2 and message in err and "Traceback" not in err


def test_not_yaml_and_unknown_name(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed\n")
    with pytest.raises(ConfigError, match="bad.yaml is not valid YAML"):
        load(bad)
    with pytest.raises(ConfigError, match="unknown leaderboard 'nope'; available: dqe-cir-fashioniq"):
        load("nope")


def test_comparison_puts_cirbench_and_the_difference_under_each_paper_row(tmp_path):
    lb = load(write_board(tmp_path, TINY))
    runs = [fake_run("clip4cir", rate=0.0, seed=s, value=v) for s, v in ((0, 30.0), (1, 34.0))]
    runs += [fake_run("clip4cir", rate=0.5, seed=0, value=12.5), fake_run("clip4cir", rate=0.8, seed=0, value=7.0)]
    [(table, rows)] = compare(lb, runs)
    kinds = [(m, rate, kind) for m, rate, kind, _ in rows]
    assert kinds == [("Base", 0.0, "paper"), ("clip4cir", 0.0, "cirbench"), ("clip4cir", 0.0, "difference"),
                     ("Base", 0.5, "paper"), ("clip4cir", 0.5, "cirbench"), ("clip4cir", 0.5, "difference"),
                     ("Other", 0.0, "paper only"), ("clip4cir", 0.8, "cirbench only")]
    assert rows[1][3][0] == (32.0, pytest.approx(2.828, abs=1e-3)) and rows[2][3] == [22.0, 12.0]
    assert rows[5][3] == [7.5, None]  # the paper gives no Avg R@10 at 0.5: no difference
    md = render_comparison(lb, runs, "markdown")
    assert "| Base     | clean     | paper" in md and "32.00 ± 2.83" in md and "+22.00" in md and "+12.00" in md
    assert "paper only (not in cirbench)" in md and "cirbench only (no paper number)" in md
    assert "Difference = cirbench - paper" in md and "val split" in md
    tex = render_comparison(lb, runs, "latex")
    assert r"$32.00 \pm 2.83$ & $32.00 \pm 2.83$" in tex and "+7.50 & --" in tex


def test_leaderboard_run_then_rerun_reuses_every_cell(tmp_path, capsys):
    path = write_board(tmp_path, TINY)
    out_dir = tmp_path / "runs"
    code, out, err = cirbench(capsys, "leaderboard", "run", str(path), "--out", str(out_dir), "--no-progress")
    assert code == 0, err
    metrics = sorted(out_dir.rglob("metrics.json"))
    assert len(metrics) == 2
    clean = json.loads((out_dir / "shapes-fashioniq/clip4cir/clean/seed0/metrics.json").read_text())["best"]
    ours = clean["dress"]["R@10"]
    assert f"{ours:.2f}" in out and f"{ours - 10.0:+.2f}" in out and "99.50" in out and "98.25" in out
    assert "Noise robustness on shapes-fashioniq" in out  # more than one rate: the robustness table too
    stamps = [m.stat().st_mtime_ns for m in metrics]
    code, again, err = cirbench(capsys, "leaderboard", "run", str(path), "--out", str(out_dir), "--no-progress")
    assert code == 0 and again == out and [m.stat().st_mtime_ns for m in metrics] == stamps


def test_a_real_data_leaderboard_without_its_data_stops_before_writing(tmp_path, capsys):
    out_dir = tmp_path / "runs"
    code, out, err = cirbench(capsys, "leaderboard", "run", "spn-fashioniq", "--out", str(out_dir))
    assert code == 2 and "Traceback" not in err
    assert "needs the real fashioniq dataset" in err and "github.com/XiaoxiaoGuo/fashion-iq" in err
    assert "DIR/captions/cap.{dress,shirt,toptee}" in err and "--data-root fashioniq=DIR" in err
    assert not out_dir.exists()
    code, out, err = cirbench(capsys, "leaderboard", "run", "spn-cirr", "--data-root", str(tmp_path), "--out",
                              str(out_dir))
    assert code == 2 and "CIRR annotations" in err and "github.com/Cuberick-Orion/CIRR" in err
    assert not out_dir.exists()


@pytest.mark.parametrize("board", ["spn-fashioniq", "spn-cirr"])
def test_the_spn_boards_run_their_fine_tuning_rows_on_a_real_layout_folder(tmp_path, capsys, make_fashioniq,
                                                                             make_cirr, board):
    """The SPN boards' grids as shipped (CLIP4Cir stage 1 with the sum; SPN's stage 2 on its text tower, its
    positives in stage 2 only) on small folders of generated images in the official layouts, with the tiny
    backbone in place of RN50x4 (nothing downloads)."""
    dataset = board.split("-")[1]
    root = make_fashioniq() if dataset == "fashioniq" else make_cirr()
    images = [p for p in root.rglob("*.png")]
    captions = tmp_path / "llava_captions.json"  # SPN's captions come from an offline captioner on real data
    captions.write_text(json.dumps({p.stem: f"a photo of {p.stem}" for p in images}))
    out_dir = tmp_path / "runs"
    code, out, err = cirbench(capsys, "leaderboard", "run", board, "--data-root", f"{dataset}={root}",
                              "--backbone", "tiny", "--weights", "random", "--epochs", "1", "--out", str(out_dir),
                              "--set", "spn:clip4cir.captioner=file", "--set", f"spn:clip4cir.captions={captions}",
                              "--no-progress")
    assert code == 0, err
    stages = {}
    for history in out_dir.rglob("history.jsonl"):
        rows = [json.loads(line) for line in history.read_text().splitlines()]
        stages[history.parent.parent.parent.name] = [r["stage"] for r in rows]
    assert stages == {"clip4cir": ["finetune"], "spn+clip4cir": ["finetune"] + ["spn-negatives"] * 3}
    assert "CLIP4Cir+SPN" in out and "approximation" in out


def test_an_approximate_row_is_labelled_and_its_reason_printed(tmp_path):
    reason = "the paper fine-tunes its backbone; cirbench trains a head over frozen features"
    lb = load(write_board(tmp_path, _edit(paper__rows__0__approximation=reason)))
    runs = [fake_run("clip4cir", rate=0.0, seed=0, value=30.0), fake_run("clip4cir", rate=0.5, seed=0, value=12.5)]
    [(_, rows)] = compare(lb, runs)
    assert [kind for _, rate, kind, _ in rows if rate == 0.0][:3] == ["paper", "cirbench approximation", "difference"]
    assert [kind for _, rate, kind, _ in rows if rate == 0.5][:2] == ["paper", "cirbench"]  # the other row is exact
    md = render_comparison(lb, runs, "markdown")
    assert "cirbench, approximation (see below)" in md and f"approximation: Base (cirbench's clip4cir): {reason}" in md
    assert md.count("cirbench, approximation") == 1


def test_shipped_rows_are_not_presented_as_regenerated_and_protocols_match_the_papers():
    """A row cirbench runs is presented as regenerated only when it is the paper's model (SPN's "CLIP4Cir": CLIP4Cir's
    fine-tuned CLIP with the sum, as CLIP4Cir's clip_fine_tune.py trains it); every other is an approximation. A
    board whose paper states the FashionIQ gallery protocol evaluates with it."""
    regenerated = {("spn-fashioniq", "CLIP4Cir"), ("spn-cirr", "CLIP4Cir")}
    for name in SHIPPED:
        lb = load(name)
        if lb.paper is None:
            continue
        for row in lb.paper.rows:
            if row.ours is not None and (name, row.method) not in regenerated:
                assert row.approximation, f"{name}: {row.method} is presented as regenerated"
            if (name, row.method) in regenerated:
                assert not row.approximation, f"{name}: {row.method}"
        if lb.paper.reference_in_gallery is not None:
            assert lb.grid.get("exclude_reference", False) == (not lb.paper.reference_in_gallery), name
    assert load("spn-fashioniq").grid["exclude_reference"] is True  # SPN4CIR clip4cir/validate.py
    assert load("tme-noise-fashioniq").grid["exclude_reference"] is True  # HABIT / ConeSep test()
    for name in ("spn-fashioniq", "spn-cirr"):
        grid = load(name).grid
        clip = grid["hparams"]["clip4cir"]  # CLIP4Cir stage 1: both towers, the sum, lr 2e-6, 100 epochs, batch 128
        assert (clip["finetune"], clip["combiner"], clip["finetune_lr"]) == ("both", False, 2e-6)
        assert (grid["epochs"], grid["batch_size"], grid["backbone"]) == (100, 128, "open_clip:RN50x4")
        spn = grid["hparams"]["spn:clip4cir"]  # over that model, SPN's stage 2 trains the text tower
        assert (spn["base_finetune"], spn["base_combiner"], spn["stage2_trains"]) == ("both", False, "text")
        assert (spn["stage2_epochs"], spn["stage2_batch_size"], spn["lr"], spn["temperature"]) == (3, 256, 2e-5, 0.02)
        assert (spn["positives_in"], spn["stage2_from"]) == ("stage2", "best")  # SPN4CIR's schedule
    for name in ("spn-fashioniq", "spn-cirr", "dqe-cir-fashioniq", "tme-noise-fashioniq", "tme-noise-cirr"):
        assert load(name).grid["preprocess"] == "targetpad:1.25", name  # what CLIP4Cir / SPN / SPRC / HABIT used
    for name in ("tme-noise-fashioniq", "tme-noise-cirr"):
        assert load(name).grid["noise_seed"] == "same", name  # HABIT: random.seed(training seed) before the noise


def test_a_row_scored_under_another_split_or_gallery_protocol_says_so():
    runs = [fake_run("clip4cir", rate=0.0, seed=0, value=30.0)]  # val split, reference kept
    assert "the paper " not in render_comparison(load_board_dict(_edit()), runs, "markdown")  # same protocol
    removed = load_board_dict(_edit(paper__reference_in_gallery=False, paper__split="test"))
    md = render_comparison(removed, runs, "markdown")
    gap = "[val split, the paper test; reference kept in the gallery, the paper removed it]"
    assert f"cirbench {gap}" in md and f"cirbench only (no paper number) {gap}" not in md
    assert md.count(gap) == 1  # the one cirbench row: the paper-only row and the difference row carry no label
