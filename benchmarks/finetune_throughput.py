"""Triplets/s of cirbench's fine-tuning step against a CLIP4Cir-style loop, side by side in one process.

Both train the same model (two copies of one backbone) with the same step: CLIP4Cir's stage 1 (both towers,
element-wise sum, cross-entropy at logit scale 100, AdamW), at the same batch, on the same triplets. They
differ only in how a batch reaches the model:

* ``cirbench``: reference / target rows of the pixel cache (decoded once, ``cirbench.pixels``), normalised on
  the device, and token ids tokenised once (``cirbench.towers``);
* ``clip4cir-style``: a torch ``DataLoader`` whose workers open each reference and target image file with PIL
  and run the full preprocessing every step, and the captions tokenised every step, as ABaldrati/CLIP4Cir's
  ``clip_fine_tune.py`` does.

Usage: python benchmarks/finetune_throughput.py [--backbone tiny] [--weights W] [--batch 128] [--steps 20]
       [--device cpu|cuda] [--workers N] [--out results.json]
The pixel cache is built (timed separately) before the timed steps. Results: benchmarks/results/.
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import time

import torch
import torch.nn.functional as F
from PIL import Image

from cirbench.backbones import build_backbone
from cirbench.data import datasets
from cirbench.data.triplets import eval_text
from cirbench.devices import autocast
from cirbench.paths import cache_dir
from cirbench.pixels import pixel_table


def sum_loss(backbone, ref_pixels, tgt_pixels, ids):
    query = F.normalize(backbone.embed_images(ref_pixels).embed + backbone.embed_token_ids(ids).embed, dim=-1)
    target = F.normalize(backbone.embed_images(tgt_pixels).embed, dim=-1)
    logits = 100 * query @ target.t()
    return F.cross_entropy(logits.float(), torch.arange(len(ids), device=logits.device))


def step(backbone, optimizer, device, ref, tgt, ids):
    with autocast(device):
        loss = sum_loss(backbone, ref, tgt, ids)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss.detach()


class FileTriplets(torch.utils.data.Dataset):
    """CLIP4Cir's relative training dataset: images opened and preprocessed per item."""

    def __init__(self, triplets, paths, preprocess, layout):
        self.triplets, self.paths, self.preprocess, self.layout = triplets, paths, preprocess, layout

    def __len__(self):
        return len(self.triplets)

    def __getitem__(self, i):
        t = self.triplets[i]
        with Image.open(self.paths[t.reference]) as a, Image.open(self.paths[t.target]) as b:
            return self.preprocess(a.convert("RGB")), self.preprocess(b.convert("RGB")), eval_text(self.layout, t)


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(run_steps, steps, warmup, device):
    run_steps(warmup)
    sync(device)
    t = time.perf_counter()
    run_steps(steps)
    sync(device)
    return time.perf_counter() - t


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backbone", default="tiny")
    ap.add_argument("--weights", default="random")
    ap.add_argument("--dataset", default="shapes-fashioniq")
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--out")
    args = ap.parse_args()
    device = torch.device(args.device)
    data = datasets.load(args.dataset, splits=("train",))
    triplets = data.split("train").triplets
    base = build_backbone(args.backbone, args.weights).to(device)
    images = sorted({x for t in triplets for x in (t.reference, t.target)})
    t0 = time.perf_counter()
    pixels = pixel_table(base.preprocess, images, data.image_paths, cache_dir(), progress=False)
    cache_seconds = time.perf_counter() - t0
    texts = [eval_text(data.layout, t) for t in triplets]
    ids = base.tokenize(texts).to(device)
    ref_rows = torch.tensor([pixels.row[t.reference] for t in triplets])
    tgt_rows = torch.tensor([pixels.row[t.target] for t in triplets])

    def trainable():
        model = copy.deepcopy(base).requires_grad_(True).train()
        return model, torch.optim.AdamW(model.parameters(), lr=2e-6, **({"fused": True} if device.type == "cuda"
                                                                           else {}))

    results = {}
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    model, opt = trainable()
    gen = torch.Generator().manual_seed(0)

    def cirbench_steps(n):
        for _ in range(n):
            b = torch.randint(len(triplets), (args.batch,), generator=gen)
            step(model, opt, device, pixels.batch(ref_rows[b], device), pixels.batch(tgt_rows[b], device),
                 ids[b.to(device)])

    seconds = timed(cirbench_steps, args.steps, args.warmup, device)
    results["cirbench"] = {"triplets_per_s": args.steps * args.batch / seconds, "seconds": seconds}
    if device.type == "cuda":
        results["cirbench"]["peak_memory_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
        torch.cuda.reset_peak_memory_stats(device)

    model, opt = trainable()
    loader = torch.utils.data.DataLoader(FileTriplets(triplets, data.image_paths, base.preprocess, data.layout),
                                         batch_size=args.batch, shuffle=True, drop_last=True,
                                         num_workers=args.workers, pin_memory=device.type == "cuda",
                                         persistent_workers=args.workers > 0)
    batches = iter(())

    def clip4cir_steps(n):
        nonlocal batches
        for _ in range(n):
            try:
                ref, tgt, captions = next(batches)
            except StopIteration:
                batches = iter(loader)
                ref, tgt, captions = next(batches)
            tokens = base.tokenize(list(captions)).to(device, non_blocking=True)
            step(model, opt, device, ref.to(device, non_blocking=True), tgt.to(device, non_blocking=True), tokens)

    seconds = timed(clip4cir_steps, args.steps, args.warmup, device)
    results["clip4cir_style"] = {"triplets_per_s": args.steps * args.batch / seconds, "seconds": seconds}
    if device.type == "cuda":
        results["clip4cir_style"]["peak_memory_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
    out = {
        "ratio": results["cirbench"]["triplets_per_s"] / results["clip4cir_style"]["triplets_per_s"],
        **results, "pixel_cache_seconds_once": cache_seconds, "images": len(images), "triplets": len(triplets),
        "settings": {**vars(args), "device": str(device)},
        "machine": {"platform": platform.platform(), "torch": torch.__version__,
                    "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
                    "cpus": os.cpu_count(), "torch_threads": torch.get_num_threads()},
    }
    print(json.dumps(out, indent=1))
    if args.out:
        with open(args.out, "w") as f:
            json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
