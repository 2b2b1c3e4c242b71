"""Dataset commands: ``cirbench data synth``, ``cirbench data check`` and ``cirbench noise``."""
from __future__ import annotations

import sys
import time
from pathlib import Path

import click

from ..errors import ConfigError
from .options import noise_type_option

LAYOUTS = click.Choice(["fashioniq", "cirr"])


@click.group()
def data():
    """Generate or inspect datasets."""


@data.command("synth")
@click.option("--layout", type=LAYOUTS, required=True)
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True)
@click.option("--seed", type=int, default=0, show_default=True)
def synth(layout: str, out: Path, seed: int):
    """Write the generated shapes dataset in an official layout (PNGs + JSON + metadata)."""
    from ..data import shapes

    if out.exists() and any(out.iterdir()):
        raise ConfigError(f"{out} exists and is not empty; choose a new folder")
    t = time.time()
    shapes.generate(layout, out, seed=seed)
    click.echo(f"wrote the shapes dataset ({layout} layout, seed {seed}) to {out} in {time.time() - t:.1f}s")


@data.command("check")
@click.option("--dataset", type=LAYOUTS, required=True)
@click.option("--root", type=click.Path(path_type=Path), required=True, help="The dataset folder.")
@click.option("--no-images", is_flag=True, help="Check the annotation files only.")
def check(dataset: str, root: Path, no_images: bool):
    """Report expected files, triplet and image counts, and missing images; exit 1 if unusable."""
    from ..data.check import check as check_folder

    report = check_folder(dataset, root, images=not no_images)
    click.echo(report.render())
    if not report.ok:
        sys.exit(1)


@click.command()
@click.option("--dataset", type=LAYOUTS, required=True, help="Annotation layout.")
@click.option("--annotations", type=click.Path(path_type=Path), required=True,
              help="Dataset folder with captions/ and image_splits/ (no images needed).")
@click.option("--rate", type=float, required=True, help="Fraction of training triplets to corrupt, in [0, 1].")
@noise_type_option("--type", default="mixed", help="How the chosen triplets are corrupted (`cirbench list noise`).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), required=True)
@click.option("--export-annotations", "export_dir", type=click.Path(file_okay=False, path_type=Path),
              help="Also write the annotation folder with the noisy training captions, in the official layout, "
                   "for other code (CLIP4Cir, SPRC, HABIT) to train on exactly this noise.")
def noise(dataset: str, annotations: Path, rate: float, noise_type: str, seed: int, out: Path, export_dir):
    """Write a noise manifest for the training split, from annotation files alone."""
    from ..data.export import export_noisy_annotations
    from ..data.noise import manifest_from_annotations, save_manifest

    manifest = manifest_from_annotations(dataset, annotations, rate, noise_type, seed)
    written = None
    if export_dir is not None:  # first: it refuses a folder that is not empty before anything is written
        written = export_noisy_annotations(dataset, annotations, manifest, export_dir)
    save_manifest(manifest, out)
    click.echo(f"{manifest['n_noisy']} of {manifest['n_triplets']} training triplets corrupted "
               f"({noise_type}, realised rate {manifest['realised_rate']:.4f}, seed {seed}) -> {out}")
    if written is not None:
        click.echo(f"noisy annotations -> {export_dir} ({', '.join(p.name for p in written)})")
