"""Training and evaluation throughput per backbone size and device.

    python benchmarks/throughput.py [--device cpu --device cuda] [-b tiny -b vit-b-32 -b blip2]
                                    [-m clip4cir -m ncl-cir] [--out results.json] [--sync-check]

cirbench trains on frozen, cached backbone features, so a backbone's size shows up twice:
once when its features are computed (``encode``: images/s and texts/s through the frozen model,
forward only, under the autocast that ``cirbench.features`` uses), and then through the shape of
the features every training step and every evaluation reads (width D; token counts for methods
with ``needs_tokens``). For each backbone, with random weights —

* ``tiny``: cirbench's 64 px open_clip ViT; ``vit-b-32``: ``open_clip:ViT-B-32`` (224 px);
* ``blip2``: ``Blip2ForImageTextRetrieval`` at blip2-itm-vit-g's sizes (ViT-g 224 px, Q-Former,
  32 queries, 256-d joint space), from ``transformers.Blip2Config()`` —

it measures ``encode``, then builds feature tables of the shapes that backbone produces (random
values: speed does not depend on them), held on the device as ``cirbench.runner.Workspace`` holds
them, and times:

* **train** (triplets/s): ``cirbench.training.fit`` over ``--triplets`` training triplets — the
  real loop (per-epoch hooks, shuffles, bf16 autocast on CUDA, optimizer, per-epoch checkpoint),
  with validation left out; one warm-up epoch, then ``--epochs`` timed epochs;
* **eval** (queries/s): composing ``--queries`` queries, embedding a ``--gallery`` image gallery
  and ranking it to depth 50 with ``cirbench.eval.evaluation.topk_rankings`` (ids returned to the host);
* ``--sync-check`` (CUDA): training steps under ``torch.cuda.set_sync_debug_mode("warn")``; any
  host-device synchronisation inside a step is counted and located.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import random
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Callable, Dict, List

import torch

from cirbench.backbones import build_backbone
from cirbench.data.shapes import COLORS, POSITIONS, SHAPES, SIZES
from cirbench.data.triplets import Triplet
from cirbench.devices import autocast
from cirbench.eval.evaluation import topk_rankings
from cirbench.features import FeatureTable
from cirbench.registry import get_method
from cirbench.training import (
    TrainConfig,
    TrainContext,
    TrainingSet,
    Validation,
    fit,
    stage_optimizer,
    train_step,
)
from cirbench.types import Dims, Features

BACKBONES = ("tiny", "vit-b-32", "blip2")
WORDS = [*COLORS, *SHAPES, *SIZES, *" ".join(POSITIONS).split(),
         *"a an the is are with and of to at in on make change replace add remove it into instead bigger".split()]


def build(name: str, device: torch.device):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if name == "tiny":
            bb = build_backbone("tiny", "random")
        elif name == "vit-b-32":
            import logging

            logging.getLogger("cirbench").setLevel(logging.ERROR)  # "random weights" warning: intended
            bb = build_backbone("open_clip:ViT-B-32")
        elif name == "blip2":
            from cirbench.backbones.blip2 import random_blip2

            bb = random_blip2(words=WORDS)
        else:
            raise SystemExit(f"unknown backbone {name!r}; choose from {', '.join(BACKBONES)}")
    return bb.to(device)


def texts(n: int, seed: int = 0) -> List[str]:
    """Modification-text-like sentences over the shapes vocabulary, all distinct."""
    rng = random.Random(seed)
    c, s, z, p = list(COLORS), list(SHAPES), list(SIZES), list(POSITIONS)
    out = []
    for i in range(n):
        out.append(f"replace the {rng.choice(z)} {rng.choice(c)} {rng.choice(s)} at the {rng.choice(p)} with a "
                   f"{rng.choice(c)} {rng.choice(s)} and make the {rng.choice(s)} {rng.choice(z)} ({i})")
    return out


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def rate(fn: Callable[[], None], items: int, device: torch.device, min_seconds: float) -> float:
    """Items per second of ``fn`` (one warm-up call, then repeated until ``min_seconds``)."""
    fn()
    sync(device)
    calls, t0 = 0, time.perf_counter()
    while calls < 2 or time.perf_counter() - t0 < min_seconds:
        fn()
        calls += 1
    sync(device)
    return items * calls / (time.perf_counter() - t0)


def encode_rates(bb, device: torch.device, batch: int, min_seconds: float) -> Dict[str, float]:
    from PIL import Image

    size = bb.preprocess(Image.new("RGB", (64, 64))).shape[-2:]
    pixels = torch.randn(batch, 3, *size, device=device)
    sample = texts(batch)

    def images():
        with autocast(bb.device):
            bb.encode_images(pixels)

    def texts_():
        with autocast(bb.device):
            bb.encode_texts(sample)

    return {"image_size": int(size[0]), "encode_images_per_s": rate(images, batch, device, min_seconds),
            "encode_texts_per_s": rate(texts_, batch, device, min_seconds)}


def feature_shapes(bb, device: torch.device) -> Dict[str, int]:
    from PIL import Image

    px = torch.stack([bb.preprocess(Image.new("RGB", (64, 64)))] * 2).to(device)
    with autocast(bb.device):
        img = bb.encode_images(px, tokens=True)
        txt = bb.encode_texts(texts(64), tokens=True)
    return {"embed_dim": img.embed.shape[1], "image_tokens": img.tokens.shape[1],
            "text_tokens": int(txt.mask.sum(1).max())}


def random_table(keys: List[str], shapes: Dict[str, int], tokens: bool, kind: str, device) -> FeatureTable:
    """A feature table laid out as the cache stores it (embed float32, tokens float16) on ``device``."""
    n, d = len(keys), shapes["embed_dim"]
    g = torch.Generator().manual_seed(len(keys))
    embed = torch.randn(n, d, generator=g)
    feats = Features(embed)
    if tokens:
        t = shapes[f"{kind}_tokens"]
        tok = torch.randn(n, t, d, generator=g).half()
        if kind == "text":
            length = torch.randint(t // 2, t + 1, (n,), generator=g)
            mask = torch.arange(t)[None] < length[:, None]
        else:
            mask = torch.ones(n, t, dtype=torch.bool)
        feats = Features(embed, tok, mask)
    return FeatureTable(keys, feats).to(device)


def method_rates(method_name: str, shapes: Dict[str, int], device: torch.device, args) -> Dict[str, float]:
    cls = get_method(method_name)
    n_img = args.gallery
    images = random_table([f"img{i}" for i in range(n_img)], shapes, cls.needs_tokens, "image", device)
    captions = texts(args.triplets + args.queries, seed=1)
    text_table = random_table(captions, shapes, cls.needs_tokens, "text", device)
    rng = random.Random(0)
    triplets = [Triplet(str(k), f"img{rng.randrange(n_img)}", f"img{rng.randrange(n_img)}", (captions[k],), "cirr")
                for k in range(args.triplets)]
    torch.manual_seed(0)
    method = cls(Dims(shapes["embed_dim"], shapes["embed_dim"] if cls.needs_tokens else 0), cls.make_hparams())
    side = method.text_side_features(text_table.keys)
    if side is not None:
        text_table = FeatureTable(text_table.keys, Features(text_table.features.embed, text_table.features.tokens,
                                                            text_table.features.mask, side.to(device)))
    train = TrainingSet("cirr", triplets, images, text_table)
    no_validation = lambda m: Validation({}, 0.0)  # noqa: E731
    out: Dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        config = TrainConfig(1, args.batch_size, 0, str(device))
        fit(method, train, no_validation, config, Path(tmp) / "warmup.pt", progress=False)
        config = TrainConfig(args.epochs, args.batch_size, 0, str(device))
        sync(device)
        t0 = time.perf_counter()
        fit(method, train, no_validation, config, Path(tmp) / "timed.pt", progress=False)
        sync(device)
        out["train_triplets_per_s"] = args.epochs * (len(train) - len(train) % args.batch_size) / (
            time.perf_counter() - t0)

    method.eval()
    q_rows = torch.arange(args.triplets, args.triplets + args.queries, device=device)
    refs = images.features[torch.randint(n_img, (args.queries,), generator=torch.Generator().manual_seed(2)).to(device)]
    qtexts = text_table.features[q_rows]
    ids = images.keys

    def evaluate():
        queries = method.query_embeddings(refs, qtexts)
        gallery = method.gallery_embeddings(images.features)
        topk_rankings(queries, gallery, ids, k=50)

    out["eval_queries_per_s"] = rate(evaluate, args.queries, device, args.min_seconds)
    if args.sync_check and device.type == "cuda":
        out.update(sync_check(method, train, device, args))
    return out


def sync_check(method, train: TrainingSet, device: torch.device, args, steps: int = 20) -> dict:
    """Training steps exactly as ``fit`` runs them, under CUDA's sync debug mode."""
    stage = method.stages(1)[0]
    optimizer = stage_optimizer(method, stage)
    generator = torch.Generator().manual_seed(0)
    ctx = TrainContext(train, TrainConfig(1, args.batch_size, 0, str(device)), device, generator=generator, epochs=1)
    method.on_epoch_start(ctx)
    method.train()
    total = torch.zeros((), device=device)
    batches = train.batches(stage.batch_size or args.batch_size, generator, drop_last=True)
    next(batches)  # the epoch's shuffle is drawn and moved here, once per epoch
    places: Dict[str, int] = {}
    done = 0
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            for batch in batches:
                total += train_step(stage, batch, ctx, optimizer)
                done += 1
                if done == steps:
                    break
        finally:
            torch.cuda.set_sync_debug_mode(0)
    with warnings.catch_warnings(record=True) as control:  # positive control: .item() must be caught
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            total.item()
        finally:
            torch.cuda.set_sync_debug_mode(0)
    for w in caught:
        if "synchroniz" in str(w.message):
            where = f"{os.path.relpath(w.filename)}:{w.lineno}"
            places[where] = places.get(where, 0) + 1
    return {"sync_check_steps": done, "host_syncs_in_steps": sum(places.values()), "sync_locations": places,
            "sync_check_control_caught": any("synchroniz" in str(w.message) for w in control)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", action="append", choices=["cpu", "cuda"],
                        help="repeatable; default: cpu, and cuda when present")
    parser.add_argument("-b", "--backbone", action="append", choices=BACKBONES, help="default: all three")
    parser.add_argument("-m", "--method", action="append", help="default: clip4cir")
    parser.add_argument("--triplets", type=int, default=10_000, help="training triplets (default 10,000)")
    parser.add_argument("--queries", type=int, default=4_000, help="evaluation queries (default 4,000, ~CIRR val)")
    parser.add_argument("--gallery", type=int, default=5_000, help="gallery images (default 5,000)")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--epochs", type=int, default=2, help="timed training epochs (after one warm-up epoch)")
    parser.add_argument("--encode-batch", type=int, help="default: 2/32/256 (blip2/vit-b-32/tiny) on CPU, 256 on CUDA")
    parser.add_argument("--min-seconds", type=float, default=2.0, help="shortest timing window per rate")
    parser.add_argument("--sync-check", action="store_true", help="CUDA: count host syncs inside training steps")
    parser.add_argument("--out", type=Path, help="write the results as JSON")
    args = parser.parse_args()
    devices = args.device or (["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"])
    if "cuda" in devices and not torch.cuda.is_available():
        raise SystemExit("--device cuda: torch sees no CUDA GPU")
    rows = []
    for dev in devices:
        device = torch.device(dev)
        name = torch.cuda.get_device_name(device) if dev == "cuda" else \
            f"cpu: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, {torch.get_num_threads()} threads"
        for bname in args.backbone or BACKBONES:
            t0 = time.perf_counter()
            bb = build(bname, device)
            row = {"device": name, "backbone": bname,
                   "backbone_params_M": round(sum(p.numel() for p in bb.parameters()) / 1e6, 1),
                   "build_s": round(time.perf_counter() - t0, 1)}
            batch = args.encode_batch or (256 if dev == "cuda" else {"tiny": 256, "vit-b-32": 32, "blip2": 2}[bname])
            row.update(encode_rates(bb, device, batch, args.min_seconds))
            row.update(feature_shapes(bb, device))
            del bb
            if dev == "cuda":
                torch.cuda.empty_cache()
            for m in args.method or ["clip4cir"]:
                r = {**row, "method": m, "triplets": args.triplets, "queries": args.queries, "gallery": args.gallery}
                try:
                    r.update(method_rates(m, row, device, args))
                except Exception as exc:  # one broken method must not lose the other figures
                    r["error"] = f"{type(exc).__name__}: {exc}"
                if dev == "cpu":
                    r["load_average_1min"] = round(os.getloadavg()[0], 2)
                rows.append(r)
                print(json.dumps(r), file=sys.stderr, flush=True)
    result = {"python": platform.python_version(), "torch": torch.__version__,
              "timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "results": rows}
    print(markdown(rows))
    if args.out:
        args.out.write_text(json.dumps(result, indent=1))


def markdown(rows: List[dict]) -> str:
    head = ("| device | backbone | params (M) | px | D | tokens img/txt | encode img/s | encode txt/s | method | "
            "train triplets/s | eval queries/s |\n|" + "---|" * 11)
    lines = [head]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['device']} | {r['backbone']} | | | | | | | {r['method']} | {r['error']} | |")
            continue
        lines.append(f"| {r['device']} | {r['backbone']} | {r['backbone_params_M']} | {r['image_size']} | "
                     f"{r['embed_dim']} | {r['image_tokens']}/{r['text_tokens']} | {r['encode_images_per_s']:,.0f} | "
                     f"{r['encode_texts_per_s']:,.0f} | {r['method']} | {r['train_triplets_per_s']:,.0f} | "
                     f"{r['eval_queries_per_s']:,.0f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        main()
