"""`cirbench submit cirr`: the two test-server files, held to the structure of the official demo files."""
import copy
import json

import pytest
import torch

from cirbench.data.datasets import shapes_root
from cirbench.data.loaders import load_cirr
from cirbench.errors import ConfigError, DataError
from cirbench.eval.evaluation import evaluate
from cirbench.eval.submit import (
    FILES,
    MAX_BYTES,
    build_submission,
    check_submission,
    encode,
    rank_run,
    submit_cirr,
)
from cirbench.runner import Workspace, execute
from cirbench.runs import RunSpec
from tests.helpers import run_cli as cirbench


@pytest.fixture(scope="module")
def real_test1(real_annotations):
    return load_cirr(real_annotations / "cirr", splits="test1", require_images=False).split("test1")


@pytest.fixture(scope="module")
def demo(real_annotations):
    folder = real_annotations / "cirr" / "demo_submission"
    files = {m: json.loads((folder / name).read_text()) for m, name in FILES.items()}
    sizes = {m: (folder / name).stat().st_size for m, name in FILES.items()}
    return files, sizes


def test_the_official_demo_files_pass_the_checker(real_test1, demo):
    files, sizes = demo
    assert len(real_test1.triplets) == 4148
    check_submission(files, real_test1, sizes)
    assert {k for k in files["recall"] if k.isdigit()} == {t.qid for t in real_test1.triplets}


def _mutate(files, metric, key, value):
    out = {m: dict(obj) for m, obj in files.items()}
    if value is None:
        del out[metric][key]
    else:
        out[metric][key] = value
    return out


def test_the_checker_rejects_what_the_server_would(real_test1, demo):
    files, _ = demo
    t = real_test1.triplets[0]
    top = files["recall"][t.qid]
    sub = files["recall_subset"][t.qid]
    others = [m for m in t.members if m != t.reference and m not in sub]
    cases = [
        (_mutate(files, "recall", t.qid, None), "have no ranking"),
        (_mutate(files, "recall", "99999999", top), "unknown query id"),
        (_mutate(files, "recall", "metric", "recall_subset"), "\"metric\" is 'recall_subset'"),
        (_mutate(files, "recall_subset", "version", "rc1"), "\"version\" is 'rc1'"),
        (_mutate(files, "recall", "version", None), 'missing "version"'),
        (_mutate(files, "recall", t.qid, top[:49]), "exactly 50"),
        (_mutate(files, "recall", t.qid, top + [x for x in real_test1.gallery["cirr"] if x not in top][:1]),
         "exactly 50"),
        (_mutate(files, "recall", t.qid, top[:49] + top[:1]), "listed twice"),
        (_mutate(files, "recall", t.qid, [t.reference] + top[:49]), "ranks its own reference"),
        (_mutate(files, "recall", t.qid, top[:49] + ["dev-0-0-img0"]), "not in the cirr gallery"),
        (_mutate(files, "recall_subset", t.qid, [t.reference] + sub[:2]), "is the query's reference"),
        (_mutate(files, "recall_subset", t.qid, sub + others[:1]), "exactly 3"),
        (_mutate(files, "recall_subset", t.qid, sub[:1] + ["test1-0-0-img0"] + sub[2:]), "not in the query's img_set"),
    ]
    for bad, message in cases:
        with pytest.raises(DataError, match=message.replace("(", r"\(")):
            check_submission(bad, real_test1)
    with pytest.raises(DataError, match="bytes"):
        check_submission(files, real_test1, {"recall": MAX_BYTES + 1})
    with pytest.raises(DataError, match="two files"):
        check_submission({"recall": files["recall"]}, real_test1)


def test_a_submission_from_random_embeddings_over_real_test1(real_test1, demo, tmp_path):
    gallery = real_test1.gallery["cirr"]
    index = {g: i for i, g in enumerate(gallery)}
    gen = torch.Generator().manual_seed(0)
    images = torch.randn(len(gallery), 32, generator=gen)
    queries = torch.randn(len(real_test1.triplets), 32, generator=gen)
    result = evaluate("cirr", real_test1, queries, images, index)
    assert result.metrics == {}  # test1 has no targets: rankings only
    files = build_submission(real_test1, result.rankings, result.subset_rankings)
    check_submission(files, real_test1)
    assert set(files["recall"]) == set(demo[0]["recall"])
    assert set(files["recall_subset"]) == set(demo[0]["recall_subset"])
    assert len(encode(files["recall"])) < MAX_BYTES
    # the subset ranking follows the scores: its first name is the best-scored member
    t = real_test1.triplets[0]
    members = [m for m in t.members if m != t.reference]
    scores = {m: float(torch.nn.functional.normalize(images[index[m]], dim=0)
                       @ torch.nn.functional.normalize(queries[0], dim=0)) for m in members}
    assert files["recall_subset"][t.qid] == sorted(members, key=scores.get, reverse=True)[:3]


