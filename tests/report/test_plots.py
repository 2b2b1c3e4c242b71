"""`cirbench plot`: Recall vs noise rate per method, error bars over seeds, one panel per layout."""
import pytest

from cirbench.cli.app import main
from cirbench.report.robustness import build_robustness
from tests.helpers import grid_runs, write_runs

pytest.importorskip("matplotlib")


def test_one_panel_per_layout_with_labelled_axes_legend_and_error_bars():
    from cirbench.report.plots import figure

    fig = figure(build_robustness(grid_runs() + grid_runs("shapes-cirr")))
    axes = fig.axes
    assert len(axes) == 2
    assert [ax.get_ylabel() for ax in axes] == ["FashionIQ average R@10 (%)", "CIRR Avg = (R@5 + Rsubset@1)/2 (%)"]
    for ax in axes:
        assert "noise" in ax.get_xlabel() and "(%)" in ax.get_xlabel()
        assert [t.get_text() for t in ax.get_legend().get_texts()] == ["alpha", "beta", "gamma"]
        bars = ax.containers  # one errorbar container per method: data line, caps, bar lines
        assert [c.get_label() for c in bars] == ["alpha", "beta", "gamma"] and all(c.has_yerr for c in bars)
        assert [list(c.lines[0].get_xdata()) for c in bars] == [[0.0, 50.0]] * 3
        assert [list(c.lines[0].get_ydata()) for c in bars] == [[61.0, 42.0], [58.0, 51.0], [32.0, 45.0]]
        segments = bars[0].lines[2][0].get_segments()  # alpha's bars: ± sample std (1.41, 2.83)
        assert [round(float(s[1][1] - s[0][1]) / 2, 2) for s in segments] == [1.41, 2.83]
    assert "shapes-fashioniq" in axes[0].get_title() and "2 seeds" in axes[0].get_title()


def test_cli_plot_writes_a_png(tmp_path, capsys):
    runs_dir = write_runs(tmp_path / "runs", grid_runs() + grid_runs("shapes-cirr"))
    out = tmp_path / "fig" / "noise.png"
    main(["plot", str(runs_dir), "--out", str(out), "--dpi", "60"])
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 5000
    assert str(out) in capsys.readouterr().out
    with pytest.raises(SystemExit) as exc:
        main(["plot", str(runs_dir), "--out", str(tmp_path / "noise.txt")])
    assert exc.value.code == 2 and "use a .png, .pdf or .svg" in capsys.readouterr().err
