"""End to end: a grid cell trains, evaluates, saves, resumes and is skipped once finished."""
import json

import pytest
import torch

from cirbench import training
from cirbench.data.datasets import load
from cirbench.data.noise import load_manifest
from cirbench.errors import ConfigError
from cirbench.eval.evaluation import score_cirr, score_fashioniq
from cirbench.registry import get_method
from cirbench.report.tables import build_tables
from cirbench.runner import Workspace, execute, run_grid
from cirbench.runs import RunDir, RunSpec, read_runs


def spec(**kw):
    base = dict(method="clip4cir", dataset="shapes-fashioniq", noise_rate=0.5, weights="random", epochs=3,
                batch_size=32)
    base.update(kw)
    return RunSpec(**base)


@pytest.fixture(scope="module")
def ws():
    return Workspace(progress=False)


@pytest.mark.parametrize("dataset", ["shapes-fashioniq", "shapes-cirr"])
def test_a_run_writes_everything_a_researcher_needs(tmp_path, ws, dataset):
    s = spec(dataset=dataset)
    metrics = execute(s, tmp_path, ws)
    run = tmp_path / s.dirname()
    assert metrics["status"] == "finished" and RunDir(run).finished
    assert json.loads((run / "metrics.json").read_text()) == metrics
    keys = ({"dress", "shirt", "toptee", "average"} if dataset == "shapes-fashioniq"
            else {"R@1", "R@5", "R@10", "R@50", "Rsubset@1", "Rsubset@2", "Rsubset@3", "Avg"})
    assert set(metrics["best"]) == keys and set(metrics["last"]) == keys
    assert metrics["protocol"]["split"] == "val"
    assert metrics["protocol"]["reference_in_gallery"] == (dataset == "shapes-fashioniq")
    prov = metrics["provenance"]
    assert {"cirbench", "git_commit", "torch", "python", "device", "wall_seconds", "timestamp"} <= set(prov)
    assert prov["device"].startswith("cpu")
    assert json.loads((run / "config.json").read_text())["noise"] == {"type": "mixed", "rate": 0.5, "seed": 0}
    history = [json.loads(x) for x in (run / "history.jsonl").read_text().splitlines()]
    assert [h["epoch"] for h in history] == [1, 2, 3]
    assert metrics["best"] == history[metrics["best_epoch"] - 1]["metrics"]
    assert metrics["last"] == history[-1]["metrics"]

    manifest = load_manifest(run / "noise_manifest.json")
    data = load(dataset)
    assert manifest["n_triplets"] == len(data.split("train").triplets)
    assert manifest["n_noisy"] == round(0.5 * manifest["n_triplets"])
    assert metrics["noise"]["realised_rate"] == manifest["realised_rate"]

    # the saved val rankings re-score to exactly the run's best metrics
    val = data.split("val").triplets
    if dataset == "shapes-fashioniq":
        rescored = score_fashioniq(val, json.loads((run / "predictions/val_rankings.json").read_text()))
    else:
        main = json.loads((run / "predictions/val_recall.json").read_text())
        sub = json.loads((run / "predictions/val_recall_subset.json").read_text())
        assert main.pop("version") == "rc2" and main.pop("metric") == "recall"
        assert sub.pop("metric") == "recall_subset" and sub.pop("version") == "rc2"
        rescored = score_cirr(val, main, sub)
    assert rescored == metrics["best"]


def test_the_baseline_learns_and_noise_hurts(tmp_path, ws):
    clean = execute(spec(noise_rate=0.0, epochs=6), tmp_path, ws)["best"]["average"]["R@10"]
    noisy = execute(spec(noise_rate=0.8, epochs=6), tmp_path, ws)["best"]["average"]["R@10"]
    chance = 100 * 10 / 60  # small galleries here: about 60 images per category
    assert clean > 2 * chance
    assert noisy < clean


def test_same_seed_same_numbers_other_seed_other_numbers(tmp_path, ws):
    a = execute(spec(), tmp_path / "a", ws)
    b = execute(spec(), tmp_path / "b", ws)
    c = execute(spec(seed=1), tmp_path / "c", ws)
    assert a["best"] == b["best"] and a["last"] == b["last"]
    assert c["last"] != a["last"]


