"""Wall-clock timings of the user-facing commands, from an empty cache.

    python benchmarks/cli_timings.py [--out results.json]

Times, in order: the one-time preparation (shapes generation + tiny warm start), the default
`cirbench run`, `cirbench run --quick`, and a second `cirbench run` (every cell reused).
Each command runs as a user would run it, in a fresh process, with its own empty cache.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CIRBENCH = [str(Path(sys.executable).with_name("cirbench"))]
PREPARE = ("from cirbench.backbones.tiny import tiny_shapes_weights; tiny_shapes_weights()")


def timed(cmd, env, label):
    t0 = time.time()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    seconds = time.time() - t0
    if proc.returncode != 0:
        sys.exit(f"{label} failed:\n{proc.stderr[-3000:]}")
    print(f"{label}: {seconds:.1f}s", file=sys.stderr)
    return seconds, proc.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "CIRBENCH_CACHE": str(Path(tmp) / "cache")}
        res = {"machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
               "python": platform.python_version()}
        res["prepare_s"], _ = timed([sys.executable, "-c", PREPARE], env, "one-time preparation")
        res["run_default_s"], tables = timed(CIRBENCH + ["-q", "run", "--out", f"{tmp}/runs", "--no-progress"],
                                             env, "cirbench run")
        res["run_quick_s"], _ = timed(CIRBENCH + ["-q", "run", "--quick", "--out", f"{tmp}/quick", "--no-progress"],
                                      env, "cirbench run --quick")
        res["rerun_default_s"], _ = timed(CIRBENCH + ["-q", "run", "--out", f"{tmp}/runs", "--no-progress"],
                                          env, "cirbench run (again, all cells reused)")
        res["tables"] = tables
    print(json.dumps(res, indent=1))
    if args.out:
        args.out.write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
