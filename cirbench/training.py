"""The training loop every method shares: stages, epochs, validation, checkpoints, resume.

Everything the hot loop touches lives on the training device: frozen backbone features in
:class:`TrainingSet`, row indices, the per-epoch shuffle and caption choices (drawn on the CPU
once per epoch, moved once). The loss is read back to the host once per epoch, never per
step, so a CUDA step never waits on the host. On CUDA the step runs under bf16 autocast and
AdamW is fused. A stage that fine-tunes backbone towers (``Stage.trains``) gets them from
:class:`cirbench.towers.TrainableTowers`: the batch embeds its pixels / token ids with those
towers, and the feature tables are re-embedded after each such epoch.

A checkpoint (method and optimizer state, stage, epoch, history, best metrics) is written
atomically after every epoch; a run started again continues after the last finished epoch and,
because every epoch reseeds from (seed, stage, epoch), ends with the same numbers as an
uninterrupted run.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Dict, Iterator, List, Optional, Sequence

import torch
from torch import Tensor
from tqdm.auto import tqdm

from .data.triplets import Triplet, train_texts
from .devices import autocast
from .errors import RESTART_CELL
from .features import FeatureTable
from .files import load_torch, save_torch
from .method import Method
from .types import Batch, Stage

if TYPE_CHECKING:  # pragma: no cover
    from .towers import TrainableTowers

log = logging.getLogger("cirbench")


class TrainingSet:
    """Training triplets as rows into feature tables, kept on the training device.

    The last ``generated`` triplets were added by the method (``Method.extra_triplets``); the
    others are the dataset's (possibly noisy) triplets, whose ``qid`` links them to the manifest.
    """

    def __init__(self, layout: str, triplets: Sequence[Triplet], images: FeatureTable, texts: FeatureTable,
                 generated: int = 0):
        self.layout = layout
        self.triplets = list(triplets)
        self.generated = generated
        self.images = images
        self.texts = texts
        device = images.features.embed.device
        self.reference_rows = images.rows([t.reference for t in self.triplets]).to(device)
        self.target_rows = images.rows([t.target for t in self.triplets]).to(device)
        variants = [train_texts(layout, t) for t in self.triplets]
        width = max(len(v) for v in variants)
        self.text_rows = torch.stack(
            [texts.rows([v[i % len(v)] for i in range(width)]) for v in variants]
        ).to(device) if self.triplets else torch.zeros(0, 1, dtype=torch.long, device=device)
        # host copies: a trained image tower gathers pixel rows on the host without a device sync
        self._image_rows_cpu = (self.reference_rows.cpu(), self.target_rows.cpu())

    def __len__(self) -> int:
        return len(self.triplets)

    @property
    def device(self) -> torch.device:
        return self.reference_rows.device

    def _pixel_rows(self, index_cpu: Tensor) -> Tensor:
        """Image-table rows of the references, then the targets, of triplets ``index_cpu`` (on the host)."""
        reference, target = self._image_rows_cpu
        return torch.cat([reference[index_cpu], target[index_cpu]])

    def batch(self, index: Tensor, variant: Optional[Tensor] = None,
              towers: Optional["TrainableTowers"] = None, index_cpu: Optional[Tensor] = None) -> Batch:
        """The batch of triplets ``index``; ``variant`` picks each one's caption (default: the first,
        which for FashionIQ is the evaluation form "<c1> and <c2>"). The towers ``towers.trains``
        embed their inputs here, with gradients; the others' features come from the tables.
        ``index_cpu`` is ``index`` on the host, when the caller has it (no device sync for pixel rows)."""
        if variant is None:
            text_rows = self.text_rows[index, 0]
        else:
            text_rows = self.text_rows[index].gather(1, variant[:, None]).squeeze(1)
        reference_rows, target_rows = self.reference_rows[index], self.target_rows[index]
        trains = towers.trains if towers is not None else ()
        if "image" in trains:  # references and targets in one pass of the tower
            both = towers.image_features(self._pixel_rows(index.cpu() if index_cpu is None else index_cpu))
            reference, target = both[:len(index)], both[len(index):]
        else:
            reference, target = self.images.features[reference_rows], self.images.features[target_rows]
        text = towers.text_features(text_rows) if "text" in trains else self.texts.features[text_rows]
        return Batch(index, reference, text, target, target_rows)

    def batches(self, batch_size: int, generator: Optional[torch.Generator] = None,
                drop_last: bool = False, towers: Optional["TrainableTowers"] = None,
                annotated_only: bool = False) -> Iterator[Batch]:
        """Shuffled batches with random captions when ``generator`` is given; else in order, first caption.
        ``annotated_only`` leaves out the generated triplets (the last ``generated``)."""
        n = len(self) - (self.generated if annotated_only else 0)
        if generator is None:
            order_cpu, variants = torch.arange(n), None
        else:
            order_cpu = torch.randperm(n, generator=generator)
            variants = torch.randint(self.text_rows.shape[1], (n,), generator=generator)[order_cpu].to(self.device)
        order = order_cpu.to(self.device)
        stop = n - n % batch_size if drop_last and n >= batch_size else n
        for start in range(0, stop, batch_size):
            batch = self.batch(order[start:start + batch_size],
                               None if variants is None else variants[start:start + batch_size], towers,
                               index_cpu=order_cpu[start:start + batch_size])
            if towers is not None and start + batch_size < stop:  # the next batch's pixels, while this one trains
                towers.prefetch(self._pixel_rows(order_cpu[start + batch_size:start + 2 * batch_size]))
            yield batch


@dataclass
class TrainConfig:
    epochs: int = 10
    batch_size: int = 128
    seed: int = 0
    device: str = "cpu"


@dataclass
class TrainContext:
    """What hooks and losses may look at: the training set, where we are, and a place to log."""

    train: TrainingSet
    config: TrainConfig
    device: torch.device
    stage: str = "main"
    stage_index: int = 0
    epoch: int = 0
    epochs: int = 0
    generator: Optional[torch.Generator] = None
    log: Dict[str, float] = field(default_factory=dict)

    def autocast(self):
        """The training step's mixed precision on this device (bf16 on CUDA)."""
        return autocast(self.device)


