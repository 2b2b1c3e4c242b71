"""The noise-robustness table: rows = methods, columns = noise rates, cells = the primary metric.

Built on :func:`cirbench.report.tables.build_tables` (the same grouping and mean ± sample std over seeds
as every other table); each cell is the primary metric of its layout (FashionIQ average R@10,
CIRR Avg; :data:`cirbench.eval.evaluation.PRIMARY_METRIC`).

Decisions: one table per dataset table (dataset × backbone × protocol × preprocessing ×
noise-seed mode, see :mod:`cirbench.report.tables`) and noise type, the clean column shared by all
noise types; the caption says how the noise was seeded ("noise seed 0" or "noise seed = training
seed") and names a preprocessing other than the default; best and second best per column are ranked on the
means as printed (two decimals), so equal-looking numbers share a mark; markdown underlines
with ``<u>`` (markdown has no underline of its own), LaTeX with ``\\underline``, the terminal
with ANSI codes when it is a colour terminal and ``*best*`` / ``_second_`` otherwise.
"""
from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

from ..data.noise import NOISE_TYPES
from ..errors import ConfigError
from ..eval.evaluation import PRIMARY_METRIC
from ..runs import RunRecord
from .tables import (
    FORMATS,
    build_tables,
    format_cell,
    latex_escape,
    noise_seed_text,
    render_text,
    seeds_text,
    sorted_seeds,
)

METRIC_NAMES = {"fashioniq": "FashionIQ average R@10", "cirr": "CIRR Avg = (R@5 + Rsubset@1)/2"}
CLEAN_ONLY = "none"  # the noise type of a table whose runs are all clean

Cell = Tuple[Optional[float], Optional[float], int]  # mean, sample std (None for one seed), number of seeds


@dataclass
class RobustnessTable:
    dataset: str
    layout: str
    backbone: str
    protocol: str
    which: str
    noise_type: str
    noise_seeds: List[int]
    rates: List[float]
    rows: Dict[str, Dict[float, Cell]] = field(default_factory=dict)
    noise_seed_same: bool = False  # noise drawn with each run's training seed (--noise-seed same)
    preprocess: str = "clip"

    @property
    def metric(self) -> str:
        return METRIC_NAMES[self.layout]

    @property
    def seeds(self) -> str:
        return seeds_text(c[2] for cells in self.rows.values() for c in cells.values() if c[2])

    @property
    def noise_description(self) -> str:
        if self.noise_type == CLEAN_ONLY:
            return "clean training only"
        known = NOISE_TYPES.get(self.noise_type)
        return known.description if known else self.noise_type

    @property
    def noise_seed(self) -> str:
        """"noise seed 0", "noise seeds 0, 3", "noise seed = training seed" ("noise seed -" when unknown)."""
        return noise_seed_text(self.noise_seeds, self.noise_seed_same) or "noise seed -"

    @property
    def caption(self) -> str:
        preprocessing = "" if self.preprocess == "clip" else f"; preprocessing {self.preprocess}"
        return (f"Noise robustness on {self.dataset} ({self.layout} layout): {self.metric} (%), {self.which} epoch, "
                f"mean ± sample std over {self.seeds}. Noise: {self.noise_type} "
                f"({self.noise_description}), {self.noise_seed}. "
                f"Backbone {self.backbone}{preprocessing}; {self.protocol}. Best per column in bold, second underlined")

    def marks(self) -> Dict[Tuple[str, float], int]:
        """(method, rate) -> 1 for the best mean of its column, 2 for the second."""
        out = {}
        for rate in self.rates:
            shown = {m: round(cells[rate][0], 2) for m, cells in self.rows.items()
                     if rate in cells and cells[rate][0] is not None}
            ranked = sorted(set(shown.values()), reverse=True)
            for m, v in shown.items():
                if v in ranked[:2]:
                    out[(m, rate)] = ranked.index(v) + 1
        return out


