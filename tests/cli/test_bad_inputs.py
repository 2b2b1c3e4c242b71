"""The bad-input matrix: every mistake a user makes on the command line (options, spec files, weights,
data folders, run folders, prediction files) exits non-zero with one line that names the problem and the
fix, no traceback and no new file under the output folder; the corrected command then succeeds."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional, Sequence

import pytest

from tests.helpers import build_cirr, build_fashioniq, edit_json, run_cli

#: The corrected command of every ``run`` case: one cheap cell (bad cases add options to it; for a
#: single-value option the last one given wins, so the bad value is the one click sees).
GOOD_RUN = ("run", "-m", "clip4cir", "-d", "shapes-cirr", "--noise-rates", "0", "--epochs", "1", "--batch-size", "16",
            "--weights", "random", "--no-progress", "--out", "{out}")
#: A grid from a spec file ``{s}`` alone (no option given here overrides what the file says).
SPEC_RUN = ("run", "--spec", "{s}", "--no-progress", "--out", "{out}")


@dataclass
class Case:
    id: str
    args: Sequence[str]  # "{out}" is the output folder, "{tmp}" the test's folder, "{X}" what setup returned as X
    problem: str  # a part of the message naming what is wrong
    fix: str  # a part naming what to do
    setup: Optional[Callable[[Path], dict]] = None  # writes broken (and good) inputs; returns placeholders
    fixed: Optional[Sequence[str]] = None  # the corrected command (default: GOOD_RUN)
    code: int = 2
    env: dict = field(default_factory=dict)


def run_case(*extra: str, **kw) -> dict:
    """A ``run`` case: GOOD_RUN plus ``extra``."""
    return {"args": (*GOOD_RUN, *extra), **kw}


# ----------------------------------------------------------------------------- broken inputs

def files(**contents) -> Callable[[Path], dict]:
    """Setup writing files under the test folder: ``name=bytes|str`` -> placeholder ``{name}``."""
    def setup(tmp: Path) -> dict:
        out = {}
        for name, data in contents.items():
            path = tmp / name.replace("__", ".")
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data if isinstance(data, bytes) else data.encode())
            out[name] = str(path)
        return out
    return setup


def fiq_root(change: Optional[Callable[[Path], None]] = None, **build) -> Callable[[Path], dict]:
    """Setup: ``{bad}`` a tiny FashionIQ broken by ``change`` (or built with ``build``), ``{good}`` an intact one."""
    def setup(tmp: Path) -> dict:
        bad = build_fashioniq(tmp / "bad_fiq", **build)
        if change is not None:
            change(bad)
        return {"bad": str(bad), "good": str(build_fashioniq(tmp / "good_fiq"))}
    return setup


def cirr_root(change: Callable[[Path], None]) -> Callable[[Path], dict]:
    def setup(tmp: Path) -> dict:
        bad = build_cirr(tmp / "bad_cirr")
        change(bad)
        return {"bad": str(bad), "good": str(build_cirr(tmp / "good_cirr"))}
    return setup


def empty_folder(tmp: Path) -> dict:
    (tmp / "empty").mkdir()
    return {"empty": str(tmp / "empty"), "good": str(build_fashioniq(tmp / "good_fiq"))}


def truncate(relative: str, keep: int = 40) -> Callable[[Path], None]:
    return lambda root: (root / relative).write_bytes((root / relative).read_bytes()[:keep])


def remove(relative: str) -> Callable[[Path], None]:
    return lambda root: (root / relative).unlink()


def a_started_run(breaks: Callable[[Path], None]) -> Callable[[Path], dict]:
    """Setup: GOOD_RUN's cell trained for one epoch under ``{out}``, unfinished, then ``breaks(run folder)``."""
    def setup(tmp: Path) -> dict:
        out = tmp / "out"
        code, _, err = run_cli(None, *[a.format(out=out) for a in GOOD_RUN])
        assert code == 0, err
        (run,) = [p.parent for p in out.rglob("metrics.json")]
        (run / "metrics.json").unlink()
        breaks(run)
        return {}
    return setup


