import csv
import dataclasses
import io
import json

import pytest

from cirbench.errors import ConfigError, DataError
from cirbench.report.tables import Column, build_tables, render, render_all
from cirbench.runs import read_runs

FIQ_HEADERS = ["Method", "Noise", "Dress R@10", "Dress R@50", "Shirt R@10", "Shirt R@50", "Toptee R@10",
               "Toptee R@50", "Avg R@10", "Avg R@50", "Rmean", "Seeds"]
CIRR_HEADERS = ["Method", "Noise", "R@1", "R@5", "R@10", "R@50", "Rsubset@1", "Rsubset@2", "Rsubset@3", "Avg", "Seeds"]


def fiq_metrics(x):
    cats = {c: {"R@10": x + i, "R@50": x + 10 + i} for i, c in enumerate(("dress", "shirt", "toptee"))}
    cats["average"] = {"R@10": x + 1, "R@50": x + 11, "Rmean": x + 6}
    return cats


def cirr_metrics(x):
    keys = ("R@1", "R@5", "R@10", "R@50", "Rsubset@1", "Rsubset@2", "Rsubset@3", "Avg")
    return {k: x + i for i, k in enumerate(keys)}


def write_run(root, name, config, metrics=None):
    d = root / name
    d.mkdir(parents=True)
    (d / "config.json").write_text(json.dumps(config))
    if metrics is not None:
        (d / "metrics.json").write_text(metrics if isinstance(metrics, str) else json.dumps(metrics))


def config(method, dataset, layout, noise_type, rate, seed, backbone="tiny"):
    return {"method": method, "dataset": dataset, "layout": layout, "seed": seed, "backbone": backbone,
            "noise": {"type": noise_type, "rate": rate, "seed": 0}}


def finished(best, last=None, **extra):
    protocol = {"split": "val", "reference_in_gallery": True}
    return {"status": "finished", "best": best, "last": last or best, "best_epoch": 3, "protocol": protocol, **extra}


@pytest.fixture
def runs_dir(tmp_path):
    root = tmp_path / "runs"
    fiq = "shapes-fashioniq"
    for seed, x in enumerate((10.0, 12.0, 14.0)):      # mean 12, sample std 2
        write_run(root, f"{fiq}/clip4cir/mixed-0.2/s{seed}", config("clip4cir", fiq, "fashioniq", "mixed", 0.2, seed),
                  finished(fiq_metrics(x), fiq_metrics(x - 5), noise_detection={"auroc": 0.5 + seed / 10}))
    write_run(root, f"{fiq}/clip4cir/clean/s0", config("clip4cir", fiq, "fashioniq", "mixed", 0.0, 0),
              finished(fiq_metrics(30.0)))
    write_run(root, f"{fiq}/clip4cir/mixed-0.5/s0", config("clip4cir", fiq, "fashioniq", "mixed", 0.5, 0),
              finished(fiq_metrics(5.0)))
    write_run(root, f"{fiq}/ncl_cir/clean/s0", config("ncl_cir", fiq, "fashioniq", "none", 0, 0),
              finished(fiq_metrics(40.0)))
    # unfinished / broken runs
    write_run(root, f"{fiq}/ncl_cir/mixed-0.2/s0", config("ncl_cir", fiq, "fashioniq", "mixed", 0.2, 0))
    write_run(root, f"{fiq}/ncl_cir/mixed-0.2/s1", config("ncl_cir", fiq, "fashioniq", "mixed", 0.2, 1),
              {"status": "running"})
    write_run(root, f"{fiq}/ncl_cir/mixed-0.2/s2", config("ncl_cir", fiq, "fashioniq", "mixed", 0.2, 2), "{trunc")
    for seed, x in enumerate((20.0, 21.0)):
        write_run(root, f"shapes-cirr/clip4cir/s{seed}", config("clip4cir", "shapes-cirr", "cirr", "text", 0.8, seed),
                  finished(cirr_metrics(x)))
    return root


def test_read_runs_skips_unfinished(runs_dir):
    runs = read_runs(runs_dir)
    assert len(runs) == 8
    assert len(runs.skipped) == 3 and all("ncl_cir/mixed-0.2" in str(d) for d in runs.skipped)
    assert {d.name: why for d, why in runs.unreadable.items()} == {"s2": "metrics.json is not valid JSON (truncated?)"}
    assert all({f.name for f in dataclasses.fields(r)} == {"dir", "config", "metrics"} for r in runs)
    with pytest.raises(DataError):
        read_runs(runs_dir / "missing")


