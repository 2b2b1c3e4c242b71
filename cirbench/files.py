"""Files: writing them so that a reader never sees half of one (every file cirbench writes to be
read again, run folders, checkpoints, caches and manifests, goes through :func:`atomic_write`), and
reading a user's JSON / YAML file with a one-line error that names the file and the problem."""
from __future__ import annotations

import json
import os
import re
import shutil
import socket
from pathlib import Path
from typing import Any, Callable, Optional, Type

import yaml

from .errors import DataError, first_line

#: ``<host>-<pid>``: the writer of a temporary file, so that a later process can tell a killed
#: writer's leftovers (this host, no such process) from a live writer's (another process, another host).
_WRITER = re.compile(r"\.(?P<host>[^.]+)-(?P<pid>\d+)\.(tmp|partial|old)$")


def temporary_path(path, kind: str = "tmp") -> Path:
    """A hidden name beside ``path`` for a file or folder being written: ``.NAME.HOST-PID.KIND``."""
    path = Path(path)
    return path.with_name(f".{path.name}.{_host()}-{os.getpid()}.{kind}")


def remove_stale_temporaries(folder, name: str = "*") -> int:
    """Remove the temporary files and folders (:func:`temporary_path`) of ``name`` in ``folder`` left by
    writers that were killed (a process of this host that no longer exists); returns how many."""
    removed = 0
    for tmp in Path(folder).glob(f".{name}.*"):
        m = _WRITER.search(tmp.name)
        if not m or m["host"] != _host() or _alive(int(m["pid"])):
            continue
        shutil.rmtree(tmp, ignore_errors=True) if tmp.is_dir() else tmp.unlink(missing_ok=True)
        removed += 1
    return removed


def _host() -> str:
    return socket.gethostname().split(".")[0].replace("-", "_") or "host"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # e.g. another user's process
        return True
    return True


def atomic_write(path, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp)`` on a temporary file beside ``path``, then move it into place with
    ``os.replace``: a reader sees the old file or the new one, never a part. The folder is made
    if needed; the temporary file is removed if writing fails, and those of killed earlier writers
    of ``path`` are removed first."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path.parent, path.name)
    tmp = temporary_path(path)  # same folder: os.replace is atomic
    try:
        write(tmp)
        os.replace(tmp, path)
    except OSError as exc:  # e.g. a full disk: name the file the user knows, not the temporary one
        tmp.unlink(missing_ok=True)
        raise OSError(exc.errno, exc.strerror or str(exc), str(path)) from None
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

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:  # through a Python file, a full disk is an OSError (ENOSPC) ...
            try:
                torch.save(obj, f)
            except RuntimeError as exc:  # ... which torch's zip writer may hide behind its own error on the way out
                cause = exc.__context__
                while cause is not None and not isinstance(cause, OSError):
                    cause = cause.__context__
                if cause is None:
                    raise
                raise cause from None

    return atomic_write(path, write)


def load_torch(path, what: str, map_location=None, hint: str = "") -> Any:
    """``torch.load`` of a file cirbench wrote (a checkpoint, a best model): DataError with one line
    naming ``what``, the file and ``hint`` (what to do) when it is empty, truncated or not a torch file."""
    import torch

    path = Path(path)
    try:
        return torch.load(path, map_location=map_location, weights_only=False)
    except OSError as exc:
        raise DataError(f"cannot read {what} {path}: {exc.strerror or exc}") from None
    except Exception as exc:  # empty (EOFError), random bytes (UnpicklingError), truncated zip (RuntimeError)
        reason = "it is empty" if path.stat().st_size == 0 else f"{type(exc).__name__}: {first_line(exc)}"
        raise DataError(f"{what} {path} is unreadable, corrupt or truncated ({reason})"
                        + (f"; {hint}" if hint else "")) from None


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
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        raise error(f"{what} {path} is not valid YAML: {getattr(e, 'problem', None) or e}{where}") from None
    except UnicodeDecodeError:
        raise error(f"{what} {path} is not UTF-8 {kind} text") from None
    except OSError as e:
        raise error(f"cannot read {what} {path}: {e.strerror}") from None


__all__ = ["atomic_write", "load_torch", "read_json", "read_yaml", "remove_stale_temporaries", "save_torch",
           "temporary_path", "write_json"]
