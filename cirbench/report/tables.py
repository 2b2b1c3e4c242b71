"""Paper-style tables from finished runs: mean ± std over seeds, rendered four ways.

Tables are built from finished runs as :func:`cirbench.runs.read_runs` returns them
(:class:`~cirbench.runs.RunRecord`: ``config.json`` and ``metrics.json`` of each run folder).

Decisions:

- One table per dataset (a dataset seen with several backbones, evaluation protocols, image
  preprocessings or noise-seed modes gets one table per combination, so incompatible numbers are
  never averaged). Rows are (method, noise type, noise rate), sorted by method then rate; seeds
  are aggregated. Runs of one method whose other settings differ (:func:`settings_of`: epochs,
  hyper-parameters, train limit, protocol, cirbench version, ...) are separate rows, named with what
  differs (``clip4cir (epochs=2)``); two runs of one row with the same seeds are an error.
- The noise-seed mode is "fixed" (one noise draw for every training seed: ``noise seed 0``) or
  "same" (``--noise-seed same``: the draw follows the training seed, so the spread over seeds
  includes it: ``noise seed = training seed``); the title says which. Clean runs draw no noise:
  they belong to every table of their dataset, backbone, protocol and preprocessing, whatever
  the noise-seed mode (so both tables show the clean row).
- The preprocessing (``clip`` or ``targetpad:RATIO``, :mod:`cirbench.backbones.preprocess`) is
  named in the title and the table's name when it is not the default ``clip``.
- Cells are the mean and the *sample* standard deviation (ddof=1) over seeds; one seed shows
  the mean alone. A value missing from some seeds is averaged over the seeds that have it.
- Columns are data: :data:`COLUMNS` holds one list of :class:`Column` per layout, each a header
  and a path into the metrics. New metric families (e.g. a ``noise_detection`` dict at the root
  of ``metrics.json``) are shown by passing ``extra_columns=[Column("AUROC",
  ("noise_detection", "auroc"), scope="run")]`` to :func:`build_tables` (or adding to COLUMNS).
"""
from __future__ import annotations

import csv
import io
import json
import statistics
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple

from tabulate import tabulate

from ..errors import ConfigError
from ..runs import DEFAULT_PREPROCESS, RunRecord

FORMATS = ("terminal", "markdown", "latex", "csv")


@dataclass(frozen=True)
class Column:
    """A table column: ``path`` into ``metrics.json[which]`` (scope "which") or into ``metrics.json`` (scope "run")."""

    header: str
    path: Tuple[str, ...]
    scope: str = "which"


def _fiq(cat: str) -> List[Column]:
    return [Column(f"{cat.capitalize()} R@{k}", (cat, f"R@{k}")) for k in (10, 50)]


COLUMNS: Dict[str, List[Column]] = {
    "fashioniq": [*_fiq("dress"), *_fiq("shirt"), *_fiq("toptee"),
                  Column("Avg R@10", ("average", "R@10")), Column("Avg R@50", ("average", "R@50")),
                  Column("Rmean", ("average", "Rmean"))],
    "cirr": [Column(k, (k,)) for k in ("R@1", "R@5", "R@10", "R@50", "Rsubset@1", "Rsubset@2", "Rsubset@3", "Avg")],
}


# Noise detection of a method's clean probabilities (cirbench.eval.detection), from the final epoch's
# ``metrics.json["noise_detection"]``, values in [0, 1]; shown by `cirbench table --detection`.
DETECTION_COLUMNS: List[Column] = [
    *(Column(h, ("noise_detection", k), scope="run") for h, k in (
        ("AUROC", "auroc"), ("AP", "ap"), ("Prec", "precision"), ("Rec", "recall"), ("Selected", "selected"),
        ("Clean", "clean_rate"))),
    *(Column(f"AUROC {h}", ("noise_detection", "by_type", k, "auroc"), scope="run")
      for h, k in (("ref", "reference"), ("text", "text"), ("tgt", "target"))),
]