def test_build_tables_mean_std_and_order(runs_dir):
    tables = build_tables(read_runs(runs_dir))
    assert set(tables) == {"shapes-fashioniq", "shapes-cirr"}
    fiq = tables["shapes-fashioniq"]
    assert fiq.layout == "fashioniq" and fiq.which == "best"
    assert [(r.method, r.noise) for r in fiq.rows] == [
        ("clip4cir", "clean"), ("clip4cir", "mixed 0.2"), ("clip4cir", "mixed 0.5"), ("ncl_cir", "clean")]
    noisy = fiq.rows[1]
    assert sorted(noisy.seeds) == [0, 1, 2]
    headers = [c.header for c in fiq.columns]
    mean, std, n = noisy.cells[headers.index("Dress R@10")]
    assert mean == pytest.approx(12.0) and std == pytest.approx(2.0) and n == 3     # sample std (ddof=1)
    assert noisy.cells[headers.index("Rmean")][:2] == pytest.approx((18.0, 2.0))
    assert fiq.rows[0].cells[0] == (30.0, None, 1)

    cirr = tables["shapes-cirr"]
    assert [c.header for c in cirr.columns] == CIRR_HEADERS[2:-1]
    mean, std, _ = cirr.rows[0].cells[-1]                # Avg = x + 7 -> 27, 28
    assert mean == pytest.approx(27.5) and std == pytest.approx(0.5 ** 0.5)

    last = build_tables(read_runs(runs_dir), which="last")["shapes-fashioniq"]
    assert last.rows[1].cells[0][0] == pytest.approx(7.0)
    with pytest.raises(ConfigError):
        build_tables(read_runs(runs_dir), which="worst")


def test_tables_split_by_backbone_and_extra_columns(runs_dir):
    write_run(runs_dir, "other", config("clip4cir", "shapes-cirr", "cirr", "text", 0.8, 0, backbone="big"),
              finished(cirr_metrics(50.0)))
    tables = build_tables(read_runs(runs_dir), extra_columns={
        "fashioniq": [Column("AUROC", ("noise_detection", "auroc"), scope="run")]})
    assert {n for n in tables if n.startswith("shapes-cirr")} == {
        "shapes-cirr [big; val split, reference kept in gallery]", "shapes-cirr [tiny; val split, reference kept in gallery]"}
    fiq = tables["shapes-fashioniq"]
    assert fiq.columns[-1].header == "AUROC"
    assert fiq.rows[1].cells[-1][:2] == pytest.approx((0.6, 0.1))
    assert fiq.rows[0].cells[-1] == (None, None, 0)        # clean run has no noise-detection metrics
    assert "AUROC" in render(fiq, "markdown")


def test_render_terminal_and_markdown(runs_dir):
    table = build_tables(read_runs(runs_dir))["shapes-fashioniq"]
    for fmt in ("terminal", "markdown"):
        text = render(table, fmt)
        assert "shapes-fashioniq (fashioniq layout)" in text and "best-epoch" in text and "1-3 seeds" in text
        assert all(h in text for h in FIQ_HEADERS)
        assert "12.00 ± 2.00" in text and "30.00" in text and "30.00 ±" not in text
        assert "mixed 0.2" in text and "clean" in text
    terminal = render(table, "terminal")
    assert "┌" in terminal and "└" in terminal
    lines = [ln for ln in render(table, "markdown").splitlines() if ln.startswith("|")]
    assert len(lines) == 2 + len(table.rows)
    assert [c.strip() for c in lines[0].strip("|").split("|")] == FIQ_HEADERS
    assert set(lines[1].replace("|", "").replace(":", "")) == {"-"}


def test_render_latex(runs_dir):
    tables = build_tables(read_runs(runs_dir))
    text = render(tables["shapes-fashioniq"], "latex")
    lines = text.splitlines()
    assert lines[0] == r"\begin{table}[ht]" and lines[-1] == r"\end{table}"
    for rule in (r"\toprule", r"\midrule", r"\bottomrule"):
        assert lines.count(rule) == 1
    assert lines.index(r"\toprule") < lines.index(r"\midrule") < lines.index(r"\bottomrule")
    caption = next(ln for ln in lines if ln.startswith(r"\caption{"))
    assert "shapes-fashioniq" in caption and "best-epoch" in caption and "seeds" in caption and r"$\pm$" in caption
    assert r"\begin{tabular}{ll" + "r" * 10 + "}" in text
    body = lines[lines.index(r"\midrule") + 1:lines.index(r"\bottomrule")]
    assert len(body) == 4 and all(ln.count("&") == len(FIQ_HEADERS) - 1 and ln.endswith(r"\\") for ln in body)
    assert r"$12.00 \pm 2.00$" in text and r"ncl\_cir" in text and "±" not in text
    assert "Rsubset@1" in render(tables["shapes-cirr"], "latex")


