"""SPN (Feng et al., ACM MM 2024, arXiv 2404.11317): scaling positives and negatives for CIR, a plug-in over any base
method (``spn:clip4cir``, ``spn:ncl-cir``, ...) that leaves its architecture alone. The paper's two parts stack:

* **Scaling positives**: caption every training image (LLaVA, "briefly describe the image in k words"); for each
  reference, draw a target uniformly from a rank window of image-only similarity (Unicom ViT-L/14); modification
  text from templates over the two captions ("{tgt} instead of {ref}", "Unlike {ref}, I want {tgt}", "{tgt}");
  optionally subsample K; append.
* **Scaling negatives**: a second stage after the base's training: freeze the image side, encode every unique
  training image once into a static, L2-normalised bank, train the query side with cross-entropy against the whole
  bank (label = the target's row) or ``neg_num`` sampled negatives (CLIP base: 3 epochs, lr 2e-5, tau 0.02, batch
  256); best checkpoint on validation.

What the released code (BUAADreamer/SPN4CIR) does where the paper is brief, and cirbench follows:

* Pool: ``zscir/get_cir_data.py`` pairs ``CIRDataset.imagenames`` of the train split (``zscir/data_utils_gen.py``):
  each reference and target of the training triplets once, replaced by ``optimized_images.json``, the list with
  pixel-identical copies merged (``zscir/deduplicate_images.py``). FashionIQ: 25,136 images in the triplets, not the
  45,429 of the split files. Window (CLIP base, ``--i2i_rank 10000 --i2i_rank_max 20000`` FashionIQ, ``10000 15000``
  CIRR) as absolute ranks of that pool; cirbench keeps them as fractions so they scale to small data: 10,000 /
  25,136 = 0.40 to 0.80 on FashionIQ, 10,000 / 16,939 = 0.59 to 0.89 on CIRR (16,939 = the train split; CIRR's
  train captions are not here to count the triplets' images, which on val cover 2,265 of 2,297). References: the
  annotated references on FashionIQ (``--refer``), every pool image on CIRR. Templates: "{tgt}" on FashionIQ
  (``--p_list 2``), the first two on CIRR.
* Bank: rows are ``imagename2id`` of that deduplicated list (``clip4cir/models.py`` ``extract_bank_features``), so
  copies of an image share one row: cirbench merges training images with identical frozen embeddings (the same
  pixels; :func:`.positives.duplicate_groups`) into one bank row, and a query whose target has copies is labelled
  with the shared row, so no copy of its target is a negative.
* Texts: one per generated triplet. FashionIQ stores ``captions = [target caption]`` and the loader uses the single
  caption as is (the c1/c2 mixing is only for annotated triplets); CIRR stores one text per template and draws one
  per step. A text CLIP's tokenizer rejects falls back to the target caption. Captions: k = 4 words on FashionIQ and
  8 on CIRR for the CLIP base (``--word_num``).

What cirbench chose, and why:

* Names: ``spn:<base>`` = both parts, ``spn:<base>+positives`` / ``+negatives`` = one (``negatives=false`` /
  ``positives=false``): the ablation is one grid, distinct row names. ``base_<name>`` / ``base_hparams``: the base's.
* Positives (``Method.extra_triplets``, :mod:`.positives`); captions (``captioner``, :mod:`.captioners`):
  ``attributes`` writes a brief caption of at most ``caption_words`` words (-1 = the released k per dataset; 0 =
  the full scene description) of a shapes image from its metadata, in place of LLaVA; ``file`` reads captions made
  offline (path in ``captions``). Window: ``window_low`` / ``window_high`` (-1 = the released one above; below 1
  fractions of the pool, 1 and above absolute ranks). One target per reference (``per_reference``), no
  subsampling (``max_generated`` = K, 0 = all), ``references`` annotated / all / auto, ``templates`` indices /
  auto, all as the CLIP base per dataset.
* Pairing encoder (``pair_backbone``, ``pair_weights``: a spec and weights as ``cirbench.backbones.build_backbone``
  takes). Default (empty): the run's own backbone's image embeddings, which every run has cached, so pairing costs
  nothing; it is image-only similarity, as the paper's, but from a CLIP image tower, not Unicom. Unicom is not an
  open_clip model and cirbench downloads nothing; on the shapes data the tiny backbone is the only encoder that
  knows that world. On real data set e.g. ``pair_backbone=open_clip:ViT-L-14 pair_weights=<tag or file>``.
* A FashionIQ triplet takes its reference's category. cirbench's FashionIQ triplet holds two captions and its
  training draws from c1+c2, c2+c1, c1, c2 (:func:`cirbench.data.triplets.train_texts`), so a generated one carries
  its one text twice and SPN points every caption variant of its generated triplets at that text
  (:func:`one_text_per_generated_triplet`), never "A and A". On CIRR cirbench fixes one template per triplet at
  generation (one text per triplet is all a cirbench CIRR triplet trains on), where the released code keeps both
  and draws per step. A text longer than the text encoder's context falls back to the target caption; a warning
  says when more than ``FALLBACK_WARNING`` of the texts do.
* Generated triplets depend on ``gen_seed``, not the training seed (seeds measure training variance); they come
  after the annotated ones, never noised or evaluated, written in the official layout to ``<run>/spn_positives/``.
  The pool and the annotated references come from the noisy training triplets, whose image sets are those of the
  clean ones (TME noise permutes fields among triplets). By default they join every stage, so +positives alone
  is a meaningful row; ``positives_in=stage2`` adds them in stage 2 only, as the released code does (the
  leaderboards set it). Stage 2 starts from the base's last epoch (``stage2_from=last``), or from its best,
  as SPN4CIR starts from the best base checkpoint (``best``, set by the leaderboards).
* Stage 2 (``Method.stages``): ``stage2_epochs`` 3, ``temperature`` 0.02, ``stage2_batch_size`` (0 = the run's
  batch size; the paper's is 256, which the leaderboards set), bank InfoNCE
  (``cirbench.losses.bank_info_nce``; ``neg_num`` 0 = whole bank). ``lr`` 1e-4, not 2e-5: the paper fine-tunes a
  pretrained text encoder; cirbench's query side is the base's small head, trained at 1e-3 in stage 1, so stage 2
  uses a tenth. Stage 1 keeps the base's lr; ``weight_decay`` -1 = the base's, for both stages.
* "Image side" = every base parameter the base's ``embed_target`` depends on (found by autograd on a probe batch),
  frozen because the bank is static; ``compose``'s parameters train (clip4cir: the Combiner). Over a base that
  fine-tunes the backbone, stage 2 also trains the text tower (``stage2_trains`` auto; none / text), as SPN4CIR
  does over its CLIP base: ``spn:clip4cir`` with ``base_finetune=both base_combiner=false`` is SPN's "CLIP4Cir+SPN"
  row (a fine-tuned CLIP with the sum, its text tower trained against the bank of the frozen image side). The
  bank (training images, generated ones included) is rebuilt after a resume, identical as the target side is
  frozen. Stage 2 uses the plain bank InfoNCE even over a
  noise-aware base (its clean probabilities do not weight it). Best epoch on validation over both stages.

Measured effects: ``benchmarks/results/spn_fidelity.md`` (these choices against the earlier ones) and
``benchmarks/results/spn_ablation.md``.
"""
from __future__ import annotations