# ---------------------------------------------------------------- end to end on shapes-cirr

@pytest.fixture(scope="module")
def cirr_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs")
    spec = RunSpec(method="clip4cir", dataset="shapes-cirr", weights="random", epochs=2, batch_size=32)
    metrics = execute(spec, out, Workspace(progress=False))
    return out / spec.dirname(), metrics


def test_the_rebuilt_model_reproduces_the_runs_val_rankings(cirr_run):
    run, metrics = cirr_run
    split, result = rank_run(run, "val")
    saved = json.loads((run / "predictions/val_recall.json").read_text())
    saved_subset = json.loads((run / "predictions/val_recall_subset.json").read_text())
    assert {"version": "rc2", "metric": "recall", **result.rankings} == saved
    assert {"version": "rc2", "metric": "recall_subset", **result.subset_rankings} == saved_subset
    assert result.metrics == metrics["best"]


def test_cirbench_score_rescores_the_saved_val_rankings_exactly(capsys, cirr_run):
    run, metrics = cirr_run
    code, out, err = cirbench(capsys, "score", "--dataset", "cirr", "--annotations", shapes_root("cirr"),
                              "--predictions", run / "predictions/val_recall.json",
                              "--subset-predictions", run / "predictions/val_recall_subset.json", "--json")
    assert code == 0, err
    assert json.loads(out) == metrics["best"]  # exactly


def test_submit_writes_two_checked_files(capsys, cirr_run, tmp_path):
    run, _ = cirr_run
    out = tmp_path / "submission"
    code, stdout, err = cirbench(capsys, "submit", "cirr", "--run", run, "--out", out, "--device", "cpu")
    assert code == 0, err
    assert "test1_pred_ranks_recall.json" in stdout and "bytes" in stdout
    test1 = load_cirr(shapes_root("cirr"), splits="test1", require_images=False).split("test1")
    files = {m: json.loads((out / name).read_text()) for m, name in FILES.items()}
    check_submission(files, test1)
    depth = min(50, len(test1.gallery["cirr"]) - 1)
    assert all(len(files["recall"][t.qid]) == depth for t in test1.triplets)
    assert files["recall"]["version"] == "rc2" and files["recall_subset"]["metric"] == "recall_subset"


def test_submit_errors(capsys, tmp_path, cirr_run):
    run, _ = cirr_run
    with pytest.raises(DataError, match="no config.json"):
        submit_cirr(tmp_path, tmp_path / "out")
    no_model = tmp_path / "no_model"
    no_model.mkdir()
    (no_model / "config.json").write_text((run / "config.json").read_text())
    code, _, err = cirbench(capsys, "submit", "cirr", "--run", no_model, "--out", tmp_path / "out")
    assert code == 2 and "no best_model.pt" in err
    fiq = tmp_path / "fiq"
    fiq.mkdir()
    config = json.loads((run / "config.json").read_text())
    (fiq / "config.json").write_text(json.dumps({**config, "dataset": "shapes-fashioniq", "layout": "fashioniq"}))
    (fiq / "best_model.pt").write_bytes((run / "best_model.pt").read_bytes())
    with pytest.raises(ConfigError, match="only CIRR has a test server"):
        submit_cirr(fiq, tmp_path / "out")
    broken = copy.deepcopy(config)
    broken["mystery"] = 1
    (no_model / "config.json").write_text(json.dumps(broken))
    (no_model / "best_model.pt").write_bytes(b"")
    with pytest.raises(DataError, match="mystery"):
        submit_cirr(no_model, tmp_path / "out")


def test_weights_load_with_buffers_sized_by_the_training_data(tmp_path):
    from cirbench.eval.submit import load_weights
    from cirbench.registry import get_method
    from cirbench.types import Dims

    cls = get_method("clip4cir")
    trained = cls(Dims(embed=8), cls.make_hparams())
    trained.register_buffer("clean_prob", torch.rand(5))  # per-triplet state, grown during training
    torch.save(trained.state_dict(), tmp_path / "best_model.pt")
    fresh = cls(Dims(embed=8), cls.make_hparams())
    fresh.register_buffer("clean_prob", torch.zeros(0))
    load_weights(fresh, tmp_path / "best_model.pt", "clip4cir")
    for (k, a), b in zip(trained.state_dict().items(), fresh.state_dict().values()):
        assert torch.equal(a, b), k
    (tmp_path / "bad.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(DataError, match="cannot read"):
        load_weights(fresh, tmp_path / "bad.pt", "clip4cir")
    smaller = cls(Dims(embed=4), cls.make_hparams())
    with pytest.raises(DataError, match="does not fit"):
        load_weights(smaller, tmp_path / "best_model.pt", "clip4cir")
