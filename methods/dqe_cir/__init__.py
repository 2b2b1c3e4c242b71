"""DQE-CIR: distinctive query embeddings (arXiv 2603.04037) over frozen backbone features.

The paper (no public code): plain contrastive training, one positive against everything
else, suppresses related images and lets different edit intents collapse together. DQE-CIR
answers with (1) learnable attribute weights — colour and shape sub-queries beside the global
query, weighted by learnable weights conditioned on the modification text and summed into the
final query — and (2) target-relative negative sampling — candidates scored relative to the
target (a Δ-score), one negative per query drawn from a mid-zone that excludes easy negatives
and likely false negatives, refreshed at intervals — trained with a pairwise objective plus a
KL term, and attribute-specific margin losses on the sub-queries.

What this module builds, and the choices the paper leaves open (marked *choice*):

Queries
    *Global query* ``q_g``: the CLIP4Cir Combiner (``cirbench_methods.combiner``) over the
    normalised reference and text embeddings — *choice*: the paper composes with BLIP-2; cirbench
    keeps every method on the same frozen features, and the shared Combiner makes the ablation
    against ``clip4cir`` differ only in DQE-CIR's own parts.
    *Attribute sub-queries* ``q_color``, ``q_shape``: each ``normalise(reference + head_a(z))``, a
    residual edit of the reference predicted by its own MLP head from the Combiner's projected
    text/image features ``z`` — *choice*: an attribute edit changes the reference along one
    attribute, so each head predicts only that change; the margin losses below make the heads
    attribute-specific.
    *Attribute weights* ``w = softmax(G([text, log1p(counts)]) + β ⊙ [0, r_color, r_shape])`` over
    (global, colour, shape); final query ``q = Σ w_a q_a``. ``counts`` are the text's colour and
    shape words (values and cues, :mod:`.attributes`, read from the raw text through the
    ``text_side_features`` hook, never from dataset metadata); ``r_a`` is attribute a's share of
    them. *Choice*: the learned gate ``G`` (zero-initialised last layer) sees the frozen text
    embedding and the counts; the learnable per-attribute scale ``β`` (init ``attribute_prior``)
    starts the weights from the wording, so a colour text leans on the colour sub-query from the
    first step and training can re-weigh it. Only attribute *classes* are counted, not which
    colour: the value itself comes from the text embedding, as for every other method.

Target-relative negatives
    *Δ-score* (*choice*, the paper's "relative to the target"): ``Δ_j = (s(q, t) − s(q, c_j)) / σ_q``,
    cosine similarities under the current model, in units of ``σ_q``, the spread (std) of the
    query's similarities over all candidates — how far candidate ``j`` trails the target within
    the query's own similarity distribution. Standardising makes hand-set bounds carry over
    between backbones and training stages (raw cosine gaps of the tiny backbone are ~10× smaller
    than a pretrained CLIP's, and they widen as training goes on). ``Δ ≤ delta_low``: the
    candidate scores about as high as the target or higher, a likely false negative (or a noisy
    label); ``Δ ≥ delta_high``: an easy negative. The *mid-zone* is ``delta_low < Δ < delta_high``;
    one candidate is drawn uniformly from it per query. Candidates are the training images
    (references and targets of the training triplets; never a validation image), never the
    query's target or reference. A query whose mid-zone is empty gets no negative that round
    (its pairwise, KL and margin terms are masked; InfoNCE still applies); the share of queries
    with one is logged as ``midzone_coverage``, the mean zone size as ``midzone_size``.
    *Bounds* (*choice*, "hand-set" in the paper): ``delta_low = 0.05``, ``delta_high = 0.5``. Measured
    on shapes-cirr with a trained model (1,362 training images): the query's img_set neighbours
    sit at Δ ≈ −0.5…0.2, the 10th-nearest candidate at Δ ≈ 0.04, the 50th at 0.7, the median
    candidate at 1.8; the zone holds ~20 candidates per query (ranks ~10–35): close enough to be
    informative, leaving out the handful that tie with or beat the target. Other data may need
    other bounds, as the paper says: ``--set dqe-cir.delta_low=…``.
    *Refresh* every ``refresh_every = 2`` epochs in ``on_epoch_start`` (epoch 0 included) with
    the model in eval mode — *choice*: cirbench trains 10 epochs, so five refreshes follow the
    moving embedding space (QuRe, a related method, redefines its negatives every 6 of its
    longer schedule). The current negatives are part of the method's state (``get_extra_state``),
    so a resumed run uses the same ones.

Objective (weights *choice*)
    ``InfoNCE(q, in-batch targets)`` — *choice*: kept as the base alignment term (the global
    ranking still needs it; DQE-CIR adds to the base model's objective)
    ``+ pair_weight · pairwise + kl_weight · KL`` (``cirbench.losses.pairwise_kl``): pairwise is
    ``−log σ((s⁺ − s⁻)/τ_p)``; the KL term aligns the query's two-way distribution over (target,
    negative) with the target's own, ``softmax([1, t·n]/τ_p)``, so a related mid-zone negative keeps
    part of the mass instead of being pushed to zero (the paper's "relevance suppression").
    ``τ_p = pair_temperature = 0.05``: at the default τ = 0.01 the teacher would be one-hot for every
    negative below cosine 0.95.
    ``+ margin_weight · Σ_a mean_i r_a,i · max(0, m_a − (q_a·t − q_a·n))``: each attribute sub-query
    must prefer the target to the mid-zone negative by its margin, weighted by how much the text
    is about that attribute. Margins 0.05 in cosine units: above the raw gap between a
    target and its mid-zone candidates on the shapes data (~0.005–0.05), so the hinge stays
    active until a sub-query separates them clearly;
    ``pair_weight = 1``, ``kl_weight = 0.5``, ``margin_weight = 0.5`` keep InfoNCE the largest term.

Ablations (``dqe-cir:no-attr``, ``dqe-cir:no-midzone``; hyper-parameter ``ablation``): ``no-attr``
drops the sub-queries, weights and margin losses (the final query is ``q_g``); ``no-midzone``
draws each negative uniformly from all candidates except target and reference (bounds ignored),
same losses and refresh schedule.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, List, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cirbench.errors import ConfigError
from cirbench.losses import info_nce, pairwise_kl
from cirbench.method import Method
from cirbench.registry import register_method
from cirbench.types import Batch, Dims, Features
from cirbench_methods.combiner import Combiner, CombinerHparams
from cirbench_methods.dqe_cir.attributes import (
    ATTRIBUTES,
    attribute_counts,
    attribute_relevance,
)

if TYPE_CHECKING:  # pragma: no cover
    from cirbench.training import TrainContext

ABLATIONS = ("full", "no-attr", "no-midzone")


def select_midzone(delta: Tensor, forbidden: Tensor, low: float, high: float,
                   generator: Optional[torch.Generator] = None) -> Tensor:
    """One candidate per row drawn uniformly from ``low < delta < high``, never where ``forbidden``.

    ``delta`` [Q, M] Δ-scores, ``forbidden`` [Q, M] bool (the query's target and reference).
    Returns [Q] column indices, -1 where a row's mid-zone is empty. Bounds of ±inf make it a
    uniform draw over all allowed candidates.
    """
    allowed = (delta > low) & (delta < high) & ~forbidden
    noise = torch.rand(delta.shape, generator=generator, device=delta.device)
    pick = torch.where(allowed, noise, torch.full_like(noise, -1.0)).argmax(-1)
    return torch.where(allowed.any(-1), pick, torch.full_like(pick, -1))


@register_method("dqe-cir")
class DqeCir(Method):
    """DQE-CIR (see the module docstring)."""

    arg_hparam = "ablation"

    @dataclass
    class Hparams(CombinerHparams):
        head_ratio: int = 2  # attribute heads' hidden width, × embed dim
        attribute_prior: float = 2.0  # initial β: how strongly the wording sets the weights
        delta_low: float = 0.05
        delta_high: float = 0.5
        refresh_every: int = 2
        pair_temperature: float = 0.05
        pair_weight: float = 1.0
        kl_weight: float = 0.5
        margin_weight: float = 0.5
        margin_color: float = 0.05
        margin_shape: float = 0.05
        ablation: str = "full"

    def __init__(self, dims: Dims, hparams=None):
        super().__init__(dims, hparams)
        hp = self.hp
        if hp.ablation not in ABLATIONS:
            raise ConfigError(f"dqe-cir ablation must be one of {', '.join(ABLATIONS)}, got {hp.ablation!r} "
                              "(e.g. -m dqe-cir:no-attr)")
        if not hp.delta_low < hp.delta_high:
            raise ConfigError(f"dqe-cir needs delta_low < delta_high, got {hp.delta_low} and {hp.delta_high}")
        if hp.refresh_every < 1:
            raise ConfigError(f"dqe-cir.refresh_every must be >= 1 epoch, got {hp.refresh_every}")
        d = dims.embed
        self.combiner = Combiner.from_hparams(d, hp)
        self.use_attributes = hp.ablation != "no-attr"
        self.margins = [hp.margin_color if a.name == "color" else hp.margin_shape for a in ATTRIBUTES]
        if self.use_attributes:
            z = 2 * hp.projection_ratio * d
            self.heads = nn.ModuleList(
                nn.Sequential(nn.Linear(z, hp.head_ratio * d), nn.ReLU(), nn.Dropout(hp.dropout),
                              nn.Linear(hp.head_ratio * d, d)) for _ in ATTRIBUTES)
            k = 2 * len(ATTRIBUTES)
            self.gate = nn.Sequential(nn.Linear(d + k, d), nn.ReLU(), nn.Linear(d, 1 + len(ATTRIBUTES)))
            nn.init.zeros_(self.gate[-1].weight)
            nn.init.zeros_(self.gate[-1].bias)
            self.prior = nn.Parameter(torch.full((len(ATTRIBUTES),), float(hp.attribute_prior)))
        self.negatives: Optional[Tensor] = None  # [N] image rows, -1 = none this round

    # -- attribute words, read once from the raw texts --------------------------------------------
    def text_side_features(self, texts: List[str]) -> Optional[Tensor]:
        return attribute_counts(texts) if self.use_attributes else None

    # -- queries ---------------------------------------------------------------------------------
    def attribute_weights(self, text: Features) -> Tensor:
        """[B, 1 + A] weights of (global, colour, shape) from the text embedding and its attribute words."""
        counts = text.extra if text.extra is not None else attribute_counts([""] * text.embed.shape[0]).to(text.embed)
        counts = counts.to(text.embed.dtype)
        logits = self.gate(torch.cat([F.normalize(text.embed, dim=-1), torch.log1p(counts)], -1))
        prior = torch.cat([torch.zeros_like(logits[:, :1]), attribute_relevance(counts) * self.prior], -1)
        return (logits + prior).softmax(-1)

    def queries(self, reference: Features, text: Features):
        """(final query, [global, colour, shape] sub-queries, weights); sub-queries normalised."""
        image, words = F.normalize(reference.embed, dim=-1), F.normalize(text.embed, dim=-1)
        z = self.combiner.project(image, words)
        q_global = F.normalize(self.combiner(image, words, projected=z), dim=-1)
        if not self.use_attributes:
            return q_global, [q_global], None
        subs = [q_global] + [F.normalize(image + head(z), dim=-1) for head in self.heads]
        w = self.attribute_weights(text)
        final = sum(w[:, i:i + 1] * q for i, q in enumerate(subs))
        return final, subs, w

    def compose(self, reference: Features, text: Features) -> Tensor:
        return self.queries(reference, text)[0]

    # -- target-relative negatives ----------------------------------------------------------------
    def on_epoch_start(self, ctx: TrainContext) -> None:
        if ctx.epoch % self.hp.refresh_every == 0 or self.negatives is None or \
                self.negatives.shape[0] != len(ctx.train):
            self.refresh_negatives(ctx)

    @torch.no_grad()
    def refresh_negatives(self, ctx: TrainContext, chunk: int = 1024) -> None:
        """One negative per training triplet from the current model's Δ-scores (see module docstring)."""
        train, hp = ctx.train, self.hp
        was_training = self.training
        self.eval()
        feats = train.images.features
        pool = torch.unique(torch.cat([train.reference_rows, train.target_rows]))
        gallery = self.gallery_embeddings(feats[pool])  # [M, D], normalised
        queries = self.query_embeddings(feats[train.reference_rows], train.texts.features[train.text_rows[:, 0]])
        # position of each triplet's target / reference in the pool
        where = torch.full((feats.embed.shape[0],), -1, dtype=torch.long, device=pool.device)
        where[pool] = torch.arange(pool.shape[0], device=pool.device)
        tgt, ref = where[train.target_rows], where[train.reference_rows]
        low, high = (hp.delta_low, hp.delta_high) if hp.ablation != "no-midzone" else (-float("inf"), float("inf"))
        seed = int(torch.randint(2**31 - 1, (1,), generator=ctx.generator)) if ctx.generator is not None else 0
        gen = torch.Generator(device=gallery.device).manual_seed(seed)
        picks, sizes = [], []
        for s in range(0, queries.shape[0], chunk):
            sims = queries[s:s + chunk] @ gallery.t()
            rows = torch.arange(sims.shape[0], device=sims.device)
            spread = sims.std(-1, keepdim=True).clamp_min(1e-6)
            delta = (sims[rows, tgt[s:s + chunk]][:, None] - sims) / spread
            forbidden = torch.zeros_like(sims, dtype=torch.bool)
            forbidden[rows, tgt[s:s + chunk]] = True
            forbidden[rows, ref[s:s + chunk]] = True
            picks.append(select_midzone(delta, forbidden, low, high, gen))
            sizes.append(((delta > low) & (delta < high) & ~forbidden).sum(-1))
        pick = torch.cat(picks) if picks else torch.zeros(0, dtype=torch.long, device=pool.device)
        self.negatives = torch.where(pick >= 0, pool[pick.clamp_min(0)], torch.full_like(pick, -1))
        if pick.numel():
            ctx.log["midzone_coverage"] = float((pick >= 0).float().mean())
            ctx.log["midzone_size"] = float(torch.cat(sizes).float().mean())
        self.train(was_training)

    def get_extra_state(self):
        return {"negatives": None if self.negatives is None else self.negatives.cpu()}

    def set_extra_state(self, state) -> None:
        neg = (state or {}).get("negatives")
        self.negatives = None if neg is None else neg.to(next(self.parameters()).device)

    # -- objective --------------------------------------------------------------------------------
    def loss(self, batch: Batch, ctx: TrainContext) -> Tensor:
        hp = self.hp
        final, subs, _ = self.queries(batch.reference, batch.text)
        q = F.normalize(final, dim=-1)
        t = F.normalize(self.embed_target(batch.target), dim=-1)
        total = info_nce(q, t, hp.temperature)
        if self.negatives is None:
            return total
        neg_rows = self.negatives.to(batch.index.device)[batch.index]
        valid = neg_rows >= 0
        n = F.normalize(self.embed_target(ctx.train.images.features[neg_rows.clamp_min(0)]), dim=-1)
        pair, kl = pairwise_kl(q, t, n, hp.pair_temperature, valid)
        total = total + hp.pair_weight * pair + hp.kl_weight * kl
        if self.use_attributes and hp.margin_weight > 0:
            relevance = attribute_relevance(batch.text.extra.float()) * valid[:, None].float()
            for a, q_a in enumerate(subs[1:]):
                gap = (q_a.float() * (t.float() - n.float())).sum(-1)
                hinge = F.relu(self.margins[a] - gap)
                total = total + hp.margin_weight * (relevance[:, a] * hinge).sum() / valid.sum().clamp_min(1)
        return total
