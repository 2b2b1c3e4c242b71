"""Errors that mean "the user asked for something wrong": the CLI prints them without a traceback."""


class CirbenchError(Exception):
    """A user-facing error; the message says what is wrong and how to fix it."""


class DataError(CirbenchError):
    """A dataset folder, annotation file or prediction file is missing or malformed."""


class ConfigError(CirbenchError):
    """A bad option, spec file, method name, noise rate, ..."""


class Interrupted(Exception):
    """Ctrl-C while a grid ran: ``cell`` is the run folder it stopped in (relative to ``--out``).
    Not a KeyboardInterrupt, so that click passes it on to the entry point, which names the cell
    and the command that resumes it."""

    def __init__(self, cell: str):
        super().__init__(cell)
        self.cell = cell


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (its type's name when it has none), for a one-line error."""
    return (str(exc).splitlines() or [type(exc).__name__])[0]


#: What to do about a run folder whose files cirbench cannot continue from.
RESTART_CELL = "pass --force to start this cell again"