@dataclass
class Row:
    """One method × noise setting; ``cells[i]`` = (mean, std or None, number of values) for column i."""

    method: str
    noise_type: str
    noise_rate: float
    seeds: List[Any]
    cells: List[Tuple[Optional[float], Optional[float], int]]
    noise_seeds: List[Any] = field(default_factory=list)  # the noise seeds of its runs (noisy rows only)
    provenance: Dict[str, str] = field(default_factory=dict)  # cirbench version, git commits, devices of its runs

    @property
    def noise(self) -> str:
        return "clean" if self.noise_type == "clean" else f"{self.noise_type} {self.noise_rate:g}"


@dataclass
class TableData:
    dataset: str
    layout: str
    which: str
    backbone: str
    protocol: str
    columns: List[Column]
    rows: List[Row] = field(default_factory=list)
    preprocess: str = DEFAULT_PREPROCESS
    noise_seed_same: bool = False  # the noisy runs drew their noise with their training seed
    split: Optional[str] = None  # the evaluation split the runs were scored on (from their protocol)
    reference_in_gallery: Optional[bool] = None  # whether the reference stayed in the gallery
    queries: str = ""  # "321 of 6016 queries" when the runs scored fewer queries than the annotations list

    @property
    def seeds(self) -> str:
        return seeds_text(len(r.seeds) for r in self.rows)

    @property
    def noise(self) -> str:
        types = sorted({r.noise_type for r in self.rows} - {"clean"})
        rates = sorted({r.noise_rate for r in self.rows})
        return f"noise {', '.join(types) or 'none'} at rates {', '.join(f'{x:g}' for x in rates)}"

    @property
    def noise_seeds(self) -> List[Any]:
        return sorted_seeds(s for r in self.rows for s in r.noise_seeds)

    @property
    def noise_seed(self) -> str:
        """"noise seed 0", "noise seeds 0, 1" or "noise seed = training seed"; "" for a clean-only table."""
        return noise_seed_text(self.noise_seeds, self.noise_seed_same,
                               any(r.noise_type != "clean" for r in self.rows))

    @property
    def preprocessing(self) -> str:
        """"preprocessing targetpad:1.25"; "" for the default (clip)."""
        return "" if self.preprocess == DEFAULT_PREPROCESS else f"preprocessing {self.preprocess}"

    @property
    def title(self) -> str:
        spread = self.seeds if self.seeds == "1 seed" else f"mean ± sample std over {self.seeds}"
        parts = [f"{self.dataset} ({self.layout} layout)", f"{self.which}-epoch metrics", self.protocol, self.queries,
                 self.noise, self.noise_seed, f"backbone {self.backbone}", self.preprocessing, spread]
        return "; ".join(p for p in parts if p)


def sorted_seeds(seeds) -> List[Any]:
    """Distinct seeds, None left out, numbers in numeric order (anything else after them)."""
    return sorted({s for s in seeds if s is not None},
                  key=lambda s: (0, s, "") if isinstance(s, (int, float)) else (1, 0, str(s)))


def noise_seed_text(seeds: Sequence[Any], same: bool, noisy: bool = True) -> str:
    """How the noise was seeded, for titles and captions ("" when nothing was noisy)."""
    if not noisy:
        return ""
    if same:
        return "noise seed = training seed"
    if not seeds:
        return ""
    return f"noise seed{'s' if len(seeds) > 1 else ''} {', '.join(map(str, seeds))}"


def seeds_text(counts) -> str:
    """"1 seed", "3 seeds", "2-3 seeds" for the numbers of seeds behind a table's cells."""
    counts = sorted(set(counts))
    if not counts:
        return "0 seeds"
    n = str(counts[0]) if len(counts) == 1 else f"{counts[0]}-{counts[-1]}"
    return f"{n} seed{'' if counts == [1] else 's'}"


def noise_key(run: RunRecord) -> Tuple[str, float]:
    """(noise type, rate) of a run's row: ("clean", 0) for a clean run."""
    rate = float(run.noise.get("rate") or 0.0)
    return ("clean", 0.0) if rate == 0 else (str(run.noise.get("type") or "noise"), rate)


#: Config keys a row is keyed by already (or its table is), the training seed its cells aggregate over, and
#: what differs between machines for the same cell (the data folder's path).
_NOT_SETTINGS = {"method", "dataset", "layout", "noise", "seed", "backbone", "weights", "preprocess", "data_root",
                 "hparams"}