def test_render_csv_parses_back(runs_dir):
    tables = build_tables(read_runs(runs_dir))
    rows = list(csv.DictReader(io.StringIO(render(tables["shapes-fashioniq"], "csv"))))
    assert len(rows) == 4
    noisy = rows[1]
    assert (noisy["method"], noisy["noise_type"], noisy["noise_rate"], noisy["n_seeds"]) == ("clip4cir", "mixed", "0.2", "3")
    assert float(noisy["Dress R@10 mean"]) == pytest.approx(12.0) and float(noisy["Dress R@10 std"]) == pytest.approx(2.0)
    assert rows[0]["Dress R@10 std"] == "" and float(rows[0]["Rmean mean"]) == pytest.approx(36.0)
    assert noisy["seeds"] == "0 1 2" and {"cirbench", "git_commit", "device", "queries"} <= set(noisy)

    combined = list(csv.DictReader(io.StringIO(render_all(tables, "csv"))))   # one header: union of columns
    assert [r["dataset"] for r in combined] == ["shapes-cirr"] + ["shapes-fashioniq"] * 4
    assert float(combined[0]["Avg mean"]) == pytest.approx(27.5) and combined[0]["Rmean mean"] == ""
    assert float(combined[2]["Rmean mean"]) == pytest.approx(18.0) and combined[2]["Avg mean"] == ""
    assert render_all(tables, "markdown").count("**") == 4
    with pytest.raises(ConfigError):
        render(tables["shapes-cirr"], "html")


def test_tables_keep_preprocessings_and_noise_seed_modes_apart(tmp_path):
    root, fiq = tmp_path / "runs", "shapes-fashioniq"

    def cfg(rate, seed, preprocess=None, same=False):
        c = config("clip4cir", fiq, "fashioniq", "mixed", rate, seed)
        if preprocess:
            c["preprocess"] = preprocess
        if same:
            c["noise"].update(seed=seed, same_as_training_seed=True)
        return c

    for seed in (0, 1):
        write_run(root, f"fixed/{seed}", cfg(0.5, seed), finished(fiq_metrics(10.0)))
        write_run(root, f"same/{seed}", cfg(0.5, seed, same=True), finished(fiq_metrics(20.0 + seed)))
        write_run(root, f"clean/{seed}", cfg(0.0, seed), finished(fiq_metrics(30.0)))
        write_run(root, f"pad/{seed}", cfg(0.5, seed, preprocess="targetpad:1.25"), finished(fiq_metrics(40.0)))
    tables = build_tables(read_runs(root))
    protocol = "val split, reference kept in gallery"
    assert set(tables) == {f"{fiq} [tiny; {protocol}]", f"{fiq} [tiny; {protocol}; noise seed = training seed]",
                           f"{fiq} [tiny; {protocol}; preprocessing targetpad:1.25]"}
    fixed, same = tables[f"{fiq} [tiny; {protocol}]"], tables[f"{fiq} [tiny; {protocol}; noise seed = training seed]"]
    pad = tables[f"{fiq} [tiny; {protocol}; preprocessing targetpad:1.25]"]
    # never averaged together; the clean runs (no noise drawn) appear in both noise-seed modes
    assert [(r.noise, r.cells[0][0]) for r in fixed.rows] == [("clean", 30.0), ("mixed 0.5", 10.0)]
    assert [(r.noise, r.cells[0][0]) for r in same.rows] == [("clean", 30.0), ("mixed 0.5", 20.5)]
    assert [(r.noise, r.cells[0][0]) for r in pad.rows] == [("mixed 0.5", 40.0)]
    assert "noise seed 0;" in fixed.title and "training seed" not in fixed.title and "preprocessing" not in fixed.title
    assert "noise seed = training seed" in same.title
    assert "preprocessing targetpad:1.25" in pad.title and "noise seed 0" in pad.title
    rows = list(csv.DictReader(io.StringIO(render_all(tables, "csv"))))
    assert {(r["preprocess"], r["noise_seed"]) for r in rows if r["noise_type"] != "clean"} == {
        ("clip", "0"), ("clip", "same"), ("targetpad:1.25", "0")}
    # one table per dataset keeps its plain name; a clean-only table names no noise seed
    only_same = build_tables([r for r in read_runs(root) if "same" in str(r.dir) or "clean" in str(r.dir)])
    assert list(only_same) == [fiq] and "noise seed = training seed" in only_same[fiq].title
    clean_only = build_tables([r for r in read_runs(root) if "clean" in str(r.dir)])
    assert "noise seed" not in clean_only[fiq].title


