"""Files: writing them so that a reader never sees half of one (every file cirbench writes to be
read again, run folders, checkpoints, caches and manifests, goes through :func:`atomic_write`), and
reading a user's JSON / YAML file with a one-line error that names the file and the problem."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Callable, Optional, Type

import yaml


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


def read_json(path, what: str, error: Type[Exception], missing: Optional[str] = None, **load_options) -> Any:
    """The parsed JSON of ``path`` (options as for ``json.loads``). When it is missing, unreadable or
    malformed: ``error`` with one line naming ``what`` (e.g. "caption file"), the file and the problem;
    ``missing`` replaces the message for a missing file."""
    return _read(path, what, error, missing, "JSON", lambda text: json.loads(text, **load_options))


def read_yaml(path, what: str, error: Type[Exception]) -> Any:
    """The parsed YAML of ``path``, with the same one-line errors as :func:`read_json`."""
    return _read(path, what, error, None, "YAML", yaml.safe_load)


def _read(path, what: str, error: Type[Exception], missing: Optional[str], kind: str, parse: Callable[[str], Any]):
    path = Path(path)
    if not path.is_file():
        raise error(missing or f"{what} {path} does not exist")
    try:
        return parse(path.read_bytes().decode("utf-8"))
    except json.JSONDecodeError as e:
        raise error(f"{what} {path} is not valid JSON: {e.msg} at line {e.lineno}, column {e.colno}") from None
    except yaml.YAMLError as e:
        raise error(f"{what} {path} is not valid YAML: {e}") from None
    except UnicodeDecodeError:
        raise error(f"{what} {path} is not UTF-8 {kind} text") from None
    except OSError as e:
        raise error(f"cannot read {what} {path}: {e.strerror}") from None


__all__ = ["atomic_write", "read_json", "read_yaml", "save_torch", "write_json"]