def settings_of(run: RunRecord) -> Dict[str, Any]:
    """Everything but the training seed that makes two runs of one row comparable: the config's other
    settings (epochs, batch size, train limit, ...), the resolved hyper-parameters, the evaluation
    protocol (split, gallery, number of queries) and the cirbench version. Runs differing in any of them
    are separate rows."""
    out = {k: v for k, v in run.config.items() if k not in _NOT_SETTINGS}
    hparams = run.metrics.get("hparams") or run.config.get("hparams") or {}
    out.update({f"hparams.{k}": v for k, v in hparams.items()})
    out.update({f"protocol.{k}": v for k, v in (run.metrics.get("protocol") or {}).items()})
    out["cirbench"] = (run.metrics.get("provenance") or {}).get("cirbench")
    return out


def _setting_key(run: RunRecord) -> str:
    return json.dumps(settings_of(run), sort_keys=True, default=str)


def _labels(runs_by_row: Dict[tuple, List[RunRecord]]) -> Dict[tuple, str]:
    """The method's name for each row, with the settings that tell its rows apart when one method has
    runs of several settings in a table: ``clip4cir (epochs=2, train_limit=1200)``."""
    settings: Dict[str, Dict[str, dict]] = {}
    for (method, key, *_), members in runs_by_row.items():
        settings.setdefault(method, {})[key] = settings_of(members[0])
    labels = {}
    for row in runs_by_row:
        method, key = row[0], row[1]
        variants = list(settings[method].values())
        differ = [k for k in dict.fromkeys(k for v in variants for k in v) if len({json.dumps(v.get(k), default=str)
                                                                                   for v in variants}) > 1]
        own = settings[method][key]
        labels[row] = method if not differ else f"{method} ({', '.join(f'{k}={own.get(k)}' for k in differ)})"
    return labels


def _check_duplicates(row: tuple, members: List[RunRecord]) -> None:
    """Two runs of one row with the same training and noise seed are the same cell twice (a copy?)."""
    seen: Dict[tuple, RunRecord] = {}
    for run in members:
        key = (run.seed, None if noise_key(run)[0] == "clean" else run.noise.get("seed"))
        if key in seen:
            raise ConfigError(f"runs {seen[key].dir} and {run.dir} are the same cell ({row[0]}, seed {run.seed}, "
                              "same settings); remove one of them, or point at a folder that holds one")
        seen[key] = run


def _provenance(runs: Sequence[RunRecord]) -> Dict[str, str]:
    """Who computed a row: the distinct cirbench versions, git commits and devices of its runs."""
    return {key: " ".join(sorted({str((r.metrics.get("provenance") or {}).get(key) or "") for r in runs} - {""}))
            for key in ("cirbench", "git_commit", "device")}


def _queries(runs: Sequence[RunRecord]) -> str:
    """"321 of 6016 queries" when some run scored fewer queries than its annotations list (images missing
    on disk); "" when every run scored them all."""
    counts = {(p.get("n_queries"), p["n_annotated_queries"]) for p in (r.metrics.get("protocol") or {} for r in runs)
              if p.get("n_annotated_queries")}
    return "; ".join(f"{n} of {m} queries" for n, m in sorted(counts, key=str))


def _protocol(metrics: dict) -> str:
    p = metrics.get("protocol") or {}
    parts = [f"{p['split']} split"] if p.get("split") else []
    if "reference_in_gallery" in p:
        parts.append("reference kept in gallery" if p["reference_in_gallery"] else "reference removed from ranking")
    return ", ".join(parts)


def _value(run: RunRecord, column: Column, which: str) -> Optional[float]:
    value: Any = run.metrics if column.scope == "run" else run.metrics.get(which)
    for key in column.path:
        if not isinstance(value, dict) or key not in value:
            return None
        value = value[key]
    return None if value is None else float(value)


def _aggregate(values: List[float]) -> Tuple[Optional[float], Optional[float], int]:
    if not values:
        return None, None, 0
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else None), len(values)