def test_runs_of_other_settings_are_separate_rows_and_a_copy_is_an_error(tmp_path):
    """Issue 18, item 1: seed-0 runs of 1, 2 and 10 epochs (and a --quick run) are never averaged as seeds."""
    root, fiq = tmp_path / "runs", "shapes-fashioniq"
    for epochs, value in ((1, 5.0), (2, 10.0), (10, 40.0)):
        write_run(root, f"e{epochs}/s0", {**config("clip4cir", fiq, "fashioniq", "mixed", 0.0, 0), "epochs": epochs},
                  finished(fiq_metrics(value)))
    write_run(root, "quick/s0", {**config("clip4cir", fiq, "fashioniq", "mixed", 0.0, 0), "epochs": 2,
                                 "train_limit": 1200}, finished(fiq_metrics(20.0)))
    write_run(root, "lr/s0", {**config("ncl_cir", fiq, "fashioniq", "mixed", 0.0, 0)},
              finished(fiq_metrics(30.0), hparams={"lr": 1e-4}))
    write_run(root, "lr/s1", {**config("ncl_cir", fiq, "fashioniq", "mixed", 0.0, 1)},
              finished(fiq_metrics(32.0), hparams={"lr": 1e-4}))
    (table,) = build_tables(read_runs(root)).values()
    rows = {r.method: (r.cells[0][0], len(r.seeds)) for r in table.rows}
    assert rows == {"clip4cir (epochs=1, train_limit=None)": (5.0, 1),
                    "clip4cir (epochs=2, train_limit=None)": (10.0, 1),
                    "clip4cir (epochs=10, train_limit=None)": (40.0, 1),
                    "clip4cir (epochs=2, train_limit=1200)": (20.0, 1), "ncl_cir": (31.0, 2)}

    write_run(root, "copy/s0", {**config("clip4cir", fiq, "fashioniq", "mixed", 0.0, 0), "epochs": 10},
              finished(fiq_metrics(41.0)))
    with pytest.raises(ConfigError, match=r"runs .*copy/s0 and .*e10/s0 are the same cell .*remove one"):
        build_tables(read_runs(root))


def test_table_lists_the_runs_it_left_out_under_the_table(capsys, runs_dir):
    """Issue 18 item 5 / issue 20 item 7: unfinished and unreadable run folders are named, not dropped silently."""
    from tests.helpers import run_cli

    code, out, err = run_cli(capsys, "table", runs_dir)
    assert code == 0 and "clip4cir" in out
    lines = err.strip().splitlines()
    assert sum("left out (not finished: running, failed or interrupted)" in x for x in lines) == 2
    (unreadable,) = [x for x in lines if "left out (unreadable)" in x]
    assert "ncl_cir/mixed-0.2/s2: metrics.json is not valid JSON (truncated?)" in unreadable and "--force" in unreadable


def test_results_lists_every_run_and_writes_them_as_one_json(capsys, runs_dir):
    """Issue 18 item 2: one consolidated JSON of every run (config, metrics, provenance) and what was left out."""
    from tests.helpers import run_cli

    code, out, err = run_cli(capsys, "results", runs_dir, "--json")
    assert code == 0, err
    doc = json.loads(out)
    assert len(doc["runs"]) == len(read_runs(runs_dir)) == 8
    first = doc["runs"][0]
    assert json.loads((runs_dir / first["dir"] / "metrics.json").read_text()) == first["metrics"]
    assert json.loads((runs_dir / first["dir"] / "config.json").read_text()) == first["config"]
    assert doc["left_out"] == {"shapes-fashioniq/ncl_cir/mixed-0.2/s0": "not finished",
                               "shapes-fashioniq/ncl_cir/mixed-0.2/s1": "not finished",
                               "shapes-fashioniq/ncl_cir/mixed-0.2/s2": "metrics.json is not valid JSON (truncated?)"}
    code, out, _ = run_cli(capsys, "results", runs_dir)
    assert code == 0 and len(out.splitlines()) == 8 and "shapes-cirr/clip4cir/s0  best 27.00  (epoch 3)" in out


def test_the_csv_reads_back_into_exactly_the_rows_of_the_terminal_tables(capsys, runs_dir):
    """Issue 18, done-when: one CSV, a row per terminal row, the same numbers."""
    from tests.helpers import run_cli

    _, terminal, _ = run_cli(capsys, "table", runs_dir)
    _, text, _ = run_cli(capsys, "table", runs_dir, "--format", "csv")
    rows = list(csv.DictReader(io.StringIO(text)))
    shown = [[c.strip() for c in line.strip("│").split("│")] for line in terminal.splitlines()
             if line.startswith("│") and not line.startswith("│ Method")]
    assert len(rows) == len(shown)
    for row, cells in zip(rows, shown):
        noise = "clean" if row["noise_type"] == "clean" else f"{row['noise_type']} {row['noise_rate']}"
        assert [row["method"], noise] == cells[:2] and row["n_seeds"] == cells[-1]
        means = [f"{float(row[k]):.2f}" for k in row if k.endswith(" mean") and row[k] != ""]
        assert means == [c.split(" ± ")[0] for c in cells[2:-1] if c != "-"]
