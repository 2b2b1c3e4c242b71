"""Killed runs resume exactly: every registered method, SIGKILLed in a subprocess at several moments
(while writing its noise manifest, a checkpoint, a history line, its final metrics), then run again,
ends with the ``metrics.json`` and ``history.jsonl`` of an uninterrupted run (timings excepted), and no
temporary file is left anywhere. Ctrl-C names the cell and the command that resumes it."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from cirbench.registry import expand_methods
from tests.helpers import run_cli

REPO = Path(__file__).resolve().parents[2]

#: The child: shapes shrunk like the tests' own, then a SIGKILL of itself when the N-th write of a file
#: named NAME has its temporary file written but not yet moved into place (a kill in mid-write).
CHILD = """
import os, signal, sys
from pathlib import Path
from cirbench import files
name, n = sys.argv[1].split(":")
seen = []
write_for_real = files.atomic_write
def atomic_write(path, write):
    def write_then_die(tmp):
        write(tmp)
        if Path(path).name == name:
            seen.append(path)
            if len(seen) == int(n):
                os.kill(os.getpid(), signal.SIGKILL)
    return write_for_real(path, write_then_die)
files.atomic_write = atomic_write  # before any other cirbench module binds it
from tests.helpers import shrink_shapes
shrink_shapes()
from cirbench.cli.app import main
main(sys.argv[2:])
"""

#: Where each method is killed, in order: one process per moment, each resuming what the last left
#: (the baseline also before it trains; each child costs a few seconds of start-up).
KILLS = ("checkpoint.pt:2", "history.jsonl:1", "metrics.json:1")
KILLS_OF = {"clip4cir": ("noise_manifest.json:1", *KILLS)}


def cell_args(method: str, out: Path) -> list:
    return ["run", "-m", method, "-d", "shapes-cirr", "--noise-rates", "0.5", "--epochs", "3", "--batch-size", "16",
            "--weights", "random", "--no-progress", "--out", str(out)]


def without_timings(run: Path) -> tuple:
    metrics = json.loads((run / "metrics.json").read_text())
    metrics["provenance"] = {k: v for k, v in metrics["provenance"].items() if k not in ("wall_seconds", "timestamp")}
    history = [{k: v for k, v in json.loads(line).items() if k != "seconds"}
               for line in (run / "history.jsonl").read_text().splitlines()]
    return metrics, history


def temporaries(*roots: Path) -> list:
    return [p for root in roots for p in root.rglob(".*") if p.name.endswith((".tmp", ".partial", ".old"))]


@pytest.mark.parametrize("method", expand_methods(["*"]))  # every method that trains
def test_a_run_killed_at_several_moments_resumes_to_the_uninterrupted_result(capsys, tmp_path, isolated_cache,
                                                                             method):
    code, _, err = run_cli(capsys, *cell_args(method, tmp_path / "whole"))
    assert code == 0, err
    (whole,) = [p.parent for p in (tmp_path / "whole").rglob("metrics.json")]

    cut = tmp_path / "cut"
    run = cut / whole.relative_to(tmp_path / "whole")
    env = {**os.environ, "CIRBENCH_CACHE": str(isolated_cache), "PYTHONPATH": str(REPO)}
    for kill in KILLS_OF.get(method, KILLS):
        child = subprocess.run([sys.executable, "-c", CHILD, kill, *cell_args(method, cut)], cwd=REPO, env=env,
                               capture_output=True, text=True, timeout=300)
        assert child.returncode == -9, f"{kill}: the child was not killed (exit {child.returncode}): {child.stderr}"
        assert not (run / "metrics.json").exists()
    assert temporaries(cut), "no kill landed in mid-write"

    code, _, err = run_cli(capsys, *cell_args(method, cut))
    assert code == 0, err
    assert without_timings(run) == without_timings(whole)
    assert temporaries(cut, isolated_cache) == []


def test_ctrl_c_names_the_cell_and_the_command_that_resumes_it(capsys, tmp_path, monkeypatch):
    from cirbench import runner

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(runner, "fit", interrupted)
    args = cell_args("clip4cir", tmp_path)
    code, _, err = run_cli(capsys, *args)
    assert code == 130 and "Traceback" not in err
    assert f"interrupted in {tmp_path}/shapes-cirr/clip4cir/mixed-0.5-ns0/seed0" in err
    assert err.rstrip().endswith("run the same command again to resume: cirbench " + " ".join(args))
