"""Printing leaderboards: the paper's table as reported, and cirbench's numbers beside it.

Decisions: the comparison is laid out paper row / cirbench row / difference row, under the
paper's own columns, so it reads like the paper's table. A row whose cirbench run is not the model
the paper ran (the row's ``approximation``) is labelled "cirbench, approximation" and its reason is
printed under the table: such numbers are never presented as regenerated. A cirbench row scored on
another split, or with another gallery protocol, than the paper's says so in its label.
"""
from __future__ import annotations

import csv
import io
from typing import Any, List, Optional, Sequence, Tuple

from ..errors import CirbenchError
from ..paths import LEADERBOARDS_DIR
from ..report.tables import (
    TableData,
    build_tables,
    format_cell,
    latex_escape,
    render_text,
)
from ..runs import RunRecord
from .schema import Leaderboard, available, load


def _num(v: Optional[float], latex: bool = False) -> str:
    return ("--" if latex else "-") if v is None else f"{v:.2f}"


def _noise_text(rate: float, noise_type: str) -> str:
    return "clean" if rate == 0 else f"{noise_type} {rate:g}"


def _table_out(title: str, headers: List[str], body: List[List[str]], fmt: str, left: int) -> str:
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(headers)
        writer.writerows(body)
        return out.getvalue()
    if fmt == "latex":
        body = [[latex_escape(c) if j < left else c for j, c in enumerate(row)] for row in body]
    return render_text(title, headers, body, fmt, left=left)


def render_paper(lb: Leaderboard, fmt: str = "terminal") -> str:
    """The paper's table exactly as reported, with which rows cirbench reimplements."""
    if lb.paper is None:
        g = lb.grid
        return (f"{lb.name}: {lb.title}\nNo paper numbers: {lb.source['paper']}.\n"
                f"Grid: methods {', '.join(g.get('methods', ['*']))}; datasets {', '.join(g.get('datasets', []))}; "
                f"noise {g.get('noise_type', 'mixed')} at {', '.join(f'{r:g}' for r in g.get('noise_rates', []))}; "
                f"seeds {', '.join(map(str, g.get('seeds', [])))}; backbone {g.get('backbone')}\n")
    p = lb.paper
    latex = fmt == "latex"
    has_backbone = any(r.backbone for r in p.rows)
    has_noise = any(r.noise is not None for r in p.rows)
    noise_type = lb.grid.get("noise_type", "mixed")
    headers = ["Method", *["Backbone"] * has_backbone, *["Noise"] * has_noise, "In cirbench", *p.columns]
    body = [[r.method, *[r.backbone or ""] * has_backbone, *[_noise_text(r.rate, noise_type)] * has_noise,
             r.ours or "no (paper only)", *(_num(v, latex) for v in r.values)] for r in p.rows]
    title = f"{lb.name}: {lb.title}. {lb.citation}; {p.split} split; as reported (percent)"
    text = _table_out(title, headers, body, fmt, left=len(headers) - len(p.columns))
    return text + _notes(lb, fmt)


def _approximations(lb: Leaderboard) -> List[str]:
    return [f"approximation: {r.method} (cirbench's {r.ours}): {r.approximation}"
            for r in lb.paper.rows if r.approximation] if lb.paper else []


def _notes(lb: Leaderboard, fmt: str) -> str:
    notes = _approximations(lb) + lb.notes
    if not notes or fmt == "csv":
        return ""
    if fmt == "latex":
        return "".join(f"% {n}\n" for n in notes)
    return "".join(f"- {n}\n" for n in notes)


def compare(lb: Leaderboard, runs: Sequence[RunRecord], which: str = "best") -> List[Tuple[TableData, List[List[Any]]]]:
    """Paper rows beside cirbench's, per cirbench table (dataset × backbone × protocol).

    Each comparison row is ``[method, rate, kind, values]`` with kind one of "paper",
    "paper only", "paper (not run)", "cirbench", "cirbench approximation" (the paper row's
    ``approximation`` is set), "difference", "cirbench only"; cirbench values are ``(mean, std)``,
    the others numbers or None.
    """
    if lb.paper is None:
        return []
    p = lb.paper
    out = []
    for table in build_tables(runs, which=which).values():
        if table.layout != p.layout:
            continue
        index = {c.header: i for i, c in enumerate(table.columns)}
        ours = {(r.method, r.noise_rate): r for r in table.rows}
        used = set()
        rows: List[List[Any]] = []
        for pr in p.rows:
            mine = ours.get((pr.ours, pr.rate)) if pr.ours else None
            if mine is None:
                rows.append([pr.method, pr.rate, "paper (not run)" if pr.ours else "paper only", pr.values])
                continue
            used.add((mine.method, mine.noise_rate))
            cells = [mine.cells[index[c]][:2] for c in p.columns]
            diff = [None if v is None or m is None else m - v for v, (m, _) in zip(pr.values, cells)]
            kind = "cirbench approximation" if pr.approximation else "cirbench"
            rows += [[pr.method, pr.rate, "paper", pr.values], [mine.method, pr.rate, kind, cells],
                     [mine.method, pr.rate, "difference", diff]]
        for key, r in ours.items():
            if key not in used:
                rows.append([r.method, r.noise_rate, "cirbench only", [r.cells[index[c]][:2] for c in p.columns]])
        out.append((table, rows))
    return out


