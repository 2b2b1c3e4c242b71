"""Where cirbench keeps things it builds once and reuses (generated data, warm-started weights,
feature caches): ``$CIRBENCH_CACHE``, else ``~/.cache/cirbench``."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Optional


def cache_dir(override: Optional[os.PathLike] = None) -> Path:
    if override is not None:
        return Path(override).expanduser()
    env = os.environ.get("CIRBENCH_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "cirbench"
