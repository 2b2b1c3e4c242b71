"""SPN (Feng et al., ACM MM 2024, arXiv 2404.11317): scaling positives and negatives for CIR, a plug-in over any base
method (``spn:clip4cir``, ``spn:ncl-cir``, ...) that leaves its architecture alone. The paper's two parts stack:

* **Scaling positives**: caption every training image (LLaVA); for each reference, draw a target uniformly from a
  rank window of image-only similarity (CLIP base: ranks 10,000-20,000 of FashionIQ's 45,429 training images,
  10,000-15,000 of CIRR's 16,939); modification text from templates over the two captions ("{tgt} instead of
  {ref}", "Unlike {ref}, I want {tgt}", "{tgt}"; one drawn per step); optionally subsample K; append.
* **Scaling negatives**: a second stage after the base's training: freeze the image side, encode every unique
  training image once into a static, L2-normalised bank, train the query side with cross-entropy against the whole
  bank (label = the target's row) or ``neg_num`` sampled negatives (CLIP base: 3 epochs, lr 2e-5, tau 0.02, batch
  256); best checkpoint on validation.

What cirbench chose, and why:

* Names: ``spn:<base>`` = both parts, ``spn:<base>+positives`` / ``+negatives`` = one (``negatives=false`` /
  ``positives=false``): the ablation is one grid, distinct row names. ``base_<name>`` / ``base_hparams``: the base's.
* Positives (``Method.extra_triplets``, :mod:`.positives`), paired by the frozen backbone's image embeddings;
  captions (``captioner``, :mod:`.captioners`): ``attributes`` describes a shapes image from its metadata, in place
  of LLaVA; ``file`` reads captions made offline (path in ``captions``).
* Windows as fractions of the pool (0.22-0.44 FashionIQ, 0.59-0.89 CIRR), so they scale with small data
  (``window_low`` / ``window_high``, -1 = the paper's; 1 and above are absolute ranks). Per dataset as for the
  paper's CLIP base: one target per reference (``per_reference``), no subsampling (``max_generated`` = K, 0 = all),
  references = images that are references in the annotated set on FashionIQ, every image on CIRR (``references``:
  annotated / all / auto), template "{tgt}" on FashionIQ, the first two on CIRR (``templates``: indices / auto).
* The pool is the whole train split (FashionIQ's three categories together, as in the paper); a FashionIQ triplet
  takes its reference's category and gets two texts, from two caption phrasings, like two annotators. The paper
  draws a template per step; cirbench fixes one per text at generation (same distribution over the set). A text
  longer than the text encoder's context falls back to the target caption (the SPN code's rule).
* Generated triplets depend on ``gen_seed``, not the training seed (seeds measure training variance); they come
  after the annotated ones, never noised or evaluated, written in the official layout to ``<run>/spn_positives/``.
  They join every stage (the released code: stage 2 only), so +positives alone is a meaningful row.
* Stage 2 (``Method.stages``): ``stage2_epochs`` 3, ``temperature`` 0.02, the run's batch size, bank InfoNCE
  (``cirbench.losses.bank_info_nce``; ``neg_num`` 0 = whole bank). ``lr`` 1e-4, not 2e-5: the paper fine-tunes a
  pretrained text encoder; cirbench's query side is the base's small head, trained at 1e-3 in stage 1, so stage 2
  uses a tenth. Stage 1 keeps the base's lr; ``weight_decay`` -1 = the base's, for both stages.
* "Image side" = every base parameter the base's ``embed_target`` depends on (found by autograd on a probe batch),
  frozen because the bank is static; ``compose``'s parameters train (clip4cir: the Combiner; the paper tunes CLIP's
  text encoder, cirbench keeps backbones frozen). The bank (training images, generated ones included) is rebuilt
  after a resume, identical as the target side is frozen. Stage 2 uses the plain bank InfoNCE even over a
  noise-aware base (its clean probabilities do not weight it). Best epoch on validation over both stages.
"""
from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from cirbench.errors import ConfigError, DataError
from cirbench.losses import bank_info_nce
from cirbench.method import Method
from cirbench.registry import get_method, register_method
from cirbench.types import Batch, Dims, Features, Stage
from cirbench_methods.spn.captioners import caption_images
from cirbench_methods.spn.positives import generate, parse_templates, write_official

log = logging.getLogger("cirbench")

PARTS = ("positives", "negatives")
STAGE2 = "spn-negatives"
#: the paper's CLIP-base settings per layout; windows as fractions of the training-image pool
PAPER = {
    "fashioniq": {"window": (10_000 / 45_429, 20_000 / 45_429), "references": "annotated", "templates": "2"},
    "cirr": {"window": (10_000 / 16_939, 15_000 / 16_939), "references": "all", "templates": "0,1"},
}
_TRUE = ("1", "true", "yes", "on")


