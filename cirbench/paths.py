"""Where cirbench keeps things: what it builds once and reuses (generated data, warm-started
weights, feature caches) under ``$CIRBENCH_CACHE``, else ``~/.cache/cirbench``; and the
leaderboard files it ships (:data:`LEADERBOARDS_DIR`)."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

#: The leaderboard YAML files installed with cirbench (``cirbench/leaderboards/*.yaml``).
LEADERBOARDS_DIR = Path(__file__).resolve().parent / "leaderboards"


def cache_dir(override: Optional[os.PathLike] = None) -> Path:
    """``override`` if given, else ``$CIRBENCH_CACHE``, else ``~/.cache/cirbench``."""
    if override is not None:
        return Path(override).expanduser()
    env = os.environ.get("CIRBENCH_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "cirbench"