def test_an_interrupted_run_resumes_to_the_same_result(tmp_path, ws, monkeypatch):
    whole = execute(spec(), tmp_path / "whole", ws)
    cls = get_method("clip4cir")
    original = cls.on_epoch_start
    calls = []

    def crash_at_third_epoch(self, ctx):
        calls.append(ctx.epoch)
        if ctx.epoch == 2 and calls.count(2) == 1:
            raise KeyboardInterrupt
        return original(self, ctx)

    monkeypatch.setattr(cls, "on_epoch_start", crash_at_third_epoch)
    with pytest.raises(KeyboardInterrupt):
        execute(spec(), tmp_path / "cut", ws)
    run = tmp_path / "cut" / spec().dirname()
    assert not RunDir(run).finished and (run / "checkpoint.pt").exists()
    assert torch.load(run / "checkpoint.pt", weights_only=False)["epoch"] == 2
    resumed = execute(spec(), tmp_path / "cut", ws)
    assert calls == [0, 1, 2, 2]  # epochs 0 and 1 were not trained again
    assert resumed["best"] == whole["best"] and resumed["last"] == whole["last"]
    assert len((run / "history.jsonl").read_text().splitlines()) == 3


def test_finished_cells_are_skipped_and_changed_settings_refused(tmp_path, ws, monkeypatch):
    first = execute(spec(), tmp_path, ws)
    monkeypatch.setattr(training, "fit", lambda *a, **k: pytest.fail("a finished cell was trained again"))
    monkeypatch.setattr("cirbench.runner.fit", lambda *a, **k: pytest.fail("a finished cell was trained again"))
    assert execute(spec(), tmp_path, ws) == first
    monkeypatch.undo()
    with pytest.raises(ConfigError, match=r"other settings \(epochs: 3 -> 4\).*--force"):
        execute(spec(epochs=4), tmp_path, ws)
    again = execute(spec(epochs=4), tmp_path, ws, force=True)
    assert again["epochs_run"] == 4


@pytest.mark.parametrize("layout", ["fashioniq", "cirr"])
def test_real_layout_folders_with_missing_images_run(tmp_path, ws, make_fashioniq, make_cirr, caplog, layout):
    if layout == "fashioniq":
        root = make_fashioniq(missing=["dress1", "shirt8"])  # a train target and a val reference
    else:
        root = make_cirr(layout="nested", missing=["train-1-0-img0"])
    s = spec(dataset=layout, data_root=str(root), noise_rate=0.5, epochs=1, batch_size=4)
    with caplog.at_level("INFO", logger="cirbench"):
        metrics = execute(s, tmp_path, ws)
    assert metrics["status"] == "finished"
    assert sum("missing" in r.getMessage() for r in caplog.records if r.levelname == "WARNING") == 1
    # issue 18 item 3: the noise is counted among the triplets trained on
    trained = 8 if layout == "fashioniq" else 1
    (noise_line,) = [r.getMessage() for r in caplog.records if "label noise" in r.getMessage()]
    assert f"of the {trained} training triplets corrupted, realised rate" in noise_line
    assert f"({trained + 1} annotated, the others lack images)" in noise_line
    manifest = load_manifest(tmp_path / s.dirname() / "noise_manifest.json")
    assert manifest["n_triplets"] == (9 if layout == "fashioniq" else 2)  # drawn on the annotations, as `cirbench noise`
    # issue 18 item 3: the tables say how much of the val split was scored
    protocol = metrics["protocol"]
    if layout == "fashioniq":  # shirt8 is a val reference: 5 of the 6 val queries are scored
        assert (protocol["n_queries"], protocol["n_annotated_queries"]) == (5, 6)
        (table,) = build_tables(read_runs(tmp_path)).values()
        assert "; 5 of 6 queries;" in table.title and table.title.endswith("; 1 seed")
    else:  # the missing image is a train one: every val query is scored
        assert "n_annotated_queries" not in protocol


def test_text_side_features_reach_compose_in_training_and_validation(tmp_path, ws):
    from cirbench.method import Method
    from cirbench.registry import register_method

    seen = []

    @register_method("test-side-features")
    class WordCounter(Method):
        def __init__(self, dims, hparams=None):
            super().__init__(dims, hparams)
            self.scale = torch.nn.Parameter(torch.ones(()))

        def text_side_features(self, texts):
            return torch.tensor([[float(len(t.split()))] for t in texts])

        def compose(self, reference, text):
            seen.append(text.extra)
            return self.scale * (reference.embed + text.embed)

    execute(spec(method="test-side-features", epochs=1, noise_rate=0.0), tmp_path, ws)
    assert seen and all(x is not None and x.shape[1] == 1 for x in seen)
    assert all((x >= 1).all() for x in seen)