@register_method("spn")
class SPN(Method):
    """A base CIR method plus SPN's generated positives and static-bank stage 2 (module docstring)."""

    arg_hparam = "base"

    @dataclass
    class Hparams(Method.Hparams):
        base: str = "clip4cir"
        base_hparams: Dict[str, Any] = field(default_factory=dict)
        positives: bool = True
        negatives: bool = True
        # positives
        captioner: str = "attributes"
        captions: str = ""
        window_low: float = -1.0  # -1: the paper's, scaled to the pool
        window_high: float = -1.0
        references: str = "auto"  # annotated | all | auto (the paper's per dataset)
        templates: str = "auto"  # indices into positives.TEMPLATES, e.g. "0,1,2"
        per_reference: int = 1
        max_generated: int = 0
        gen_seed: int = 0
        # negatives (stage 2): lr and temperature are stage 2's
        stage2_epochs: int = 3
        lr: float = 1e-4
        temperature: float = 0.02
        weight_decay: float = -1.0  # -1: the base's
        neg_num: int = 0  # 0: the whole bank

    # -- construction -----------------------------------------------------------------------
    @classmethod
    def make_hparams(cls, overrides: Optional[Dict[str, Any]] = None) -> "SPN.Hparams":
        overrides = dict(overrides or {})
        base_over = dict(overrides.pop("base_hparams", None) or {})
        for key in [k for k in overrides if k.startswith("base_")]:
            base_over[key[len("base_"):]] = overrides.pop(key)
        if "base" in overrides:
            name, *parts = str(overrides["base"]).split("+")
            overrides["base"] = name
            if parts:
                bad = sorted(set(parts) - set(PARTS))
                if bad:
                    raise ConfigError(f"spn:{overrides['base']}+... takes the parts {' / '.join(PARTS)}; "
                                      f"got {', '.join(bad)}")
                for part in PARTS:
                    given = overrides.get(part)
                    if given is not None and (str(given).lower() in _TRUE) != (part in parts):
                        raise ConfigError(f"spn: the method name switches {part} "
                                          f"{'on' if part in parts else 'off'} but {part}={given!r} was set")
                    overrides[part] = part in parts
        hp = super().make_hparams(overrides)
        base_cls = get_method(hp.base)
        if issubclass(base_cls, SPN):
            raise ConfigError("spn wraps a base method (e.g. spn:clip4cir), not another spn")
        try:
            resolved = base_cls.make_hparams(base_over)
        except ConfigError as exc:
            raise ConfigError(f"{exc} (spn passes base_<name> settings to its base {hp.base!r})") from None
        hp.base_hparams = {k: getattr(resolved, k) for k in base_over}
        return hp

    @classmethod
    def wants_tokens(cls, hparams: "SPN.Hparams") -> bool:
        base_cls = get_method(hparams.base)
        return base_cls.wants_tokens(base_cls.make_hparams(hparams.base_hparams))

    def __init__(self, dims: Dims, hparams: Optional["SPN.Hparams"] = None):
        super().__init__(dims, hparams)
        base_cls = get_method(self.hp.base)
        self.base = base_cls(dims, base_cls.make_hparams(self.hp.base_hparams))
        self.needs_tokens = self.base.needs_tokens
        if self.hp.weight_decay < 0:
            self.hp = dataclasses.replace(self.hp, weight_decay=self.base.hp.weight_decay)
        self.bank: Optional[Tensor] = None  # static, not in state_dict: rebuilt (identically) after resume
        self.bank_rows: Optional[Tensor] = None
        self._bank_index: Optional[Tensor] = None
        self._probe: Optional[Features] = None

    # -- the base method, unchanged ---------------------------------------------------------
    def compose(self, reference: Features, text: Features) -> Tensor:
        return self.base.compose(reference, text)

    def embed_target(self, image: Features) -> Tensor:
        return self.base.embed_target(image)

    def loss(self, batch: Batch, ctx) -> Tensor:
        return self.base.loss(batch, ctx)

    def text_side_features(self, texts):
        return self.base.text_side_features(texts)

    def clean_probabilities(self):
        return self.base.clean_probabilities()

    # -- stages: the base's, then the static-bank stage -------------------------------------
    def stages(self, epochs: int) -> List[Stage]:
        out = [dataclasses.replace(s, lr=s.lr or self.base.hp.lr) for s in self.base.stages(epochs)]
        if self.hp.negatives and self.hp.stage2_epochs > 0:
            out.append(Stage(STAGE2, self.hp.stage2_epochs, self.query_parameters, self.bank_loss, lr=self.hp.lr))
        return out

    def on_epoch_start(self, ctx) -> None:
        if ctx.train.generated:
            ctx.log["spn_generated"] = ctx.train.generated
        if ctx.stage == STAGE2:
            if self.bank is None:
                self.build_bank(ctx.train)
            ctx.log["spn_bank"] = int(self.bank.shape[0])
        self.base.on_epoch_start(ctx)

    @torch.no_grad()
    def build_bank(self, train) -> None:
        """Encode every unique training image (references and targets) once with the current target
        side: the static, L2-normalised bank; ``bank_rows`` are their rows in the image table."""
        rows = torch.unique(torch.cat([train.reference_rows, train.target_rows]))
        was_training = self.training
        self.eval()
        self.bank = self.base.gallery_embeddings(train.images.features[rows])
        self.train(was_training)
        self.bank_rows = rows
        self._bank_index = torch.full((len(train.images),), -1, dtype=torch.long, device=rows.device)
        self._bank_index[rows] = torch.arange(len(rows), device=rows.device)

    def bank_loss(self, batch: Batch, ctx) -> Tensor:
        if self.bank is None:
            self.build_bank(ctx.train)
        query = F.normalize(self.base.compose(batch.reference, batch.text), dim=-1)
        return bank_info_nce(query, self.bank, self._bank_index[batch.target_rows], self.hp.temperature,
                             self.hp.neg_num)

    def query_parameters(self) -> List[torch.nn.Parameter]:
        """The base's parameters that its ``embed_target`` does not use (stage 2 trains only these)."""
        params = [p for p in self.base.parameters() if p.requires_grad]
        probe = self._probe_features()
        with torch.enable_grad():
            out = self.base.embed_target(probe)
            grads = (torch.autograd.grad(out.float().sum(), params, allow_unused=True)
                     if out.requires_grad and params else [None] * len(params))
        return [p for p, g in zip(params, grads) if g is None]

    def _probe_features(self) -> Features:
        device = next(self.base.parameters()).device
        if self._probe is not None:
            return self._probe.to(device)
        d = self.dims.embed
        if not self.base.needs_tokens:
            return Features(torch.randn(2, d, device=device))
        width = self.dims.tokens or d
        return Features(torch.randn(2, d, device=device), torch.randn(2, 4, width, device=device),
                        torch.ones(2, 4, dtype=torch.bool, device=device))

    # -- positives ----------------------------------------------------------------------------
    def extra_triplets(self, run) -> list:
        self._probe = run.images.features[:2]
        extra = list(self.base.extra_triplets(run))
        if self.hp.positives:
            extra += self.generate_positives(run)
        return extra

    def generate_positives(self, run) -> list:
        """Caption the training images, pair them by the rank window, write the triplets to
        ``<run>/spn_positives/`` in the official layout, and return them."""
        hp, layout = self.hp, run.data.layout
        paper = PAPER[layout]
        low = hp.window_low if hp.window_low >= 0 else paper["window"][0]
        high = hp.window_high if hp.window_high >= 0 else paper["window"][1]
        templates = parse_templates(paper["templates"] if hp.templates == "auto" else hp.templates)
        mode = paper["references"] if hp.references == "auto" else hp.references
        if mode not in ("annotated", "all"):
            raise ConfigError(f"spn.references must be annotated, all or auto; got {hp.references!r}")
        categories: Dict[str, str] = {}
        for cat, ids in run.data.split("train").gallery.items():
            for image in ids:
                categories.setdefault(image, cat)
        for t in run.train_triplets:
            categories.setdefault(t.reference, t.category)
            categories.setdefault(t.target, t.category)
        pool = sorted(i for i in categories if i in run.images.row)
        captions = caption_images(hp.captioner, run.data, pool, n=2 if layout == "fashioniq" else 1,
                                  seed=hp.gen_seed, path=hp.captions or None)
        if len(captions) < 2:
            raise DataError(f"the {hp.captioner!r} captioner captioned {len(captions)} of the {len(pool)} training "
                            "images; SPN's positives need captions for at least two (check the caption file's ids)")
        if len(captions) < len(pool):
            log.warning("spn: %d of %d training images have no caption and are left out of the pairing",
                        len(pool) - len(captions), len(pool))
        embed = run.images.features.embed[run.images.rows(pool).to(run.images.features.embed.device)].cpu()
        references = [t.reference for t in run.train_triplets] if mode == "annotated" else None
        gen = generate(layout, pool, categories, embed, captions, references, low=low, high=high,
                       templates=templates, per_reference=hp.per_reference, max_triplets=hp.max_generated,
                       seed=hp.gen_seed, fits=_fits_context(run.backbone))
        gen.summary["captioner"] = hp.captioner
        write_official(layout, gen, run.run_dir / "spn_positives")
        log.info("spn: %d generated triplets (ranks %s of %d images; %d of %d texts fell back to the target "
                 "caption) -> %s", len(gen.triplets), gen.summary["rank_window"], gen.summary["pool"],
                 gen.summary["texts_fell_back_to_target"], gen.summary["texts"], run.run_dir / "spn_positives")
        return gen.triplets


def _fits_context(backbone):
    """``text -> bool``: whether the backbone's tokenizer holds the text without truncation (None if unknown)."""
    tokenizer = getattr(backbone, "tokenizer", None)
    length = getattr(tokenizer, "context_length", None)
    if not isinstance(length, int) or not hasattr(tokenizer, "encode"):
        return None
    return lambda text: len(tokenizer.encode(text)) + 2 <= length  # + start and end tokens