@dataclass
class Validation:
    """Result of one validation pass: metrics, the model-selection value, and opaque extras
    (rankings) the caller keeps for the best epoch."""

    metrics: dict
    selection: float
    extras: object = None


def _epoch_seed(seed: int, stage: int, epoch: int) -> int:
    return (seed * 1_000_003 + stage * 10_007 + epoch) % (2**31 - 1)


def stage_optimizer(method: Method, stage: Stage, towers: Optional["TrainableTowers"] = None
                    ) -> torch.optim.Optimizer:
    """AdamW over the stage's trainable parameters and its towers', at the stage's lr (default: the
    method's); fused on CUDA."""
    params = {id(p): p for p in stage.parameters() if p.requires_grad}
    if stage.trains:
        params.update({id(p): p for p in towers.parameters(stage.trains)})
    params = list(params.values())
    fused = bool(params) and all(p.is_cuda for p in params)
    lr = method.hp.lr if stage.lr is None else stage.lr  # a stage's lr 0 is an lr (the weights stay)
    return torch.optim.AdamW(params, lr=lr, weight_decay=method.hp.weight_decay,
                             **({"fused": True} if fused else {}))


def train_step(stage: Stage, batch: Batch, ctx: TrainContext, optimizer: torch.optim.Optimizer) -> Tensor:
    """One optimisation step on ``batch``; returns the loss, detached, still on the device."""
    with ctx.autocast():
        loss = stage.loss(batch, ctx)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss.detach().float()