def test_ncl_cir_runs_on_a_resnet_clip_with_token_features(tmp_path, ws):
    """NCL-CIR (needs_tokens) over an open_clip ResNet tower, as CLIP4Cir's RN50x4 (a tiny one here)."""
    import open_clip

    config = {"embed_dim": 24, "vision_cfg": {"image_size": 64, "layers": [1, 1, 1, 1], "width": 8, "head_width": 16},
              "text_cfg": {"context_length": 24, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1}}
    (tmp_path / "cirbench-runner-rn.json").write_text(json.dumps(config))
    open_clip.add_model_config(tmp_path)
    s = spec(method="ncl-cir", dataset="shapes-cirr", backbone="open_clip:cirbench-runner-rn", weights=None,
             epochs=1, train_limit=200)
    metrics = execute(s, tmp_path / "runs", ws)
    assert metrics["status"] == "finished" and metrics["config"]["backbone"] == "open_clip:cirbench-runner-rn"
    images = ws.images(s, tokens=True)
    assert images.features.tokens.shape[1:] == (1 + 4, 24)  # global + the 2 x 2 attention-pool grid


def test_the_preprocessing_choice_reaches_the_backbone_features_and_metrics(tmp_path, ws):
    padded = spec(noise_rate=0.0, epochs=1, preprocess="targetpad:1.5")
    metrics = execute(padded, tmp_path, ws)
    assert metrics["config"]["preprocess"] == "targetpad:1.5"
    assert json.loads((tmp_path / padded.dirname() / "config.json").read_text())["preprocess"] == "targetpad:1.5"
    assert "TargetPad(target_ratio=1.5)" in repr(ws.backbone(padded).preprocess)
    assert "TargetPad" not in repr(ws.backbone(spec()).preprocess)
    # the same folder asked for with the default preprocessing is another setting
    with pytest.raises(ConfigError, match=r"preprocess: 'targetpad:1.5' -> None"):
        execute(spec(noise_rate=0.0, epochs=1), tmp_path, ws)


def test_bad_settings_write_nothing_and_the_corrected_command_runs(tmp_path, ws):
    """Validation comes before the first byte: a bad hyper-parameter or weights file leaves no folder behind,
    and a folder that holds only a config (an earlier failure) never blocks the corrected command."""
    bad = spec(hparams={"nosuch": 1}, epochs=1)
    with pytest.raises(ConfigError, match="no hyper-parameter 'nosuch'"):
        execute(bad, tmp_path, ws)
    with pytest.raises(ConfigError, match="does not exist"):
        execute(spec(weights=str(tmp_path / "missing.pt"), epochs=1), tmp_path, ws)
    assert not list(tmp_path.rglob("config.json"))
    good = spec(epochs=1)
    folder = RunDir(tmp_path / good.dirname())
    folder.path.mkdir(parents=True)
    folder.config_file.write_text(json.dumps({**good.to_config(), "epochs": 7}))  # a config, nothing trained
    assert execute(good, tmp_path, ws)["status"] == "finished"
    folder.config_file.write_text('{"method": "clip')  # truncated, over a started run
    with pytest.raises(ConfigError, match="unreadable.*--force"):
        execute(good, tmp_path, ws)
    assert execute(good, tmp_path, ws, force=True)["status"] == "finished"


@pytest.mark.parametrize("keep, kept", [("best", {"best_model.pt"}), ("none", set())])
def test_keep_drops_the_weights_of_finished_cells_and_they_are_still_reused(tmp_path, ws, keep, kept):
    """Issue 18 item 9: --keep best|none; the finished cell is reused, its results untouched."""
    s = spec(epochs=2)
    metrics = execute(s, tmp_path, ws, keep=keep)
    run = tmp_path / s.dirname()
    assert {p.name for p in run.glob("*.pt")} == kept
    assert {"metrics.json", "history.jsonl", "config.json", "predictions"} <= {p.name for p in run.iterdir()}
    assert execute(s, tmp_path, ws, keep=keep) == metrics
    with pytest.raises(ConfigError, match="keep must be one of checkpoints, best, none"):
        run_grid([s], tmp_path, ws, keep="all")


def test_log_tensorboard_writes_every_epoch_of_a_cell_as_scalars(tmp_path, ws):
    """Issue 18 item 7: one TensorBoard run per cell, named like its folder, with each history row's numbers."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    s = spec(method="ncl-cir", epochs=3, hparams={"warmup": 1})
    execute(s, tmp_path, ws, log="tensorboard")
    events = EventAccumulator(str(tmp_path / "tensorboard" / s.dirname()))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert {"loss", "selection", "metrics/average/R@10", "noise_detection/auroc", "filter_selected"} <= tags
    history = [json.loads(x) for x in (tmp_path / s.dirname() / "history.jsonl").read_text().splitlines()]
    assert [e.step for e in events.Scalars("loss")] == [1, 2, 3]
    assert [e.value for e in events.Scalars("loss")] == pytest.approx([h["loss"] for h in history])
    with pytest.raises(ConfigError, match="--log must be one of none, tensorboard"):
        run_grid([s], tmp_path, ws, log="wandb")
