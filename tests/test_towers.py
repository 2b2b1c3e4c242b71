"""Fine-tuning backbone towers in the one training loop (CLIP4Cir's stage 1 as the example): gradients
reach exactly the declared towers, frozen weights stay bit-identical, the gallery is re-embedded by the
trained towers, runs resume mid-stage, and a saved run ranks with its fine-tuned towers."""
import json

import pytest
import torch

from cirbench.data.datasets import shapes_root
from cirbench.data.loaders import load_cirr
from cirbench.errors import ConfigError
from cirbench.eval.predictions import score_file
from cirbench.eval.submit import FILES, check_submission, rank_run, submit_cirr
from cirbench.runner import Workspace, _CellTraining, execute
from cirbench.runs import RunDir, RunSpec
from cirbench.training import TrainConfig, TrainContext
from cirbench.types import Dims, Stage
from cirbench_methods.clip4cir import Clip4Cir


def spec(finetune="both", dataset="shapes-cirr", **kw):
    hparams = {"finetune": finetune, "finetune_epochs": 2, "finetune_lr": 1e-4, **kw.pop("hparams", {})}
    return RunSpec(method="clip4cir", dataset=dataset, weights="random", epochs=1, batch_size=16, hparams=hparams,
                   **kw)


@pytest.fixture(scope="module")
def ws():
    return Workspace(progress=False)


def _state(module):
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


@pytest.mark.parametrize("finetune,towers", [("text", {"text"}), ("image", {"image"}), ("both", {"image", "text"})])
def test_gradients_reach_exactly_the_declared_towers(tmp_path, ws, finetune, towers):
    s = spec(finetune)
    cell = _CellTraining(s, RunDir(tmp_path / s.dirname()), ws)
    method, helper = cell.built.method, cell.towers
    assert helper.towers == towers and method.backbone is not ws.backbone(s)  # the cell's own copy
    stage = method.stages(s.epochs)[0]
    assert set(stage.trains) == towers
    helper.start_stage(stage)
    ctx = TrainContext(cell.train, TrainConfig(), torch.device("cpu"), stage=stage.name)
    batch = next(cell.train.batches(8, torch.Generator().manual_seed(0), towers=helper))
    stage.loss(batch, ctx).backward()
    backbone = method.backbone
    declared = {id(p) for t in towers for p in backbone.tower_parameters(t)}
    for name, p in backbone.named_parameters():
        assert (p.grad is not None) == (id(p) in declared), name
    assert all(p.grad is None for p in method.combiner.parameters())  # stage 1 trains the towers only
    # the Combiner stage trains the Combiner, towers frozen
    helper.start_stage(method.stages(s.epochs)[1])
    assert not any(p.requires_grad for p in backbone.parameters())


def test_frozen_weights_stay_bit_identical_and_the_shared_backbone_untouched(tmp_path, ws):
    s = spec("text")
    shared = ws.backbone(s)
    before = _state(shared)
    execute(s, tmp_path, ws)
    saved = torch.load(RunDir(tmp_path / s.dirname()).checkpoint_file, weights_only=False)["method"]
    for key, value in before.items():
        assert torch.equal(shared.state_dict()[key], value), key  # the workspace's backbone never trains
        tuned = saved[f"backbone.{key}"]
        if key.startswith("model.visual.") or key == "model.logit_scale":
            assert torch.equal(tuned, value), key  # frozen: bit-identical
    text_keys = [k for k in before if k.startswith(("model.transformer.", "model.token_embedding"))]
    assert any(not torch.equal(saved[f"backbone.{k}"], before[k]) for k in text_keys)  # the text tower trained


@pytest.mark.parametrize("dataset", ["shapes-cirr", "shapes-fashioniq"])
def test_a_saved_fine_tuned_run_ranks_with_its_trained_towers(tmp_path, ws, dataset):
    s = spec("both", dataset=dataset)
    metrics = execute(s, tmp_path, ws)
    run = tmp_path / s.dirname()
    history = [json.loads(line) for line in (run / "history.jsonl").read_text().splitlines()]
    assert [row["stage"] for row in history] == ["finetune", "finetune", "main"]
    split, result = rank_run(run, "val", Workspace(progress=False))
    assert result.metrics == metrics["best"]  # gallery and texts re-embedded by the saved towers
    if dataset == "shapes-cirr":  # the CIRR server files and `cirbench score` from the fine-tuned run
        out = tmp_path / "submission"
        submit_cirr(run, out, Workspace(progress=False))
        test1 = load_cirr(shapes_root("cirr"), splits="test1", require_images=False).split("test1")
        check_submission({m: json.loads((out / name).read_text()) for m, name in FILES.items()}, test1)
        scored = score_file("cirr", shapes_root("cirr"), "val", run / "predictions/val_recall.json",
                            run / "predictions/val_recall_subset.json")
        assert scored.metrics == metrics["best"]


