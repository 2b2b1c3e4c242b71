"""The noise-robustness table: methods × noise rates, mean ± std of the primary metric, best bold,
second underlined, seeds and noise protocol in the caption."""
import dataclasses
import statistics

import pytest

from cirbench.cli.app import main
from cirbench.report.robustness import build_robustness, render_robustness
from tests.helpers import SCORES, fake_run, grid_runs, write_runs


def test_cells_are_mean_and_sample_std_of_the_primary_metric():
    tables = build_robustness(grid_runs() + grid_runs("shapes-cirr"))
    assert set(tables) == {"shapes-fashioniq", "shapes-cirr"}
    for t in tables.values():
        assert t.rates == [0.0, 0.5] and list(t.rows) == ["alpha", "beta", "gamma"]
        for m, rates in SCORES.items():
            for rate, values in rates.items():
                mean, std, n = t.rows[m][rate]
                assert mean == pytest.approx(statistics.fmean(values)) and n == 2
                assert std == pytest.approx(statistics.stdev(values))
    assert tables["shapes-fashioniq"].metric == "FashionIQ average R@10"
    assert tables["shapes-cirr"].metric.startswith("CIRR Avg")


def test_best_bold_and_second_underlined_per_column():
    t = build_robustness(grid_runs())["shapes-fashioniq"]
    # clean: alpha 61 > beta 58 > gamma 32; noise 0.5: beta 51 > gamma 45 > alpha 42
    assert t.marks() == {("alpha", 0.0): 1, ("beta", 0.0): 2, ("beta", 0.5): 1, ("gamma", 0.5): 2}
    md = render_robustness(t, "markdown")
    assert "| alpha    |    **61.00 ± 1.41** |        42.00 ± 2.83 |" in md
    assert "<u>58.00 ± 0.00</u>" in md and "**51.00 ± 1.41**" in md and "<u>45.00 ± 0.00</u>" in md
    assert md.count("**") == 2 * 2 + 2 and md.count("<u>") == 2  # two bold cells + the bold caption
    tex = render_robustness(t, "latex")
    assert r"$\mathbf{61.00 \pm 1.41}$" in tex and r"$\underline{58.00 \pm 0.00}$" in tex
    assert r"$\mathbf{51.00 \pm 1.41}$" in tex and r"$\underline{45.00 \pm 0.00}$" in tex
    assert r"\toprule" in tex and "Method & clean & 50\\% \\\\" in tex
    plain = render_robustness(t, "terminal")
    assert "*61.00 ± 1.41*" in plain and "_58.00 ± 0.00_" in plain and "\033[" not in plain
    assert "\033[1m61.00 ± 1.41\033[0m" in render_robustness(t, "terminal", color=True)
    csv_text = render_robustness(t, "csv").splitlines()
    assert csv_text[0].endswith("rank") and "shapes-fashioniq,mixed,alpha,0,61.0000,1.4142,2,1" in csv_text


def test_ties_at_printed_precision_share_the_mark_and_one_seed_gets_bold_without_std():
    runs = [fake_run("a", value=50.001), fake_run("b", value=49.999), fake_run("c", value=40.0)]
    t = build_robustness(runs)["shapes-fashioniq"]
    assert t.marks() == {("a", 0.0): 1, ("b", 0.0): 1, ("c", 0.0): 2}
    tex = render_robustness(t, "latex")
    assert r"\textbf{50.00}" in tex and r"\underline{40.00}" in tex


def test_caption_names_seeds_metric_and_noise_protocol():
    runs = grid_runs() + [fake_run("alpha", rate=0.5, seed=0, value=1.0, noise_type="text", noise_seed=3)]
    tables = build_robustness(runs)
    assert set(tables) == {"shapes-fashioniq [mixed]", "shapes-fashioniq [text]"}
    mixed, text = tables["shapes-fashioniq [mixed]"], tables["shapes-fashioniq [text]"]
    assert "mean ± sample std over 2 seeds" in mixed.caption and "TME protocol" in mixed.caption
    # each table names the noise seeds of its own noise type
    assert "noise seed 0." in mixed.caption and "Best per column in bold, second underlined" in mixed.caption
    assert "noise seed 3." in text.caption
    assert "shuffled modification texts" in text.caption and "1-2 seeds" in text.caption
    assert text.rows["alpha"][0.5][0] == 1.0 and 0.0 in text.rows["beta"]  # the clean column is shared


def test_cli_robustness_reads_run_folders(tmp_path, capsys):
    write_runs(tmp_path / "runs", grid_runs())
    main(["robustness", str(tmp_path / "runs"), "--format", "markdown"])
    out = capsys.readouterr().out
    assert "Noise robustness on shapes-fashioniq" in out and "| Method   |" in out and "50%" in out
    assert "**61.00 ± 1.41**" in out
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(SystemExit) as exc:
        main(["robustness", str(empty)])
    assert exc.value.code == 2 and "no finished runs" in capsys.readouterr().err


def test_caption_says_how_the_noise_was_seeded_and_names_a_preprocessing():
    same = [dataclasses.replace(r, config={**r.config, "preprocess": "targetpad:1.25",
                                           "noise": {**r.noise, "seed": r.seed, "same_as_training_seed": True}})
            for r in grid_runs()]
    (table,) = build_robustness(same).values()
    assert "noise seed = training seed." in table.caption and "preprocessing targetpad:1.25" in table.caption
    (fixed,) = build_robustness(grid_runs()).values()
    assert "noise seed 0." in fixed.caption and "training seed" not in fixed.caption
    assert "preprocessing" not in fixed.caption