import dataclasses
import itertools
import logging
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from cirbench.backbones import build_backbone
from cirbench.data.triplets import train_texts
from cirbench.errors import ConfigError, DataError
from cirbench.features import image_features
from cirbench.losses import bank_info_nce
from cirbench.method import Method
from cirbench.registry import get_method, register_method
from cirbench.types import Batch, Dims, Features, Stage
from cirbench_methods.spn.captioners import caption_images
from cirbench_methods.spn.positives import (
    duplicate_groups,
    generate,
    parse_templates,
    triplet_pool,
    write_official,
)

log = logging.getLogger("cirbench")

PARTS = ("positives", "negatives")
STAGE2 = "spn-negatives"
#: the released CLIP-base settings per layout (module docstring): rank windows as fractions of the pool of
#: training-triplet images (FashionIQ 25,136; CIRR at most 16,939), caption length in words
PAPER = {
    "fashioniq": {"window": (10_000 / 25_136, 20_000 / 25_136), "references": "annotated", "templates": "2",
                  "words": 4},
    "cirr": {"window": (10_000 / 16_939, 15_000 / 16_939), "references": "all", "templates": "0,1", "words": 8},
}
#: warn when more than this share of the generated texts fall back to the target caption
FALLBACK_WARNING = 0.05
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
        caption_words: int = -1  # -1: the released k per dataset (4 FashionIQ, 8 CIRR); 0: full descriptions
        pair_backbone: str = ""  # backbone spec of the pairing encoder; empty: the run's own
        pair_weights: str = ""
        window_low: float = -1.0  # -1: the released window, as a fraction of the pool
        window_high: float = -1.0
        references: str = "auto"  # annotated | all | auto (the paper's per dataset)
        templates: str = "auto"  # indices into positives.TEMPLATES, e.g. "0,1,2"
        per_reference: int = 1
        max_generated: int = 0
        gen_seed: int = 0
        # negatives (stage 2): lr and temperature are stage 2's
        stage2_epochs: int = 3
        stage2_batch_size: int = 0  # 0: the run's batch size
        stage2_trains: str = "auto"  # backbone towers stage 2 fine-tunes: auto | none | text
        stage2_from: str = "last"  # last | best: the base epoch stage 2 starts from (SPN4CIR: its best checkpoint)
        positives_in: str = "all"  # all | stage2: the stages the generated triplets join (SPN4CIR: stage 2)
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
        for name, allowed in (("stage2_from", ("last", "best")), ("positives_in", ("all", "stage2"))):
            if getattr(self.hp, name) not in allowed:
                raise ConfigError(f"spn.{name} must be {' or '.join(allowed)}; got {getattr(self.hp, name)!r}")
        if self.hp.stage2_trains not in ("auto", "none", "text"):
            raise ConfigError(f"spn.stage2_trains must be auto, none or text; got {self.hp.stage2_trains!r}")
        if self.hp.stage2_batch_size < 0:
            raise ConfigError(f"spn.stage2_batch_size must be >= 0 (0: the run's batch size); "
                              f"got {self.hp.stage2_batch_size}")
        base_cls = get_method(self.hp.base)
        self.base = base_cls(dims, base_cls.make_hparams(self.hp.base_hparams))
        self.needs_tokens = self.base.needs_tokens
        if self.hp.weight_decay < 0:
            self.hp = dataclasses.replace(self.hp, weight_decay=self.base.hp.weight_decay)
        self.bank: Optional[Tensor] = None  # static, not in state_dict: rebuilt (identically) after resume
        self.bank_rows: Optional[Tensor] = None
        self.bank_merged = 0
        self.n_positives = 0  # the last n_positives training triplets are SPN's generated ones
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
        only_annotated = self.hp.positives_in == "stage2" and self.hp.negatives and self.hp.stage2_epochs > 0
        out = [dataclasses.replace(s, lr=self.base.hp.lr if s.lr is None else s.lr,
                                   annotated_only=s.annotated_only or only_annotated)
               for s in self.base.stages(epochs)]
        if self.hp.negatives and self.hp.stage2_epochs > 0:
            out.append(Stage(STAGE2, self.hp.stage2_epochs, self.query_parameters, self.bank_loss, lr=self.hp.lr,
                             batch_size=self.hp.stage2_batch_size or None, trains=self.stage2_towers(out),
                             from_best=self.hp.stage2_from == "best"))
        return out

    def stage2_towers(self, base_stages: List[Stage]) -> tuple:
        """The backbone towers stage 2 fine-tunes: ``auto`` = the text tower when the base fine-tunes the
        backbone (SPN4CIR trains CLIP's text tower against the bank of its frozen image side), else none."""
        if self.hp.stage2_trains == "auto":
            return ("text",) if any(s.trains for s in base_stages) else ()
        return {"none": (), "text": ("text",)}[self.hp.stage2_trains]

    def on_epoch_start(self, ctx) -> None:
        if ctx.train.generated:
            ctx.log["spn_generated"] = ctx.train.generated
            one_text_per_generated_triplet(ctx.train, min(self.n_positives, ctx.train.generated))
        if ctx.stage == STAGE2:
            if self.bank is None:
                self.build_bank(ctx.train)
            ctx.log["spn_bank"] = int(self.bank.shape[0])
            ctx.log["spn_bank_merged"] = self.bank_merged
        self.base.on_epoch_start(ctx)

    @torch.no_grad()
    def build_bank(self, train) -> None:
        """Encode every unique training image (references and targets) once with the current target
        side: the static, L2-normalised bank. Images with identical frozen features (pixel-identical
        copies) share one row; ``bank_rows`` are the rows in the image table the bank holds."""
        used = torch.unique(torch.cat([train.reference_rows, train.target_rows]))
        groups = duplicate_groups(train.images.features.embed[used])  # first copy of each, within `used`
        first = groups == torch.arange(len(used), device=groups.device)
        rows = used[first]
        was_training = self.training
        self.eval()
        self.bank = self.base.gallery_embeddings(train.images.features[rows])
        self.train(was_training)
        self.bank_rows, self.bank_merged = rows, int(len(used) - len(rows))
        position = torch.cumsum(first.long(), 0) - 1  # bank row of each first copy
        self._bank_index = torch.full((len(train.images),), -1, dtype=torch.long, device=used.device)
        self._bank_index[used] = position[groups].to(used.device)

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
        device = next(itertools.chain(self.base.parameters(), self.base.buffers()), torch.empty(0)).device
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
        words = paper["words"] if hp.caption_words < 0 else hp.caption_words
        pool, categories = triplet_pool(run.train_triplets)
        pool = [i for i in pool if i in run.images.row]
        captions = caption_images(hp.captioner, run.data, pool, n=1, seed=hp.gen_seed, path=hp.captions or None,
                                  words=words)
        if len(captions) < 2:
            raise DataError(f"the {hp.captioner!r} captioner captioned {len(captions)} of the {len(pool)} training "
                            "images; SPN's positives need captions for at least two (check the caption file's ids)")
        if len(captions) < len(pool):
            log.warning("spn: %d of %d training images have no caption and are left out of the pairing",
                        len(pool) - len(captions), len(pool))
        references = [t.reference for t in run.train_triplets] if mode == "annotated" else None
        fits, context = _fits_context(run.backbone)
        gen = generate(layout, pool, categories, self.pairing_embeddings(run, pool), captions, references, low=low,
                       high=high, templates=templates, per_reference=hp.per_reference,
                       max_triplets=hp.max_generated, seed=hp.gen_seed, fits=fits)
        gen.summary.update(captioner=hp.captioner, caption_words=words,
                           pairing_backbone=hp.pair_backbone or "the run's backbone")
        write_official(layout, gen, run.run_dir / "spn_positives")
        summary = gen.summary
        log.info("spn: %d generated triplets (ranks %s of %d training-triplet images; %d of %d texts fell back to "
                 "the target caption) -> %s", len(gen.triplets), summary["rank_window"], summary["pool"],
                 summary["texts_fell_back_to_target"], summary["texts"], run.run_dir / "spn_positives")
        n_texts = max(summary["texts"], 1)
        if summary["texts_fell_back_to_target"] > FALLBACK_WARNING * n_texts:
            log.warning("spn: %d of %d generated texts (%.0f%%) are longer than the text encoder's %s-token context "
                        "and fell back to the target caption alone; shorter captions keep the templates "
                        "(--set spn.caption_words=K, or shorter captions in the caption file)",
                        summary["texts_fell_back_to_target"], summary["texts"],
                        100 * summary["texts_fell_back_to_target"] / n_texts, context)
        if summary["target_captions_too_long"] > FALLBACK_WARNING * n_texts:
            log.warning("spn: %d of %d target captions alone are longer than the text encoder's %s-token context and "
                        "are truncated (--set spn.caption_words=K, or shorter captions in the caption file)",
                        summary["target_captions_too_long"], summary["texts"], context)
        self.n_positives = len(gen.triplets)
        return gen.triplets

    def pairing_embeddings(self, run, pool: List[str]) -> Tensor:
        """Image embeddings of ``pool`` (on the CPU) that pairing ranks by: the run's backbone features, or
        those of ``pair_backbone`` with the run's image preprocessing (built, used and released here; its
        features are cached like any run's)."""
        if not self.hp.pair_backbone:
            embed = run.images.features.embed
            return embed[run.images.rows(pool).to(embed.device)].float().cpu()
        backbone = build_backbone(self.hp.pair_backbone, self.hp.pair_weights or None, run.cache_dir,
                                  preprocess=run.spec.preprocess).to(run.device)
        log.info("spn: pairing by %s image embeddings", self.hp.pair_backbone)
        table = image_features(backbone, pool, run.data.image_paths, tokens=False, cache_dir=run.cache_dir,
                               desc="spn: encoding images for pairing")
        del backbone
        return table.features.embed.float().cpu()


def one_text_per_generated_triplet(train, n: int) -> None:
    """Point every caption variant of the last ``n`` training triplets at one text: the shortest of their
    training texts, which for a generated FashionIQ triplet (its one text twice) is that text alone,
    not "<text> and <text>". A no-op on CIRR, whose triplets have one text."""
    if n <= 0:
        return
    first = len(train) - n
    rows = [train.texts.row[min(train_texts(train.layout, t), key=len)] for t in train.triplets[first:]]
    train.text_rows[first:] = torch.tensor(rows, dtype=torch.long, device=train.text_rows.device)[:, None]


def _fits_context(backbone):
    """(``text -> bool``: whether the backbone's tokenizer holds the text without truncation, the context
    length); (None, None) when the tokenizer does not say."""
    tokenizer = getattr(backbone, "tokenizer", None)
    length = getattr(tokenizer, "context_length", None)
    if not isinstance(length, int) or not hasattr(tokenizer, "encode"):
        return None, None
    return (lambda text: len(tokenizer.encode(text)) + 2 <= length), length  # + start and end tokens
