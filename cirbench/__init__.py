"""cirbench: composed image retrieval benchmarks under one protocol.

The Python API (:mod:`cirbench.api`, loaded on first use so that ``import cirbench`` stays light):
``cirbench.run(...)`` trains a grid as ``cirbench run`` does and returns its runs, ``cirbench.load_runs(DIR)``
reads finished runs, ``cirbench.tables(runs)`` builds the paper-style tables, ``cirbench.score(...)`` scores a
prediction file.
"""

from .version import __version__

__all__ = ["__version__", "load_runs", "run", "score", "tables"]


def __getattr__(name: str):
    if name in ("load_runs", "run", "score", "tables"):
        from . import api

        return getattr(api, name)
    raise AttributeError(f"module 'cirbench' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(__all__))
