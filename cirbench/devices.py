"""Which device to run on, and the mixed precision cirbench uses there (bf16 on CUDA, fp32 elsewhere)."""
from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING

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


__all__ = ["DEVICE_CHOICES", "autocast", "resolve_device"]
