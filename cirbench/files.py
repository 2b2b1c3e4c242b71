"""Writing files so that a reader never sees half of one: every file cirbench writes to be read
again (run folders, checkpoints, caches, manifests) goes through :func:`atomic_write`."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Callable


def atomic_write(path, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp)`` on a temporary file beside ``path``, then move it into place with
    ``os.replace``: a reader sees the old file or the new one, never a part. The folder is made
    if needed; the temporary file is removed if writing fails."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")  # same folder: os.replace is atomic
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def write_json(path, obj: Any, indent: int = 1, **dump_options) -> Path:
    """``obj`` as JSON at ``path``, atomically (options as for ``json.dumps``)."""
    text = json.dumps(obj, indent=indent, **dump_options)
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def save_torch(obj: Any, path) -> Path:
    """``torch.save(obj)`` at ``path``, atomically."""
    import torch  # here, so that reading and writing JSON needs no torch

    return atomic_write(path, lambda tmp: torch.save(obj, tmp))


__all__ = ["atomic_write", "save_torch", "write_json"]