def test_a_run_killed_in_stage_one_resumes_to_the_same_result(tmp_path, ws, monkeypatch):
    whole = execute(spec("both"), tmp_path / "whole", ws)
    original = Clip4Cir.on_epoch_start
    calls = []

    def crash_in_stage_one(self, ctx):
        calls.append((ctx.stage, ctx.epoch))
        if (ctx.stage, ctx.epoch) == ("finetune", 1) and calls.count(("finetune", 1)) == 1:
            raise KeyboardInterrupt
        return original(self, ctx)

    monkeypatch.setattr(Clip4Cir, "on_epoch_start", crash_in_stage_one)
    with pytest.raises(KeyboardInterrupt):
        execute(spec("both"), tmp_path / "cut", ws)
    resumed = execute(spec("both"), tmp_path / "cut", ws)
    assert calls == [("finetune", 0), ("finetune", 1), ("finetune", 1), ("main", 0)]
    assert resumed["best"] == whole["best"] and resumed["last"] == whole["last"]
    assert resumed["best_epoch"] == whole["best_epoch"]


def test_unknown_towers_and_settings_are_clear_errors():
    from cirbench.towers import trained_towers

    with pytest.raises(ConfigError, match="unknown tower"):
        trained_towers([Stage("s", 1, lambda: [], lambda b, c: None, trains=("audio",))])
    with pytest.raises(ConfigError, match="finetune must be one of"):
        Clip4Cir(Dims(8), Clip4Cir.make_hparams({"finetune": "all"}))


def test_spn_over_the_fine_tuned_sum_model_trains_the_text_tower_against_the_bank(tmp_path, ws):
    """SPN's CLIP rows: the base is CLIP4Cir stage 1 alone (sum, both towers); SPN's stage 2 trains the text
    tower only, against the bank of the frozen image side."""
    s = RunSpec(method="spn:clip4cir", dataset="shapes-cirr", weights="random", epochs=1, batch_size=16,
                hparams={"base_finetune": "both", "base_combiner": False, "stage2_epochs": 1, "positives": False})
    cell = _CellTraining(s, RunDir(tmp_path / s.dirname()), ws)
    spn, helper = cell.built.method, cell.towers
    stages = spn.stages(s.epochs)
    assert [(st.name, set(st.trains)) for st in stages] == [("finetune", {"image", "text"}),
                                                              ("spn-negatives", {"text"})]
    assert spn.query_parameters() == []  # the sum has no parameters of its own: only the tower trains
    helper.start_stage(stages[1])
    ctx = TrainContext(cell.train, TrainConfig(), torch.device("cpu"), stage=stages[1].name)
    spn.on_epoch_start(ctx)
    assert bool(spn.base.sum_composition) and spn.base._sum  # SPN's stage keeps the base's sum composition
    batch = next(cell.train.batches(8, torch.Generator().manual_seed(0), towers=helper))
    stages[1].loss(batch, ctx).backward()
    text = {id(p) for p in spn.backbone.tower_parameters("text")}
    for name, p in spn.backbone.named_parameters():
        assert (p.grad is not None) == (id(p) in text), name
    with pytest.raises(ConfigError, match="stage2_trains"):
        type(spn)(spn.dims, spn.make_hparams({"stage2_trains": "image"}))


def test_gradient_checkpointing_gives_the_same_gradients(tmp_path):
    from cirbench.backbones import build_backbone

    torch.manual_seed(0)
    pixels, ids = torch.randn(4, 3, 64, 64), None
    grads = []
    for checkpointing in (False, True):
        backbone = build_backbone("tiny", "random", tmp_path).train().requires_grad_(True)
        if checkpointing:
            backbone.set_grad_checkpointing(True)
            assert backbone.model.transformer.grad_checkpointing and backbone.model.visual.transformer.grad_checkpointing
        ids = backbone.tokenize(["a red circle", "make it blue", "x", "bigger"])
        loss = backbone.embed_images(pixels).embed.square().sum() + backbone.embed_token_ids(ids).embed.sum()
        loss.backward()
        grads.append({n: p.grad.clone() for n, p in backbone.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys() and grads[0]
    for name, g in grads[0].items():
        assert torch.allclose(g, grads[1][name], atol=1e-5), name


def test_a_stage_lr_of_zero_keeps_the_towers_as_they_are(tmp_path, ws):
    """``finetune_lr=0``: stage 1 ranks with the sum over the frozen backbone (a zero-shot control)."""
    s = spec("both", hparams={"finetune_lr": 0, "combiner": False})
    before = _state(ws.backbone(s))
    execute(s, tmp_path, ws)
    saved = torch.load(RunDir(tmp_path / s.dirname()).best_model_file, weights_only=False)
    assert all(torch.equal(saved[f"backbone.{k}"], v) for k, v in before.items())


def test_the_composition_flag_follows_loaded_weights():
    """A model saved in stage 2 ranks with the Combiner, one saved in stage 1 with the sum, whatever the
    fresh model's flag was (the host mirror of the buffer follows load_state_dict)."""
    stage2 = Clip4Cir(Dims(8), Clip4Cir.make_hparams({"finetune": "both"}))
    stage2.sum_composition.fill_(False)
    fresh = Clip4Cir(Dims(8), Clip4Cir.make_hparams({"finetune": "both"}))
    assert fresh._sum
    fresh.load_state_dict(stage2.state_dict())
    assert not fresh._sum