def protocol_gap(table: TableData, paper) -> str:
    """How the protocol of cirbench's ``table`` differs from the paper's ("" when it does not, or is
    not known): another split, or the reference kept where the paper removed it (or the reverse)."""
    gaps = []
    if table.split and table.split != paper.split:
        gaps.append(f"{table.split} split, the paper {paper.split}")
    if None not in (table.reference_in_gallery, paper.reference_in_gallery) and \
            table.reference_in_gallery != paper.reference_in_gallery:
        kept = lambda flag: "kept" if flag else "removed"  # noqa: E731
        gaps.append(f"reference {kept(table.reference_in_gallery)} in the gallery, the paper "
                    f"{kept(paper.reference_in_gallery)} it")
    return "; ".join(gaps)


_KIND_TEXT = {"paper": "paper", "paper only": "paper only (not in cirbench)",
              "paper (not run)": "paper (cirbench method not installed)", "cirbench": "cirbench",
              "cirbench approximation": "cirbench, approximation (see below)",
              "difference": "cirbench - paper", "cirbench only": "cirbench only (no paper number)"}


def render_comparison(lb: Leaderboard, runs: Sequence[RunRecord], fmt: str = "terminal", which: str = "best") -> str:
    """The paper's table with cirbench's numbers and the difference under each implemented row."""
    p = lb.paper
    if p is None:
        return ""
    latex = fmt == "latex"
    noise_type = lb.grid.get("noise_type", "mixed")
    texts = []
    for table, rows in compare(lb, runs, which):
        gap = protocol_gap(table, p)
        has_noise = any(r[1] for r in rows)
        headers = ["Method", *["Noise"] * has_noise, "Numbers", *p.columns]
        body = []
        for method, rate, kind, values in rows:
            if kind in ("cirbench", "cirbench approximation", "cirbench only"):
                cells = [format_cell(m, s, latex) for m, s in values]
            elif kind == "difference":
                cells = [("--" if latex else "-") if d is None else f"{d:+.2f}" for d in values]
            else:
                cells = [_num(v, latex) for v in values]
            label = _KIND_TEXT[kind]
            if gap and kind.startswith("cirbench"):
                label += f" [{gap}]"
            body.append([method, *[_noise_text(rate, noise_type)] * has_noise, label, *cells])
        title = (f"{lb.name}: cirbench beside {lb.citation}. Paper: {p.split} split, as reported. "
                 f"cirbench: {table.title}. Difference = cirbench - paper")
        texts.append(_table_out(title, headers, body, fmt, left=len(headers) - len(p.columns)) + _notes(lb, fmt))
    return "\n".join(texts)


def render_list(fmt: str = "terminal") -> str:
    """Every leaderboard: name, what it regenerates, the grid's size, the data it needs."""
    body = []
    for name in available():
        try:
            lb = load(name)
        except CirbenchError as exc:
            body.append([name, f"invalid: {exc}", "", "", ""])
            continue
        g = lb.grid
        methods = g.get("methods", ["*"])
        size = (f"{'all' if methods == ['*'] else len(methods)} methods x {len(g.get('datasets', []))} datasets x "
                f"{len(g.get('noise_rates', []))} rates x {len(g.get('seeds', []))} seeds")
        data = ", ".join(lb.real_datasets) or "generated (offline)"
        s = lb.source
        ref = f"arXiv {s['arxiv']}" if s.get("arxiv") else s.get("venue", s["paper"]).split(";")[0]
        where = f"{ref}, {s['table']}" if lb.paper else "cirbench's embedded benchmark"
        body.append([name, lb.title, where, size, data])
    headers = ["Name", "Table", "Source", "Grid", "Data"]
    return _table_out(f"Leaderboards in {LEADERBOARDS_DIR}", headers, body, fmt, left=len(headers))


__all__ = ["compare", "render_comparison", "render_list", "render_paper"]
