"""``cirbench eval`` (issue 17): training-free baselines in the usual tables, and a saved run re-ranked exactly."""
import json

import torch
import torch.nn.functional as F

from cirbench.data.triplets import eval_text
from cirbench.eval.evaluation import evaluate
from cirbench.runner import Workspace
from cirbench.runs import RunSpec
from tests.helpers import run_cli


def test_zero_shot_rows_are_scored_without_training_in_both_layouts(capsys, tmp_path):
    code, out, err = run_cli(capsys, "eval", "--weights", "random", "-d", "shapes-fashioniq", "-d", "shapes-cirr",
                             "--out", tmp_path, "--no-progress")
    assert code == 0, err
    assert "Dress R@10" in out and "Rsubset@1" in out
    assert out.count("zero-shot:image") == out.count("zero-shot:text") == out.count("zero-shot:sum") == 2
    (run,) = (tmp_path / "shapes-cirr/zero-shot+sum/clean/seed0").glob("metrics.json")
    metrics = json.loads(run.read_text())
    assert metrics["epochs_run"] == 0 and metrics["config"]["epochs"] == 0

    # the sum row is CLIP4Cir's element_wise_sum of the raw frozen embeddings, ranked by the dataset's protocol
    spec = RunSpec(method="zero-shot:sum", dataset="shapes-cirr", weights="random", epochs=0)
    ws = Workspace(progress=False)
    data, images = ws.dataset(spec), ws.images(spec, tokens=False)
    val = data.split("val")
    texts = ws.texts(spec, [eval_text("cirr", t) for t in val.triplets], tokens=False)
    ref = images.features.embed[images.rows([t.reference for t in val.triplets])]
    words = texts.features.embed[texts.rows([eval_text("cirr", t) for t in val.triplets])]
    query = F.normalize(ref + words, dim=-1)
    expected = evaluate("cirr", val, query, F.normalize(images.features.embed, dim=-1), images.row).metrics
    assert metrics["best"] == expected
    assert torch.isfinite(query).all()


def test_a_saved_run_is_reranked_to_its_own_metrics(capsys, tmp_path):
    args = ["run", "-m", "clip4cir", "-d", "shapes-cirr", "--noise-rates", "0", "--epochs", "2", "--weights", "random",
            "--no-progress", "--out", tmp_path]
    assert run_cli(capsys, *args)[0] == 0
    run = tmp_path / "shapes-cirr/clip4cir/clean/seed0"
    code, out, err = run_cli(capsys, "eval", "--run", run, "--no-progress")
    assert code == 0, err
    assert "reproduces" in err and "clip4cir" in out
    best = json.loads((run / "metrics.json").read_text())["best"]
    assert f"{best['Avg']:.2f}" in out
    (run / "metrics.json").unlink()
    code, _, err = run_cli(capsys, "eval", "--run", run)
    assert code == 2 and "holds no finished run" in err


def test_epochs_zero_is_for_training_free_methods_only(capsys, tmp_path):
    code, _, err = run_cli(capsys, "run", "-m", "clip4cir", "--epochs", "0", "--out", tmp_path)
    assert code == 2 and "0 is for training-free methods: cirbench eval" in err
    from cirbench.registry import expand_methods

    assert "zero-shot" not in " ".join(expand_methods(["*"]))  # wildcards (the default grid) train
    assert expand_methods(["zero-shot:text"]) == ["zero-shot:text"]  # named, it is there
