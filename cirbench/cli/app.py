"""The ``cirbench`` group, its logging, and the entry point that turns user errors into one line."""
from __future__ import annotations

import errno
import logging
import shlex
import sys
from typing import List, Optional

import click

from ..devices import configure_cpu_threads
from ..errors import CirbenchError, Interrupted
from .catalog import list_
from .data import data, noise
from .evaluate import evaluate
from .leaderboard import leaderboard
from .results import plot, results, robustness, table
from .run import run
from .scoring import score, submit

log = logging.getLogger("cirbench")


def setup_logging(quiet: bool) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("cirbench: %(message)s"))
    log.handlers[:] = [handler]
    log.setLevel(logging.WARNING if quiet else logging.INFO)
    log.propagate = False
    # open_clip warns "No pretrained weights loaded" through the root logger whenever a model is
    # built before its weights are loaded; cirbench says itself when weights are random.
    logging.getLogger().setLevel(logging.ERROR)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="cirbench")
@click.option("-q", "--quiet", is_flag=True, help="Only warnings and results.")
@click.option("--threads", type=int, envvar="CIRBENCH_THREADS", show_envvar=True,
              help="CPU threads per process. Default: the CPUs this process may use (affinity, cgroup quota).")
def cli(quiet: bool, threads: Optional[int]) -> None:
    """cirbench: composed image retrieval methods under one protocol, with honest label-noise tests.

    Start with `cirbench run` (an embedded benchmark, offline, on the CPU), then
    `cirbench table runs/` to rebuild the tables from the run folders.
    """
    setup_logging(quiet)
    configure_cpu_threads(threads)


for command in (run, evaluate, table, results, list_, data, noise, score, submit, leaderboard, robustness, plot):
    cli.add_command(command)


#: What to do when the disk refuses a write (or a read): the errno, and the fix.
_DISK_FIXES = {
    errno.ENOSPC: "free some space (or point --out / CIRBENCH_CACHE at another disk), then run the same "
                  "command again: finished epochs and cells are kept",
    errno.EACCES: "choose a folder you may write to (--out, CIRBENCH_CACHE)",
    errno.EROFS: "the file system is read-only; choose another folder (--out, CIRBENCH_CACHE)",
    errno.ENOTDIR: "a part of that path is a file, not a folder; choose another path",
}
_DISK_FIXES[errno.EDQUOT] = _DISK_FIXES[errno.ENOSPC]
_DISK_FIXES[errno.EEXIST] = _DISK_FIXES[errno.ENOTDIR]  # mkdir of a folder whose parent is a file
_DISK_FIXES[errno.EPERM] = _DISK_FIXES[errno.EACCES]


def main(argv: Optional[List[str]] = None) -> None:
    args = sys.argv[1:] if argv is None else list(argv)
    resume = f"run the same command again to resume: cirbench {shlex.join(args)}"
    try:
        cli.main(args=args, prog_name="cirbench", standalone_mode=False)
    except click.exceptions.Abort as exc:
        if isinstance(exc.__cause__, EOFError):  # click turns an EOFError anywhere into Abort: a bug, show it
            raise exc.__cause__
        click.echo(f"interrupted; {resume}" if isinstance(exc.__cause__, KeyboardInterrupt) else "aborted", err=True)
        sys.exit(130)
    except Interrupted as exc:
        click.echo(f"\ninterrupted in {exc.cell} (its finished epochs are checkpointed); {resume}", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except CirbenchError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)
    except OSError as exc:
        fix = _DISK_FIXES.get(exc.errno)
        if fix is None:
            raise
        where = f"{exc.filename}: " if exc.filename else ""
        click.echo(f"error: {where}{exc.strerror}; {fix}", err=True)
        sys.exit(1)