def fit(method: Method, train: TrainingSet, validate: Callable[[Method], Validation], config: TrainConfig,
        checkpoint: Path, on_best: Callable[[Validation], None] = lambda v: None,
        on_epoch: Callable[[dict], None] = lambda row: None, progress: bool = True,
        towers: Optional["TrainableTowers"] = None, best_state: Optional[Callable[[], dict]] = None,
        epoch_log: Callable[[], dict] = dict) -> dict:
    """Train ``method`` through its stages; returns ``{history, best, last, best_epoch}``.

    ``validate`` is called after every epoch; ``on_best`` whenever the selection value improves;
    ``epoch_log()`` after validation, for more fields of the epoch's history row (e.g. noise-detection
    scores: in the row before the checkpoint holding it is written, so a resumed run's history is the
    same); ``on_epoch`` with each history row (after that checkpoint is written). ``towers``
    (:class:`cirbench.towers.TrainableTowers`) is given when some stage fine-tunes the backbone;
    ``best_state()`` returns the best epoch's ``state_dict`` for stages that start ``from_best``.
    """
    device = torch.device(config.device)
    method.to(device)
    state = {"stage": 0, "epoch": 0, "history": [], "best": None, "best_selection": None, "best_epoch": 0,
             "last": None}
    saved = None
    if checkpoint.exists():
        saved = load_torch(checkpoint, "checkpoint", device, hint=RESTART_CELL)
        method.load_state_dict(saved["method"])
        state.update({k: saved[k] for k in state})
        log.info("resuming %s at stage %d epoch %d", checkpoint.parent, state["stage"], state["epoch"])
        if towers is not None:
            towers.mark_all_stale()

    stages = method.stages(config.epochs)
    for stage_index, stage in enumerate(stages):
        if stage_index < state["stage"]:
            continue
        start = state["epoch"] if stage_index == state["stage"] else 0
        if stage.from_best and start == 0 and state["best_epoch"] and best_state is not None:
            method.load_state_dict(best_state())  # e.g. CLIP4Cir's Combiner over its best fine-tuned CLIP
            if towers is not None:
                towers.mark_all_stale()
        if stage.trains and towers is None:
            raise ValueError(f"stage {stage.name!r} trains backbone towers but fit() got no towers")
        if towers is not None:
            towers.start_stage(stage)
        optimizer = stage_optimizer(method, stage, towers)
        if saved is not None and saved["stage"] == stage_index and saved.get("optimizer"):
            optimizer.load_state_dict(saved["optimizer"])
        bar = tqdm(range(start, stage.epochs), desc=f"{stage.name}", unit="epoch", leave=False,
                   disable=None if progress else True, initial=start, total=stage.epochs)
        for epoch in bar:
            t0 = time.time()
            seed = _epoch_seed(config.seed, stage_index, epoch)
            torch.manual_seed(seed)
            generator = torch.Generator().manual_seed(seed)
            ctx = TrainContext(train, config, device, stage.name, stage_index, epoch, stage.epochs, generator)
            method.on_epoch_start(ctx)
            method.train()
            total = torch.zeros((), device=device)
            steps = 0
            for batch in train.batches(stage.batch_size or config.batch_size, generator, drop_last=True,
                                       towers=towers, annotated_only=stage.annotated_only):
                total += train_step(stage, batch, ctx, optimizer)
                steps += 1
            method.eval()
            if towers is not None:
                towers.trained()
                towers.refresh()  # validation ranks a gallery embedded by the trained towers
            val = validate(method)
            row = {"stage": stage.name, "epoch": epoch + 1, "loss": float(total) / max(steps, 1),
                   "selection": val.selection, "metrics": val.metrics, "seconds": round(time.time() - t0, 3),
                   **ctx.log, **epoch_log()}
            state["history"].append(row)
            state["last"] = val.metrics
            if state["best_selection"] is None or val.selection > state["best_selection"]:
                state["best"], state["best_selection"] = val.metrics, val.selection
                state["best_epoch"] = len(state["history"])
                on_best(val)
            state["stage"], state["epoch"] = stage_index, epoch + 1
            if epoch + 1 == stage.epochs:
                state["stage"], state["epoch"] = stage_index + 1, 0
            save_torch({**state, "method": method.state_dict(),
                          "optimizer": optimizer.state_dict() if state["stage"] == stage_index else None},
                         checkpoint)
            on_epoch(row)
            bar.set_postfix(loss=f"{row['loss']:.3f}", sel=f"{val.selection:.1f}")
        saved = None
    if not stages:  # a training-free method (zero-shot): scored once as it is
        val = validate(method)
        on_best(val)
        state.update(best=val.metrics, last=val.metrics)
    return {k: state[k] for k in ("history", "best", "last", "best_epoch")}


__all__: List[str] = ["TrainConfig", "TrainContext", "TrainingSet", "Validation", "fit", "stage_optimizer",
                      "train_step"]