def build_tables(runs: Sequence[RunRecord], which: str = "best",
                 extra_columns: Optional[Dict[str, List[Column]]] = None) -> Dict[str, TableData]:
    """Group runs into one table per dataset (name -> table); ``which`` is "best" or "last".

    ``extra_columns`` maps a layout to further columns appended after the standard ones.
    """
    if which not in ("best", "last"):
        raise ConfigError(f"which must be 'best' or 'last', got {which!r}")
    groups: Dict[tuple, Dict[tuple, List[dict]]] = {}
    clean: List[Tuple[tuple, RunRecord]] = []
    for run in runs:
        layout = run.layout
        if layout not in COLUMNS:
            raise ConfigError(f"run {run.dir} has unknown layout {layout!r}")
        base = (run.dataset, layout, run.backbone, _protocol(run.metrics), run.preprocess)
        row_key = (run.method, _setting_key(run), *noise_key(run))
        if row_key[2] == "clean":
            clean.append((base, run))
        else:
            groups.setdefault((*base, run.noise_seed_same), {}).setdefault(row_key, []).append(run)
    for base, run in clean:  # a clean run joins every noise-seed mode of its table (both show the clean row)
        keys = [k for k in groups if k[:-1] == base] or [(*base, False)]
        for key in keys:
            groups.setdefault(key, {}).setdefault((run.method, _setting_key(run), *noise_key(run)), []).append(run)

    per_dataset: Dict[str, int] = {}
    for dataset, *_ in groups:
        per_dataset[dataset] = per_dataset.get(dataset, 0) + 1
    tables: Dict[str, TableData] = {}
    for (dataset, layout, backbone, protocol, preprocess, same), rows in sorted(groups.items()):
        columns = COLUMNS[layout] + list((extra_columns or {}).get(layout, []))
        scored = next(iter(rows.values()))[0].metrics.get("protocol") or {}  # one protocol per table
        table = TableData(dataset, layout, which, backbone, protocol, columns, preprocess=preprocess,
                          noise_seed_same=same, split=scored.get("split"),
                          reference_in_gallery=scored.get("reference_in_gallery"))
        labels = _labels(rows)
        table.queries = _queries([r for members in rows.values() for r in members])
        for row, members in sorted(rows.items(), key=lambda kv: (labels[kv[0]], kv[0][3], kv[0][2])):
            _check_duplicates(row, members)
            noise_type, rate = row[2], row[3]
            cells = [_aggregate([v for v in (_value(r, c, which) for r in members) if v is not None]) for c in columns]
            seeds = [r.seed for r in members]
            noise_seeds = [] if noise_type == "clean" else sorted_seeds(r.noise.get("seed") for r in members)
            table.rows.append(Row(labels[row], noise_type, rate, seeds, cells, noise_seeds, _provenance(members)))
        tables[_table_name(table, per_dataset[dataset] > 1)] = table
    return tables


def _table_name(table: TableData, several: bool) -> str:
    """The dataset, and when it has several tables what tells them apart: ``shapes-cirr [tiny;
    val split; preprocessing targetpad:1.25; noise seed = training seed]``."""
    if not several:
        return table.dataset
    parts = [table.backbone, table.protocol, table.preprocessing,
             "noise seed = training seed" if table.noise_seed_same else ""]
    return f"{table.dataset} [{'; '.join(p for p in parts if p)}]"


# ---------------------------------------------------------------------------- rendering

