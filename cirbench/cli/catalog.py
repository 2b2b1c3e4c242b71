"""``cirbench list methods | datasets | backbones | noise``: what this install can run (methods with
their named variants, cirbench's own configurations, listed under them)."""
from __future__ import annotations

import click


@click.command("list")
@click.argument("what", type=click.Choice(["methods", "datasets", "backbones", "noise"]))
def list_(what: str):
    """List registered methods, datasets, backbones or noise types."""
    if what == "methods":
        from ..registry import get_method, list_methods

        for name in list_methods():
            cls = get_method(name)
            doc = (cls.__doc__ or "").strip().splitlines()
            tag = "[training-free: cirbench eval] " if cls.training_free else ""
            click.echo(f"{name:<16} {tag}{doc[0] if doc else ''}")
            for variant, spec in cls.variants.items():  # cirbench's configurations beside the paper's method
                click.echo(f"  {name + ':' + variant:<14} [cirbench's variant] {spec.description}")
    elif what == "datasets":
        from ..data.datasets import DATASETS

        for name, (layout, desc) in DATASETS.items():
            click.echo(f"{name:<18} [{layout}] {desc}")
    elif what == "backbones":
        from ..backbones import list_backbones

        for name, desc in list_backbones().items():
            click.echo(f"{name:<10} {desc}")
    else:
        from ..data.noise import NOISE_TYPES

        for name, kind in NOISE_TYPES.items():
            click.echo(f"{name:<10} {kind.description}")
