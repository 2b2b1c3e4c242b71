"""A full disk: a run whose output folder and cache sit on a small tmpfs, filled so that the space ends
during each kind of write (the generated dataset, the feature cache, the run folder's config, noise
manifest, checkpoints, best model, predictions, history, metrics), stops with one line naming the file
and the fix, leaves no corrupt or temporary file, and finishes once space is back with the metrics of a
run that never ran out. Needs root (to mount the tmpfs); skipped with a message otherwise."""
from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
import torch

from tests.cli.test_interruption import temporaries, without_timings
from tests.helpers import run_cli


@pytest.fixture
def tmpfs(tmp_path):
    """``tmpfs(megabytes, readonly=False)`` -> the folder of a tmpfs of that size (unmounted afterwards)."""
    if os.geteuid() != 0:
        pytest.skip("the full-disk test mounts a tmpfs: run the tests as root (e.g. in a container) to include it")
    mounts = []

    def mount(megabytes: int, readonly: bool = False) -> Path:
        folder = tmp_path / f"disk{len(mounts)}"
        folder.mkdir()
        options = f"size={megabytes}m" + (",ro" if readonly else "")
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)],
                              capture_output=True, text=True)
        if done.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here ({done.stderr.strip()}); the full-disk test needs one")
        mounts.append(folder)
        return folder

    yield mount
    for folder in mounts:
        subprocess.run(["umount", "-l", str(folder)], check=False)


def used(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def fill(disk: Path, leave: int) -> Path:
    """A file taking all the space of ``disk`` but ``leave`` bytes."""
    st = os.statvfs(disk)
    filler = disk / "filler"
    with open(filler, "wb") as f:
        f.truncate(0)
        os.posix_fallocate(f.fileno(), 0, max(0, st.f_bavail * st.f_frsize - leave))
    return filler


def readable(folder: Path) -> None:
    """Every file cirbench wrote under ``folder`` parses (JSON, JSON lines, torch)."""
    for p in folder.rglob("*"):
        if p.suffix == ".json":
            json.loads(p.read_text())
        elif p.suffix == ".jsonl":
            [json.loads(line) for line in p.read_text().splitlines()]
        elif p.suffix == ".pt":
            torch.load(p, weights_only=False)


#: Each kind of write, as the start of the name of the file (or folder) written: the disk fills as it begins.
WRITES = ("shapes-cirr", "img-", "txt-", "config.json", "noise_manifest.json", "val_recall.json",
          "val_recall_subset.json", "best_model.pt", "checkpoint.pt", "history.jsonl", "metrics.json")


def test_a_full_disk_stops_cleanly_at_every_kind_of_write_and_the_rerun_finishes(capsys, tmp_path, tmpfs,
                                                                                monkeypatch):
    from cirbench import files
    from cirbench.data import shapes

    def args(root: Path) -> list:
        return ["run", "-m", "clip4cir", "-d", "shapes-cirr", "--noise-rates", "0.5", "--epochs", "2", "--batch-size",
                "16", "--weights", "random", "--no-progress", "--out", str(root / "runs"), "--cache-dir",
                str(root / "cache")]

    code, _, err = run_cli(capsys, *args(tmp_path / "roomy"))
    assert code == 0, err
    (reference,) = [p.parent for p in (tmp_path / "roomy/runs").rglob("metrics.json")]
    disk = tmpfs(8 * used(tmp_path / "roomy") // 2**20 + 16)  # mid-run checkpoints (with the optimizer) weigh more

    temporary_path = files.temporary_path
    for kind in WRITES:
        def fill_when_it_starts(path, *rest, kind=kind):
            if Path(path).name.startswith(kind) and not (disk / "filler").exists():
                fill(disk, 0)
            return temporary_path(path, *rest)

        for module in (files, shapes):  # shapes names it in its own namespace
            monkeypatch.setattr(module, "temporary_path", fill_when_it_starts)
        code, out, err = run_cli(capsys, *args(disk))
        for module in (files, shapes):
            monkeypatch.setattr(module, "temporary_path", temporary_path)
        assert code == 1 and "Traceback" not in out + err, f"{kind}: {err}"
        message = err.strip().splitlines()[-1]
        assert "No space left on device" in message and "free some space" in message, message
        assert Path(message.split(": ")[1]).name.startswith(kind), message  # names the file it could not write
        readable(disk / "runs")
        assert temporaries(disk / "runs", disk / "cache") == []

        (disk / "filler").unlink()  # space is back
        code, _, err = run_cli(capsys, *args(disk))
        assert code == 0, f"{kind}: {err}"
        (run,) = [p.parent for p in (disk / "runs").rglob("metrics.json")]
        assert without_timings(run) == without_timings(reference), kind
        subprocess.run(["rm", "-rf", str(disk / "runs"), str(disk / "cache")], check=True)


def test_the_pixel_cache_reserves_its_space_before_writing(tmp_path, tmpfs):
    """A memory-mapped cache on a full disk would die of SIGBUS at the first page it cannot back: the
    space is reserved first, so a full disk is an OSError naming the file."""
    from cirbench.backbones import build_backbone
    from cirbench.pixels import pixel_table
    from tests.helpers import write_image

    images = {f"im{i}": write_image(tmp_path / f"im{i}.png", (10 * i, 0, 0)) for i in range(40)}
    backbone = build_backbone("tiny", "random", tmp_path / "cache")
    disk = tmpfs(4)
    fill(disk, 16 * 1024)
    with pytest.raises(OSError) as raised:
        pixel_table(backbone.preprocess, sorted(images), images, disk / "cache", progress=False)
    assert raised.value.filename.startswith(str(disk / "cache" / "pixels"))
    assert temporaries(disk) == []
    (disk / "filler").unlink()
    assert len(pixel_table(backbone.preprocess, sorted(images), images, disk / "cache", progress=False).keys) == 40


@pytest.mark.parametrize("command", [
    ["run", "-m", "clip4cir", "-d", "shapes-cirr", "--noise-rates", "0", "--epochs", "1", "--weights", "random",
     "--no-progress", "--out"],
    ["data", "synth", "--layout", "cirr", "--out"],
])
def test_a_read_only_output_folder_is_one_line_with_the_fix(capsys, tmpfs, command):
    readonly = tmpfs(1, readonly=True)
    code, out, err = run_cli(capsys, *command, readonly / "out")
    assert code == 1 and "Traceback" not in out + err
    message = err.strip().splitlines()[-1]
    assert str(readonly / "out") in message and "Read-only file system" in message, message
    assert "choose another folder (--out, CIRBENCH_CACHE)" in message