def fiq_run_and_annotations(tmp: Path) -> dict:
    """Setup: a finished FashionIQ-layout run's predictions, and annotation folders good and broken."""
    good = build_fashioniq(tmp / "ann")
    code, _, err = run_cli(None, "run", "-m", "clip4cir", "-d", "fashioniq", "--data-root", str(good), "--epochs", "1",
                           "--noise-rates", "0", "--weights", "random", "--no-progress", "--out", str(tmp / "runs"))
    assert code == 0, err
    (pred,) = (tmp / "runs").rglob("val_rankings.json")
    (tmp / "shaped").mkdir()
    (tmp / "shaped/p.json").write_text(json.dumps([1, 2, 3]))
    return {"ann": str(good), "pred": str(pred), "runs": str(tmp / "runs"), "shaped": str(tmp / "shaped/p.json")}


RANDOM_BYTES = bytes(range(256)) * 8

SCORE = ("score", "--dataset", "fashioniq", "--annotations", "{ann}", "--predictions", "{pred}")

CASES = [
    # -- run: options ------------------------------------------------------------------------
    Case("unknown-method", **run_case("-m", "nope"), problem="unknown method 'nope'", fix="cirbench list methods"),
    Case("wildcard-matching-nothing", **run_case("-m", "zz*"), problem="'zz*'", fix="cirbench list methods"),
    Case("rate-above-one", **run_case("--noise-rates", "0,1.5"), problem="got 1.5", fix="in [0, 1]"),
    Case("rate-not-a-number", **run_case("--noise-rates", "a,b"), problem="got 'a,b'", fix="comma-separated numbers"),
    Case("rate-empty", **run_case("--noise-rates", ","), problem="--noise-rates", fix="comma-separated numbers"),
    Case("noise-type", **run_case("--noise-type", "blur"), problem="'blur'", fix="mixed"),
    Case("seed-negative", **run_case("--seeds", "-1"), problem="got -1", fix="whole numbers >= 0"),
    Case("seed-not-integer", **run_case("--seeds", "a"), problem="got 'a'", fix="comma-separated integers"),
    Case("seed-fraction", **run_case("--seeds", "1.5"), problem="got '1.5'", fix="comma-separated integers"),
    Case("noise-seed-word", **run_case("--noise-seed", "x"), problem="got 'x'", fix="non-negative integer or 'same'"),
    Case("noise-seed-negative", **run_case("--noise-seed", "-2"), problem="got '-2'", fix="non-negative integer"),
    Case("epochs-zero", **run_case("--epochs", "0"), problem="got 0", fix="epochs must be a positive integer"),
    Case("epochs-negative", **run_case("--epochs", "-3"), problem="got -3", fix="epochs must be a positive integer"),
    Case("epochs-word", **run_case("--epochs", "ten"), problem="'ten'", fix="is not a valid integer"),
    Case("batch-size-one", **run_case("--batch-size", "1"), problem="got 1", fix="batch_size must be an integer >= 2"),
    Case("backbone-unknown", **run_case("--backbone", "vgg"), problem="unknown backbone 'vgg'",
         fix="cirbench list backbones"),
    Case("open-clip-arch-unknown", **run_case("--backbone", "open_clip:NoSuchNet"), problem="NoSuchNet",
         fix="open_clip"),
    Case("blip2-with-a-tag", **run_case("--backbone", "blip2"), problem="folder 'random' does not exist",
         fix="Salesforce/blip2-itm-vit-g"),
    Case("blip2-weights-missing", **run_case("--backbone", "blip2", "--weights", "{tmp}/nowhere"),
         problem="does not exist", fix="folder"),
    Case("blip2-weights-not-a-model", **run_case("--backbone", "blip2", "--weights", "{tmp}"),
         problem="has no config.json", fix="Salesforce/blip2-itm-vit-g"),
    Case("blip2-config-broken", **run_case("--backbone", "blip2", "--weights", "{tmp}"),
         setup=files(config__json='{"model_type": "blip-2", '), problem="config.json is not valid JSON",
         fix="line 1"),
    Case("weights-file-missing", **run_case("--weights", "{tmp}/missing.pt"), problem="does not exist",
         fix="pass an existing file or an open_clip tag"),
    Case("weights-tag-unknown", **run_case("--backbone", "open_clip:RN50", "--weights", "nosuchtag"),
         problem="nosuchtag", fix="open_clip.list_pretrained()"),
    Case("weights-random-bytes", **run_case("--weights", "{w}"), setup=files(w=RANDOM_BYTES),
         problem="is not a checkpoint torch can read", fix="pass an open_clip checkpoint file"),
    Case("weights-empty", **run_case("--weights", "{w}"), setup=files(w=b""), problem="it is empty",
         fix="pass an open_clip checkpoint file"),
    Case("set-unknown-key", **run_case("--set", "clip4cir.nosuch=1"), problem="no hyper-parameter 'nosuch'",
         fix="it takes: combiner"),
    Case("set-bad-value", **run_case("--set", "clip4cir.lr=abc"), problem="'abc'", fix="lr"),
    Case("set-unknown-method", **run_case("--set", "nosuch.lr=1"), problem="'nosuch'", fix="add nosuch to the methods"),
    Case("set-without-equals", **run_case("--set", "clip4cir.lr"), problem="clip4cir.lr", fix="METHOD.KEY=VALUE"),
    Case("preprocess-unknown", **run_case("--preprocess", "squash"), problem="got 'squash'",
         fix="clip (the backbone's own transform) or targetpad"),
    Case("preprocess-ratio-below-one", **run_case("--preprocess", "targetpad:0.8"), problem="'targetpad:0.8'",
         fix="RATIO >= 1"),
    Case("device-unknown", **run_case("--device", "tpu"), problem="'tpu'", fix="cpu"),
    Case("threads-zero", args=("--threads", "0", *GOOD_RUN), problem="got 0", fix="positive integer"),
    Case("out-is-a-file", **run_case("--out", "{f}"), setup=files(f="x"), problem="'--out'", fix="is a file"),
    Case("out-inside-a-file", **run_case("--out", "{f}/runs"), setup=files(f="x"), problem="{f}",
         fix="choose another path", code=1),
    # -- run: datasets and data folders --------------------------------------------------------
    Case("dataset-unknown", **run_case("-d", "imagenet"), problem="unknown dataset 'imagenet'", fix="fashioniq"),
    Case("real-dataset-without-root", **run_case("-d", "fashioniq"), problem="fashioniq", fix="--data-root"),
    Case("data-root-missing", **run_case("-d", "fashioniq", "--data-root", "{tmp}/nowhere"), problem="nowhere",
         fix="folder"),
    Case("data-root-ambiguous", **run_case("-d", "fashioniq", "-d", "cirr", "--data-root", "{tmp}"),
         problem="ambiguous", fix="--data-root fashioniq=DIR"),
    Case("data-root-empty", **run_case("-d", "fashioniq", "--data-root", "{empty}"), setup=empty_folder,
         problem="no captions/ folder", fix="<root>/captions/cap.<dress|shirt|toptee>"),
    Case("data-root-without-images", **run_case("-d", "fashioniq", "--data-root", "{bad}"),
         setup=fiq_root(images=False), problem="image", fix="images/"),
    Case("captions-truncated", **run_case("-d", "fashioniq", "--data-root", "{bad}"),
         setup=fiq_root(truncate("captions/cap.dress.train.json")), problem="cap.dress.train.json",
         fix="not valid JSON"),
    Case("captions-wrong-shape", **run_case("-d", "fashioniq", "--data-root", "{bad}"),
         setup=fiq_root(lambda r: (r / "captions/cap.shirt.train.json").write_text('{"a": 1}')),
         problem="cap.shirt.train.json", fix="list"),
    Case("caption-entry-without-target", **run_case("-d", "fashioniq", "--data-root", "{bad}"),
         setup=fiq_root(lambda r: edit_json(r / "captions/cap.toptee.val.json", lambda d: d[0].pop("target"))),
         problem="cap.toptee.val.json", fix="target"),
    Case("split-file-missing", **run_case("-d", "fashioniq", "--data-root", "{bad}"),
         setup=fiq_root(remove("image_splits/split.dress.val.json")), problem="split.dress.val.json",
         fix="FashionIQ's official layout is"),
    Case("cirr-without-train-captions", **run_case("-d", "cirr", "--data-root", "{bad}"),
         setup=cirr_root(remove("captions/cap.rc2.train.json")), problem="cap.rc2.train.json",
         fix="CIRR's official layout is"),
    Case("cirr-split-truncated", **run_case("-d", "cirr", "--data-root", "{bad}"),
         setup=cirr_root(truncate("image_splits/split.rc2.val.json")), problem="split.rc2.val.json",
         fix="not valid JSON"),
    # -- run: spec files -------------------------------------------------------------------------
    Case("spec-missing", args=(*SPEC_RUN[:2], "{tmp}/grid.yaml", *SPEC_RUN[3:]), problem="grid.yaml",
         fix="does not exist"),
    Case("spec-not-yaml", args=SPEC_RUN, setup=files(s="methods: [clip4cir\n"), problem="not valid YAML",
         fix="line 2, column 1"),
    Case("spec-unknown-key", args=SPEC_RUN, setup=files(s="epochz: 3\n"), problem="unknown key(s) epochz",
         fix="valid: backbone"),
    Case("spec-not-a-mapping", args=SPEC_RUN, setup=files(s="- clip4cir\n"), problem="{s}", fix="mapping"),
    Case("spec-epochs-word", args=SPEC_RUN, setup=files(s="epochs: ten\n"), problem="got 'ten'",
         fix="epochs must be a whole number"),
    Case("spec-seeds-words", args=SPEC_RUN, setup=files(s="seeds: [a]\n"), problem="got 'a'",
         fix="whole numbers >= 0"),
    Case("spec-methods-number", args=SPEC_RUN, setup=files(s="methods: 5\n"), problem="got [5]",
         fix="methods must be names"),
    Case("spec-rates-out-of-range", args=SPEC_RUN, setup=files(s="noise: {rates: [2]}\n"), problem="got 2",
         fix="in [0, 1]"),
    # -- run: the output folder's existing runs -------------------------------------------------
    Case("run-with-other-settings", args=(*GOOD_RUN, "--epochs", "2"), problem="holds a run with other settings",
         fix="pass --force", setup=lambda tmp: (run_cli(None, *[a.format(out=tmp / "out") for a in GOOD_RUN]), {})[1],
         fixed=(*GOOD_RUN, "--epochs", "2", "--force")),
    Case("config-truncated", args=GOOD_RUN, setup=a_started_run(truncate("config.json", 10)), problem="config.json",
         fix="pass --force", fixed=(*GOOD_RUN, "--force")),
    Case("checkpoint-random-bytes", args=GOOD_RUN,
         setup=a_started_run(lambda run: (run / "checkpoint.pt").write_bytes(RANDOM_BYTES)),
         problem="checkpoint.pt is unreadable", fix="pass --force", fixed=(*GOOD_RUN, "--force")),
    Case("checkpoint-empty", args=GOOD_RUN, setup=a_started_run(lambda run: (run / "checkpoint.pt").write_bytes(b"")),
         problem="it is empty", fix="pass --force", fixed=(*GOOD_RUN, "--force")),
    Case("checkpoint-truncated", args=GOOD_RUN, setup=a_started_run(truncate("checkpoint.pt", 3000)),
         problem="checkpoint.pt is unreadable", fix="pass --force", fixed=(*GOOD_RUN, "--force")),
    # -- reports ---------------------------------------------------------------------------------
    Case("table-folder-missing", args=("table", "{tmp}/nowhere"), problem="does not exist", fix="nowhere",
         fixed=("table", "{runs}"), setup=fiq_run_and_annotations),
    Case("table-no-runs", args=("table", "{tmp}/shaped"), problem="no finished runs",
         fix="the --out folder of `cirbench run`",
         fixed=("table", "{runs}"), setup=fiq_run_and_annotations),
    Case("table-format", args=("table", "{runs}", "--format", "docx"), problem="'docx'", fix="markdown",
         fixed=("table", "{runs}"), setup=fiq_run_and_annotations),
    Case("plot-suffix", args=("plot", "{runs}", "--out", "{tmp}/plot.txt"), problem="plot.txt", fix=".png",
         fixed=("robustness", "{runs}"), setup=fiq_run_and_annotations),
    # -- score -----------------------------------------------------------------------------------
    Case("score-annotations-missing", args=(*SCORE[:4], "{tmp}/nowhere", *SCORE[5:]), problem="does not exist",
         fix="captions/", fixed=SCORE, setup=fiq_run_and_annotations),
    Case("score-predictions-missing", args=(*SCORE[:6], "{tmp}/none.json"), problem="none.json",
         fix="does not exist", fixed=SCORE, setup=fiq_run_and_annotations),
    Case("score-predictions-not-json", args=(*SCORE[:6], "{ann}/images/dress0.png"), problem="dress0.png",
         fix="JSON", fixed=SCORE, setup=fiq_run_and_annotations),
    Case("score-predictions-wrong-shape", args=(*SCORE[:6], "{shaped}"), problem="p.json", fix="{{",
         fixed=SCORE, setup=fiq_run_and_annotations),
    Case("score-category-unknown", args=(*SCORE, "--categories", "hats"), problem="hats", fix="dress",
         fixed=SCORE, setup=fiq_run_and_annotations),
    Case("score-subset-for-fashioniq", args=(*SCORE, "--subset-predictions", "{pred}"),
         problem="--subset-predictions is for CIRR",
         fix="leave it out", fixed=SCORE, setup=fiq_run_and_annotations),
    # -- noise, data, leaderboards, submit --------------------------------------------------------
    Case("noise-rate", args=("noise", "--dataset", "fashioniq", "--annotations", "{ann}", "--rate", "3", "--out",
                             "{out}/m.json"), problem="3", fix="[0, 1]", setup=fiq_run_and_annotations,
         fixed=("noise", "--dataset", "fashioniq", "--annotations", "{ann}", "--rate", "0.3", "--out", "{out}/m.json")),
    Case("noise-annotations-missing", args=("noise", "--dataset", "cirr", "--annotations", "{tmp}/nowhere", "--rate",
                                            "0.2", "--out", "{out}/m.json"), problem="nowhere", fix="captions/",
         setup=fiq_run_and_annotations,
         fixed=("noise", "--dataset", "fashioniq", "--annotations", "{ann}", "--rate", "0.2", "--out", "{out}/m.json")),
    Case("synth-over-a-foreign-folder", args=("data", "synth", "--layout", "cirr", "--out", "{tmp}"),
         setup=files(notes__txt="mine"), problem="exists and is not empty", fix="choose a new folder",
         fixed=("data", "synth", "--layout", "cirr", "--out", "{out}/shapes")),
    Case("synth-out-is-a-file", args=("data", "synth", "--layout", "cirr", "--out", "{f}/shapes"), setup=files(f="x"),
         problem="{f}", fix="choose another path", code=1,
         fixed=("data", "synth", "--layout", "cirr", "--out", "{out}/shapes")),
    Case("leaderboard-unknown", args=("leaderboard", "run", "nosuch", "--out", "{out}"), problem="'nosuch'",
         fix="cirbench leaderboard list", fixed=GOOD_RUN),
    Case("leaderboard-preprocess", args=("leaderboard", "run", "shapes-noise", "--preprocess", "pad", "--out",
                                         "{out}"), problem="got 'pad'", fix="--preprocess must be clip"),
    Case("leaderboard-noise-seed", args=("leaderboard", "run", "shapes-noise", "--noise-seed", "-2", "--out", "{out}"),
         problem="got '-2'", fix="non-negative integer"),
    Case("leaderboard-set", args=("leaderboard", "run", "shapes-noise", "--set", "clip4cir.nosuch=1", "--out",
                                  "{out}"), problem="no hyper-parameter 'nosuch'", fix="it takes: combiner"),
    Case("submit-not-a-run", args=("submit", "cirr", "--run", "{tmp}", "--out", "{out}/sub"),
         problem="no config.json", fix="runs/shapes-cirr/clip4cir/clean/seed0"),
    Case("submit-a-fashioniq-run", args=("submit", "cirr", "--run", "{run}", "--out", "{out}/sub"),
         setup=lambda tmp: {**fiq_run_and_annotations(tmp),
                            "run": str(next((tmp / "runs").rglob("config.json")).parent)},
         problem="is a fashioniq run", fix="only CIRR has a test server"),
    Case("list-unknown", args=("list", "models"), problem="'models'", fix="methods", fixed=("list", "methods")),
]


def files_under(folder: Path) -> set:
    return {p for p in folder.rglob("*") if p.is_file()} if folder.exists() else set()


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_a_bad_input_is_one_clear_line_and_writes_nothing(capsys, tmp_path, case):
    places = {"tmp": str(tmp_path), "out": str(tmp_path / "out")}
    if case.setup is not None:
        places.update(case.setup(tmp_path))
    capsys.readouterr()
    fill = lambda args: [str(a).format(**places) for a in args]  # noqa: E731
    before = files_under(tmp_path / "out")

    code, out, err = run_cli(capsys, *fill(case.args))
    assert code == case.code, err
    assert "Traceback" not in out + err
    message = err.strip().splitlines()[-1]
    for part in (case.problem, case.fix):
        assert part.format(**places) in message, message
    assert files_under(tmp_path / "out") == before

    code, out, err = run_cli(capsys, *fill(case.fixed or GOOD_RUN))
    assert code == 0, err


def test_the_matrix_is_large():
    assert len(CASES) >= 60 and len({c.id for c in CASES}) == len(CASES)
