"""The ``cirbench`` group, its logging, and the entry point that turns user errors into one line."""
from __future__ import annotations

import logging
import sys
from typing import List, Optional

import click

from ..errors import CirbenchError
from .catalog import list_
from .data import data, noise
from .leaderboard import leaderboard
from .results import plot, robustness, table
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
def cli(quiet: bool) -> None:
    """cirbench: composed image retrieval methods under one protocol, with honest label-noise tests.

    Start with `cirbench run` (an embedded benchmark, offline, on the CPU), then
    `cirbench table runs/` to rebuild the tables from the run folders.
    """
    setup_logging(quiet)


for command in (run, table, list_, data, noise, score, submit, leaderboard, robustness, plot):
    cli.add_command(command)


def main(argv: Optional[List[str]] = None) -> None:
    try:
        cli.main(args=argv, prog_name="cirbench", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except CirbenchError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        click.echo("\ninterrupted: finished epochs are checkpointed; run the same command again to resume.", err=True)
        sys.exit(130)