def build_robustness(runs: Sequence[RunRecord], which: str = "best") -> Dict[str, RobustnessTable]:
    """One robustness table per cirbench table and noise type (name -> table)."""
    out: Dict[str, RobustnessTable] = {}
    for name, table in build_tables(runs, which=which).items():
        col = next(i for i, c in enumerate(table.columns) if c.path == PRIMARY_METRIC[table.layout])
        types = sorted({r.noise_type for r in table.rows} - {"clean"}) or [CLEAN_ONLY]
        for noise_type in types:
            rows = [r for r in table.rows if r.noise_type in (noise_type, "clean")]
            seeds = sorted_seeds(s for r in rows for s in r.noise_seeds)
            rt = RobustnessTable(table.dataset, table.layout, table.backbone, table.protocol, which, noise_type,
                                 seeds, sorted({r.noise_rate for r in rows}), noise_seed_same=table.noise_seed_same,
                                 preprocess=table.preprocess)
            for r in rows:
                rt.rows.setdefault(r.method, {})[r.noise_rate] = r.cells[col]
            out[name if len(types) == 1 else f"{name} [{noise_type}]"] = rt
    return out


def _mark(text: str, rank: Optional[int], fmt: str, color: bool) -> str:
    if not rank:
        return text
    if fmt == "markdown":
        return f"**{text}**" if rank == 1 else f"<u>{text}</u>"
    if fmt == "latex":
        if text.startswith("$"):  # mean ± std is math: bold it with \mathbf
            inner = text.strip("$")
            return rf"$\mathbf{{{inner}}}$" if rank == 1 else rf"$\underline{{{inner}}}$"
        return rf"\textbf{{{text}}}" if rank == 1 else rf"\underline{{{text}}}"
    if color:
        return f"\033[1m{text}\033[0m" if rank == 1 else f"\033[4m{text}\033[0m"
    return f"*{text}*" if rank == 1 else f"_{text}_"


def _rate_header(rate: float) -> str:
    return "clean" if rate == 0 else f"{rate * 100:g}%"


def render_robustness(table: RobustnessTable, fmt: str = "terminal", color: bool = False) -> str:
    """The table as terminal / markdown / latex text (best bold, second underlined) or CSV."""
    if fmt not in FORMATS:
        raise ConfigError(f"unknown table format {fmt!r} (choose from {', '.join(FORMATS)})")
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(["dataset", "noise_type", "method", "noise_rate", "mean", "std", "n_seeds", "rank"])
        marks = table.marks()
        for method, cells in table.rows.items():
            for rate in table.rates:
                m, s, n = cells.get(rate, (None, None, 0))
                writer.writerow([table.dataset, table.noise_type, method, f"{rate:g}",
                                 "" if m is None else f"{m:.4f}", "" if s is None else f"{s:.4f}", n,
                                 marks.get((method, rate), "")])
        return out.getvalue()
    latex = fmt == "latex"
    marks = table.marks()
    headers = ["Method", *(_rate_header(r) for r in table.rates)]
    body = []
    for method, cells in table.rows.items():
        row = [latex_escape(method) if latex else method]
        for rate in table.rates:
            m, s, _ = cells.get(rate, (None, None, 0))
            row.append(_mark(format_cell(m, s, latex), marks.get((method, rate)), fmt, color))
        body.append(row)
    if not latex and not color and fmt == "terminal":
        caption = table.caption.replace("in bold, second underlined", "*between stars*, second _between underscores_")
    else:
        caption = table.caption
    return render_text(caption, headers, body, fmt, left=1)


def render_all_robustness(tables: Dict[str, RobustnessTable], fmt: str = "terminal", color: bool = False) -> str:
    texts = [render_robustness(t, fmt, color) for t in tables.values()]
    if fmt == "csv" and texts:
        return texts[0] + "".join(t.split("\n", 1)[1] for t in texts[1:])
    return "\n".join(texts)