_LATEX_SPECIAL = {"&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{", "}": r"\}",
                  "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "\\": r"\textbackslash{}"}


def latex_escape(text: str) -> str:
    return "".join(_LATEX_SPECIAL.get(ch, ch) for ch in text)


def format_cell(mean: Optional[float], std: Optional[float], latex: bool = False) -> str:
    """"61.00 ± 1.41" (one seed: "61.00"; missing: "-"); LaTeX math when ``latex``."""
    if mean is None:
        return "--" if latex else "-"
    if std is None:
        return f"{mean:.2f}"
    return f"${mean:.2f} \\pm {std:.2f}$" if latex else f"{mean:.2f} ± {std:.2f}"


def _body(table: TableData, latex: bool = False) -> Tuple[List[str], List[List[str]]]:
    headers = ["Method", "Noise", *(c.header for c in table.columns), "Seeds"]
    text = latex_escape if latex else str
    body = [[text(r.method), text(r.noise), *(format_cell(m, s, latex) for m, s, _ in r.cells), str(len(r.seeds))]
            for r in table.rows]
    return headers, body


def _csv(tables: Sequence[TableData]) -> str:
    key_fields = ["dataset", "layout", "which", "backbone", "protocol", "queries", "preprocess", "method",
                  "noise_type", "noise_rate", "noise_seed", "n_seeds", "seeds", "cirbench", "git_commit", "device"]
    records = []
    for table in tables:
        for r in table.rows:
            noise_seed = "same" if table.noise_seed_same and r.noise_type != "clean" else " ".join(map(str, r.noise_seeds))
            record = dict(zip(key_fields, [table.dataset, table.layout, table.which, table.backbone, table.protocol,
                                           table.queries, table.preprocess, r.method, r.noise_type,
                                           f"{r.noise_rate:g}", noise_seed, len(r.seeds),
                                           " ".join(map(str, sorted_seeds(r.seeds))),
                                           r.provenance.get("cirbench", ""), r.provenance.get("git_commit", ""),
                                           r.provenance.get("device", "")]))
            for c, (m, s, _) in zip(table.columns, r.cells):
                record[f"{c.header} mean"] = "" if m is None else f"{m:.4f}"
                record[f"{c.header} std"] = "" if s is None else f"{s:.4f}"
            records.append(record)
    fields = list(dict.fromkeys(key_fields + [k for rec in records for k in rec]))
    out = io.StringIO()
    writer = csv.DictWriter(out, fields, restval="", lineterminator="\n")
    writer.writeheader()
    writer.writerows(records)
    return out.getvalue()


def _latex(table: TableData) -> str:
    headers, body = _body(table, latex=True)
    return render_text(table.title, headers, body, "latex")


def render_text(title: str, headers: Sequence[str], body: Sequence[Sequence[str]], fmt: str = "terminal",
                left: int = 2) -> str:
    """Rows of ready-made cells as "terminal", "markdown" or "latex" text (the first ``left`` columns
    left-aligned). For LaTeX the cells must already be LaTeX; the title and headers are escaped here."""
    if fmt == "latex":
        spec = "l" * left + "r" * (len(headers) - left)
        lines = [r"\begin{table}[ht]", r"\centering",
                 r"\caption{" + latex_escape(title).replace("±", r"$\pm$") + "}",
                 rf"\begin{{tabular}}{{{spec}}}", r"\toprule",
                 " & ".join(latex_escape(h) for h in headers) + r" \\", r"\midrule",
                 *(" & ".join(row) + r" \\" for row in body),
                 r"\bottomrule", r"\end{tabular}", r"\end{table}"]
        return "\n".join(lines) + "\n"
    if fmt not in ("terminal", "markdown"):
        raise ConfigError(f"unknown table format {fmt!r} (choose from {', '.join(FORMATS)})")
    align = ("left",) * left + ("right",) * (len(headers) - left)
    style = "simple_outline" if fmt == "terminal" else "github"
    grid = tabulate(body, headers, tablefmt=style, disable_numparse=True, colalign=align)
    title = title if fmt == "terminal" else f"**{title}**\n"
    return f"{title}\n{grid}\n"


def render(table: TableData, fmt: str = "terminal") -> str:
    """One table as text: "terminal" (box drawing), "markdown" (pipes), "latex" (booktabs) or "csv"."""
    if fmt == "csv":
        return _csv([table])
    if fmt == "latex":
        return _latex(table)
    if fmt not in FORMATS:
        raise ConfigError(f"unknown table format {fmt!r} (choose from {', '.join(FORMATS)})")
    headers, body = _body(table)
    return render_text(table.title, headers, body, fmt)


def render_all(tables: Dict[str, TableData], fmt: str = "terminal") -> str:
    """Several tables in one text; CSV is one file whose header is the union of the tables' columns."""
    if fmt == "csv":
        return _csv(list(tables.values()))
    return "\n".join(render(t, fmt) for t in tables.values())
