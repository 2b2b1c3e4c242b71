#!/usr/bin/env bash
# DQE-CIR (general attribute lexicons; mid-zone negatives first drawn after one warm-up epoch, under every
# training caption) vs clip4cir under mixed label noise on the embedded shapes benchmark:
# 2 layouts x noise 0/0.2/0.5/0.8 x training seeds 0,1,2, default run settings (10 epochs, batch 128, tiny
# warm-started backbone); the ablations dqe-cir:no-attr / dqe-cir:no-midzone and the first refresh at epoch 0
# (--set dqe-cir.warmup_epochs=0, in OUT_DIR-warmup0: the run folder names do not hold --set) at noise 0 and 0.5; the tables; then the refresh
# diagnostics of the results file (benchmarks/results/dqe_cir_ablation.md).
# Usage: benchmarks/dqe_cir.sh [OUT_DIR] [more `cirbench run` options, e.g. --device cpu]
# On a machine shared with other jobs, OMP_NUM_THREADS=1 avoids oversubscribing the cores.
set -euo pipefail
out=${1:-runs/dqe_cir}
shift || true
cirbench -q run -m clip4cir -m dqe-cir --noise-rates 0,0.2,0.5,0.8 --seeds 0,1,2 --out "$out" --no-progress "$@"
cirbench -q run -m dqe-cir:no-attr -m dqe-cir:no-midzone --noise-rates 0,0.5 --seeds 0,1,2 --out "$out" \
    --no-progress "$@"
cirbench -q run -m dqe-cir --set dqe-cir.warmup_epochs=0 --noise-rates 0,0.5 --seeds 0,1,2 --out "$out-warmup0" \
    --no-progress "$@"
cirbench table "$out" --format markdown
cirbench robustness "$out" --format markdown
cirbench table "$out-warmup0" --format markdown

# Refresh diagnostics (seed 0, clean training split): how the mid-zone of the untrained model compares
# with the one after a warm-up epoch of InfoNCE, and how many members of the zone under caption 0 tie with
# or beat the target under another training caption (FashionIQ trains on four).
python - <<'PY'
import tempfile
from pathlib import Path

import torch

from cirbench.runner import Workspace, _CellTraining
from cirbench.runs import RunDir, RunSpec
from cirbench.training import TrainConfig, TrainContext, stage_optimizer, train_step


def deltas(m, train):
    """Δ [N, M] under each training caption, and the forbidden (target, reference) mask."""
    m.eval()
    feats = train.images.features
    pool = torch.unique(torch.cat([train.reference_rows, train.target_rows]))
    gallery = m.gallery_embeddings(feats[pool])
    where = torch.full((feats.embed.shape[0],), -1, dtype=torch.long)
    where[pool] = torch.arange(len(pool))
    rows, tgt = torch.arange(len(train)), where[train.target_rows]
    out = []
    for v in range(train.text_rows.shape[1]):
        sims = m.query_embeddings(feats[train.reference_rows], train.texts.features[train.text_rows[:, v]]) @ gallery.t()
        out.append((sims[rows, tgt][:, None] - sims) / sims.std(-1, keepdim=True))
    forbidden = torch.zeros_like(out[0], dtype=torch.bool)
    forbidden[rows, tgt] = forbidden[rows, where[train.reference_rows]] = True
    return out, forbidden


for dataset in ("shapes-fashioniq", "shapes-cirr"):
    spec = RunSpec(method="dqe-cir", dataset=dataset, seed=0)
    cell = _CellTraining(spec, RunDir(Path(tempfile.mkdtemp()) / spec.dirname()), Workspace(progress=False))
    m, train = cell.built.method, cell.train
    lo, hi = m.hp.delta_low, m.hp.delta_high
    zone = lambda d, f: (d > lo) & (d < hi) & ~f  # noqa: E731
    d, f = deltas(m, train)
    before = zone(d[0], f)
    stage = m.stages(10)[0]
    optimizer, g = stage_optimizer(m, stage), torch.Generator().manual_seed(0)
    ctx = TrainContext(train, TrainConfig(), torch.device("cpu"), epoch=0, epochs=10, generator=g)
    m.train()
    for batch in train.batches(128, g, drop_last=True):  # one warm-up epoch: InfoNCE alone
        train_step(stage, batch, ctx, optimizer)
    d, f = deltas(m, train)
    after = zone(d[0], f)
    both = (before & after).sum(-1).float()
    print(f"{dataset}: zone size untrained {before.sum(-1).float().mean():.0f}, after one epoch "
          f"{after.sum(-1).float().mean():.0f}; Jaccard {(both / (before | after).sum(-1).clamp_min(1)).mean():.2f}; "
          f"an untrained pick in the epoch-1 zone {(both / before.sum(-1).clamp_min(1))[before.any(-1)].mean():.2f} "
          f"(a random candidate {(after.sum(-1) / after.shape[1]).mean():.2f})")
    if len(d) > 1:
        hardest = torch.stack(d).min(0).values
        tied = after & (torch.stack(d[1:]).min(0).values <= lo)
        print(f"  zone under caption 0 tying with / beating the target under another caption: "
              f"{tied.sum() / after.sum():.2f}; zone size under caption 0 {after.sum(-1).float().mean():.0f}, "
              f"under the hardest caption {zone(hardest, f).sum(-1).float().mean():.0f}")
PY
