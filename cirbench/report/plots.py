"""``cirbench plot``: the primary metric against the noise rate, one line per method, error bars
over seeds, one panel per dataset layout (from the robustness tables, so the plot and the
table always show the same numbers).

matplotlib is an optional dependency (``pip install 'cirbench[plot]'``) and runs headless (Agg).
"""
from __future__ import annotations

from pathlib import Path
from typing import Dict, Sequence

from ..errors import ConfigError
from ..runs import RunRecord
from .robustness import RobustnessTable, build_robustness

_MARKERS = "osD^vP*Xh<>"
_AXIS = {"fashioniq": "FashionIQ average R@10 (%)", "cirr": "CIRR Avg = (R@5 + Rsubset@1)/2 (%)"}


def _pyplot():
    try:
        import matplotlib
    except ImportError:
        raise ConfigError("cirbench plot needs matplotlib: pip install 'cirbench[plot]'") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_robustness(tables: Dict[str, RobustnessTable], out: Path, dpi: int = 150) -> Path:
    """Draw the tables (one panel each) into ``out`` (PNG, PDF or SVG by suffix)."""
    fig = figure(tables)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=dpi)
    _pyplot().close(fig)
    return out


def figure(tables: Dict[str, RobustnessTable]):
    """The matplotlib figure: one panel per table, one line per method."""
    if not tables:
        raise ConfigError("nothing to plot: no finished runs")
    plt = _pyplot()
    panels = sorted(tables.values(), key=lambda t: (t.layout != "fashioniq", t.dataset, t.noise_type))
    methods = sorted({m for t in panels for m in t.rows})
    cmap = plt.get_cmap("tab10")
    style = {m: (cmap(i % 10), _MARKERS[i % len(_MARKERS)]) for i, m in enumerate(methods)}
    fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 4.4), squeeze=False)
    for ax, t in zip(axes[0], panels):
        for method, cells in t.rows.items():
            rates = [r for r in t.rates if r in cells and cells[r][0] is not None]
            means = [cells[r][0] for r in rates]
            stds = [cells[r][1] or 0.0 for r in rates]
            color, marker = style[method]
            ax.errorbar([100 * r for r in rates], means, yerr=stds, label=method, color=color, marker=marker,
                        capsize=3, linewidth=1.6, markersize=5)
        seeds = f"{t.seeds} (no error bars)" if t.seeds == "1 seed" else t.seeds
        ax.set_title(f"{t.dataset} ({t.layout} layout)\n{t.backbone}; {seeds}", fontsize=10)
        ax.set_xlabel(f"training triplets corrupted, {t.noise_type} noise (%)")
        ax.set_ylabel(_AXIS[t.layout])
        ax.set_xticks([100 * r for r in t.rates])
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="best")
    fig.suptitle("Retrieval vs training label noise (error bars: sample std over seeds)", fontsize=11)
    fig.tight_layout()
    return fig


def plot_runs(runs: Sequence[RunRecord], out: Path, which: str = "best", dpi: int = 150) -> Path:
    """Plot finished runs (as :func:`cirbench.runs.read_runs` returns them)."""
    return plot_robustness(build_robustness(runs, which=which), out, dpi=dpi)
