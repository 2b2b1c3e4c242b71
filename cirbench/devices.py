"""Which device to run on, the mixed precision cirbench uses there (bf16 on CUDA, fp32 elsewhere), and
how many CPU threads a process uses."""
from __future__ import annotations

import contextlib
import math
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Optional

from .errors import ConfigError

if TYPE_CHECKING:  # pragma: no cover
    import torch

DEVICE_CHOICES = ("auto", "cpu", "cuda")


def resolve_device(choice: str) -> str:
    """``auto`` -> ``cuda`` when torch sees a GPU, else ``cpu``; ``cuda`` without a GPU is an error."""
    import torch  # here, so that the CLI's options need no torch

    if choice not in DEVICE_CHOICES:
        raise ConfigError(f"unknown device {choice!r}; choose from {', '.join(DEVICE_CHOICES)}")
    if choice == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if choice == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda asked for, but torch sees no CUDA GPU; use --device cpu or auto")
    return choice


def autocast(device: torch.device):
    """bf16 autocast on CUDA; a no-op context elsewhere."""
    import torch

    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def usable_cpus() -> int:
    """The CPUs this process may use: its affinity mask (taskset, Slurm's cpuset), capped by a cgroup CPU
    quota (a container's ``--cpus``)."""
    try:
        n = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        n = os.cpu_count() or 1
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()
        if quota != "max":
            n = min(n, math.ceil(int(quota) / int(period)))
    except (OSError, ValueError):
        pass
    return max(1, n)


def configure_cpu_threads(threads: Optional[int] = None, jobs: int = 1) -> int:
    """Set the threads of torch's CPU ops for this process and returns how many: ``threads`` when given
    (``--threads`` / ``CIRBENCH_THREADS``), else ``OMP_NUM_THREADS`` when the user set it, else the usable
    CPUs shared by ``jobs`` processes running at once. torch's own default (every core of the machine) in
    each of several processes on one node oversubscribes it: spinning threads make a step many times
    slower. Set before torch is imported (through the environment, which child processes inherit), or
    directly when it already is."""
    if threads is None and os.environ.get("OMP_NUM_THREADS", "").isdigit():
        threads = int(os.environ["OMP_NUM_THREADS"])
    if threads is not None and threads < 1:
        raise ConfigError(f"--threads must be a positive integer, got {threads}")
    n = threads or max(1, usable_cpus() // max(1, jobs))
    os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = str(n)
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(n)
    return n


__all__ = ["DEVICE_CHOICES", "autocast", "configure_cpu_threads", "resolve_device", "usable_cpus"]
