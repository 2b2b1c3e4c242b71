"""``--log tensorboard``: each cell's per-epoch history (losses, metrics, noise-detection scores, the
methods' own logged values) as TensorBoard scalars, one TensorBoard run per cell under
``<out>/tensorboard/<the cell's folder>``, so ``tensorboard --logdir <out>/tensorboard`` names runs like
their folders. Needs the optional ``tensorboard`` package (``pip install 'cirbench[tensorboard]'``)."""
from __future__ import annotations

from pathlib import Path
from typing import Iterator, Tuple

from ..errors import ConfigError

LOGS = ("none", "tensorboard")


def check_log(log: str) -> None:
    """A ConfigError before anything trains when ``log`` is unknown or its package is missing."""
    if log not in LOGS:
        raise ConfigError(f"--log must be one of {', '.join(LOGS)}, got {log!r}")
    if log == "tensorboard":
        try:
            import tensorboard  # noqa: F401
        except ImportError:
            raise ConfigError("--log tensorboard needs the tensorboard package: "
                              "pip install 'cirbench[tensorboard]' (or pip install tensorboard)") from None


def scalars(row: dict, prefix: str = "") -> Iterator[Tuple[str, float]]:
    """The numeric leaves of a history row as (tag, value): ``loss``, ``metrics/average/R@10``, ..."""
    for key, value in row.items():
        tag = f"{prefix}{key}"
        if isinstance(value, dict):
            yield from scalars(value, f"{tag}/")
        elif isinstance(value, (int, float)) and not isinstance(value, bool) and key != "epoch":
            yield tag, float(value)


class TensorBoardLog:
    """Writes the history rows of one cell; ``step`` is the row's position in the whole history."""

    def __init__(self, log_dir: Path):
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(str(log_dir))

    def write(self, row: dict, step: int) -> None:
        for tag, value in scalars(row):
            self.writer.add_scalar(tag, value, step)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


__all__ = ["LOGS", "TensorBoardLog", "check_log", "scalars"]
