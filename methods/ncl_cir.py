"""NCL-CIR: Noise-aware Contrastive Learning for CIR (ICASSP 2025, arXiv 2504.04339).

The paper: mismatched triplets used as positives make the model overfit. A Weight Compensation Block (WCB)
multiplies CLIP's token sequences (text: start, words, end; image: global token, then patches) element-wise by
"diverse" weight maps (``T* = T ⊗ Att``: Att_mod, Att_ref, Att_tar); a Noise-pair Filter Block (NFB) fits a
Gaussian mixture on per-sample losses, giving the soft labels of a soft-label NCE loss.

``ncl-cir`` is the paper's method as written: WCB, a free two-component GMM on per-sample losses with the
NCR/DivideMix settings (``filter_fit=gmm``, ``filter_loss=targets``), soft labels, soft-label NCE. cirbench's
own filter is the named variant ``ncl-cir:robust`` (``NclCir.variants``: ``filter_fit=anchored``,
``text_check``, ``filter_loss=ref``, below); it runs beside the paper's in the default grid.

Where the paper is silent, cirbench chose (measured: benchmarks/results/ncl_cir_noise.md):

* Weight maps: ``heads`` (K=4) per sequence (text, reference, target: each its own), each a token softmax of a
  small MLP's scores (LayerNorm → Linear → GELU → Linear to K; padding masked): "which words / patches matter".
  A penalty (weight ``diversity``) on the squared cosine between every two maps of a sequence keeps them apart.
* "Diverse weight maps" (``map_fusion``): read as the paper's ``T* = T ⊗ Att`` with a token × channel ``Att``.
  ``channel`` (default): per-channel softmax gates over the K maps, ``Att[l, j] = Σ_k w_kj Att_k[l]``, so each
  channel pools the tokens with its own mixture of the maps (gates start at the plain mean); then
  ``e = g + W·dropout(Σ_l Att[l] ⊙ T_l)``. ``mean`` (the earlier code): one effective map, the mean of the K
  softmaxes, so K and the penalty only shape a mixture. ``project``: K views, each map's pooled vector through its
  own projection, summed (K·d² parameters per sequence, the same as concatenating the K vectors). Measured on the
  shapes benchmark (3 seeds, both layouts, clean and mixed 0.5; "Weight maps" in the results file): with the
  paper's filter all four (channel, mean K=4, mean K=1, project) lie within one seed std; with
  ``ncl-cir:robust``'s filter ``project`` lost 5 points of FashionIQ R@10 on clean data against ``channel``
  (it overfits, as concatenation did). So ``channel``: the literal reading of ``T ⊗ Att``, at no measured cost
  against the mixture. Its gates move little from 1/K in 10 epochs at lr 1e-3, so it trains close to ``mean``;
  on this benchmark one map (``heads=1``) is as good as K.
* Compensation: projections zero-initialised and ``map_dropout`` 0.5 on the pooled vectors, so training starts
  from the global features.
* Composition: the CLIP4Cir Combiner (``cirbench_methods.combiner``) over the compensated reference and text;
  target = the compensated target. So NCL-CIR differs from ``clip4cir`` only by WCB, NFB and loss. Frozen backbone
  (as for every cirbench method); AdamW, ``lr`` 1e-3, ``temperature`` 0.01.
* Filter loss (``filter``, on): eval mode, first caption, each query's InfoNCE against every distinct training
  target (``filter_loss=targets``: the NCR/DivideMix per-sample loss, independent of batching).
* Mixture fit (``filter_fit=gmm``): NCR/DivideMix (min-max normalised, GaussianMixture(2, max_iter=10, tol=1e-2,
  reg_covar=5e-4, random_state=0), clean = lower-mean posterior). On clean data it still splits off the long
  loss tail, the hardest clean triplets; no statistic of the free fit told clean from noisy data.
* ``ncl-cir:robust`` (cirbench's, not the paper's): ``filter_fit=anchored`` fixes the noisy component to the
  mean / variance of *null* losses (each query against a random other target) and EM fits only the clean one and
  the weight (``anchored_clean_probability``): hard clean triplets stay far below null losses. ``text_check``: the
  composed query leans on the reference, so a shuffled text keeps a low loss and loss-based filters miss it; a
  second anchored fit on the frozen backbone's text-to-target InfoNCE (null: texts against random targets)
  looks at the text alone, clean probability = product of both posteriors (frozen: training that loss through
  the WCB cost retrieval; edit-direction signals did worse). ``filter_loss=ref`` adds the triplet's own
  reference as a negative ("does the text explain the change?"; measured alike with ``targets``, kept because
  every measurement of this filter used it).
* Fits use annotated triplets only (generated ones, ``TrainingSet.generated``, and degenerate loss distributions
  get probability 1), refitted before every epoch after ``warmup`` plain epochs (default 2 of 10: one is too
  early to fit the clean majority, later the model memorises the noise).
* Soft-label NCE (``cirbench.losses.soft_label_nce``): row i's InfoNCE times its clean probability as it is (no
  threshold or sharpening), over the batch size: a batch believed noisy moves the model less; InfoNCE if all are 1.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Dict, Optional, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.exceptions import ConvergenceWarning
from sklearn.mixture import GaussianMixture
from torch import Tensor, nn

from cirbench.errors import ConfigError
from cirbench.losses import soft_label_nce
from cirbench.method import Method, Variant
from cirbench.registry import register_method
from cirbench.types import Batch, Dims, Features
from cirbench_methods.combiner import Combiner, CombinerHparams

FILTER_LOSSES = ("ref", "targets")
FILTER_FITS = ("anchored", "gmm")
MAP_FUSIONS = ("mean", "channel", "project")


def gmm_clean_probability(losses: np.ndarray, seed: int = 0) -> np.ndarray:
    """Clean probability of each per-sample loss: posterior of the lower-mean component of a
    two-component Gaussian mixture fitted on the min-max normalised losses (NCR / DivideMix)."""
    losses = np.asarray(losses, dtype=np.float64).reshape(-1)
    span = losses.max() - losses.min() if len(losses) else 0.0
    if len(losses) < 2 or not np.isfinite(span) or span <= 0:
        return np.ones(len(losses))
    x = ((losses - losses.min()) / span)[:, None]
    gmm = GaussianMixture(n_components=2, max_iter=10, tol=1e-2, reg_covar=5e-4, random_state=seed)
    with warnings.catch_warnings():  # max_iter=10 often stops before tol: expected with these settings
        warnings.simplefilter("ignore", ConvergenceWarning)
        gmm.fit(x)
    return gmm.predict_proba(x)[:, int(np.argmin(gmm.means_[:, 0]))]


def _normal_logpdf(x: np.ndarray, mean: float, var: float) -> np.ndarray:
    return -0.5 * ((x - mean) ** 2 / var + np.log(2 * np.pi * var))


def anchored_clean_probability(losses: np.ndarray, null_losses: np.ndarray, iters: int = 50,
                               tol: float = 1e-6) -> np.ndarray:
    """Clean probability of each per-sample loss under a two-component Gaussian mixture whose
    *noisy* component is anchored: its mean and variance are those of ``null_losses``, the losses of
    deliberately mismatched pairs (each query against a random other target). EM fits only the
    clean component's mean and variance and the mixing weight. Returns the clean posterior.

    Unlike a free two-component fit, this does not split a unimodal, long-tailed loss distribution
    of clean data in two: hard clean triplets are still far from the loss of a random pairing.
    """
    x = np.asarray(losses, dtype=np.float64).reshape(-1)
    null = np.asarray(null_losses, dtype=np.float64).reshape(-1)
    null = null[np.isfinite(null)]
    if len(x) < 2 or len(null) < 2 or not np.isfinite(x).all() or x.max() <= x.min():
        return np.ones(len(x))
    floor = 1e-6 * (x.var() + null.var() + 1e-12)
    mu_n, var_n = null.mean(), null.var() + floor
    mu_c, var_c, pi = np.quantile(x, 0.25), x.var() + floor, 0.5
    for _ in range(iters):
        log_c = np.log(pi) + _normal_logpdf(x, mu_c, var_c)
        log_n = np.log1p(-pi) + _normal_logpdf(x, mu_n, var_n)
        r = 1.0 / (1.0 + np.exp(np.clip(log_n - log_c, -500, 500)))
        new_pi = float(np.clip(r.mean(), 1e-4, 1 - 1e-4))
        mu_c = float((r * x).sum() / max(r.sum(), 1e-12))
        var_c = float((r * (x - mu_c) ** 2).sum() / max(r.sum(), 1e-12)) + floor
        done, pi = abs(new_pi - pi) < tol, new_pi
        if done:
            break
    log_c = np.log(pi) + _normal_logpdf(x, mu_c, var_c)
    log_n = np.log1p(-pi) + _normal_logpdf(x, mu_n, var_n)
    return 1.0 / (1.0 + np.exp(np.clip(log_n - log_c, -500, 500)))


def diversity_penalty(att: Tensor) -> Tensor:
    """Mean squared cosine similarity between every two of the K weight maps ``att`` [B, L, K]."""
    k = att.shape[-1]
    if k < 2:
        return att.new_zeros(())
    maps = F.normalize(att.float().transpose(1, 2), dim=-1)  # [B, K, L]
    gram = maps @ maps.transpose(1, 2)
    off = gram - torch.diag_embed(torch.diagonal(gram, dim1=1, dim2=2))
    return off.pow(2).sum((1, 2)).mean() / (k * (k - 1))


class WeightCompensation(nn.Module):
    """K learned weight maps over a token sequence; the weighted, pooled tokens compensate the global
    embedding. ``fusion`` says how the K pooled vectors reach it (see the module docstring):
    ``mean`` averages them before one projection (one effective map, the mean of the K), ``channel``
    mixes them per channel with learned softmax gates (a token × channel map, T ⊗ Att), ``project``
    gives each its own projection, summed (K views)."""

    def __init__(self, dim: int, heads: int, hidden: int, dropout: float = 0.0, fusion: str = "mean"):
        super().__init__()
        if fusion not in MAP_FUSIONS:
            raise ConfigError(f"ncl-cir.map_fusion must be one of {', '.join(MAP_FUSIONS)}, got {fusion!r}")
        self.fusion = fusion
        self.score = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, heads))
        self.drop = nn.Dropout(dropout)
        self.fuse = nn.Linear(dim, dim)  # (``project``: map 0's projection, ``views`` the others')
        n_views = heads - 1 if fusion == "project" else 0
        self.views = nn.ModuleList(nn.Linear(dim, dim, bias=False) for _ in range(n_views))
        for layer in (self.fuse, *self.views):  # zero-initialised: training starts from the global embedding
            nn.init.zeros_(layer.weight)
        nn.init.zeros_(self.fuse.bias)
        # channel gates: logits over the K maps per channel; zeros = the plain mean at the start
        self.gate = nn.Parameter(torch.zeros(heads, dim)) if fusion == "channel" else None

    def maps(self, features: Features) -> Tensor:
        """The K token softmaxes [B, L, K] (padding gets weight 0)."""
        logits = self.score(features.tokens.to(features.embed.dtype))
        if features.mask is not None:
            logits = logits.masked_fill(~features.mask[..., None], torch.finfo(logits.dtype).min)
        return logits.softmax(dim=1)

    def compensation(self, att: Tensor, tokens: Tensor) -> Tensor:
        """What the maps ``att`` [B, L, K] over ``tokens`` [B, L, d] add to the global embedding."""
        pooled = torch.einsum("blk,bld->bkd", att.to(tokens.dtype), tokens)  # Σ_l Att_k,l · T_l
        if self.fusion == "project":
            pooled = self.drop(pooled)
            return sum((layer(pooled[:, k]) for k, layer in enumerate(self.views, 1)), self.fuse(pooled[:, 0]))
        if self.fusion == "channel":
            mixed = (pooled * self.gate.softmax(0).to(pooled.dtype)).sum(1)  # channel j: Σ_l (Σ_k w_kj Att_k,l) T_lj
        else:
            mixed = pooled.mean(1)
        return self.fuse(self.drop(mixed))

    def forward(self, features: Features) -> Tuple[Tensor, Tensor]:
        glob = features.embed
        att = self.maps(features)
        return glob + self.compensation(att, features.tokens.to(glob.dtype)), diversity_penalty(att)


@register_method("ncl-cir")
class NclCir(Method):
    """NCL-CIR as the paper has it: weight maps over tokens, free GMM noise-pair filter, soft-label NCE."""

    needs_tokens = True
    variants = {
        "robust": Variant("NCL-CIR with cirbench's noise-pair filter: noisy component anchored on "
                          "mismatched-pair losses, text-to-target check, reference as a negative",
                          {"filter_fit": "anchored", "text_check": True, "filter_loss": "ref"}),
    }

    @dataclass
    class Hparams(CombinerHparams):
        heads: int = 4
        diversity: float = 0.1
        map_dropout: float = 0.5
        map_fusion: str = "channel"
        warmup: int = 2
        filter: bool = True
        filter_fit: str = "gmm"
        filter_loss: str = "targets"
        text_check: bool = False

    def __init__(self, dims: Dims, hparams=None):
        super().__init__(dims, hparams)
        hp = self.hp
        if hp.filter_loss not in FILTER_LOSSES:
            raise ConfigError(f"ncl-cir.filter_loss must be one of {', '.join(FILTER_LOSSES)}, got {hp.filter_loss!r}")
        if hp.filter_fit not in FILTER_FITS:
            raise ConfigError(f"ncl-cir.filter_fit must be one of {', '.join(FILTER_FITS)}, got {hp.filter_fit!r}")
        if hp.heads < 1 or hp.warmup < 0:
            raise ConfigError(f"ncl-cir needs heads >= 1 and warmup >= 0 (got heads={hp.heads}, warmup={hp.warmup})")
        if dims.tokens and dims.tokens != dims.embed:
            raise ConfigError(f"ncl-cir needs token features in the embedding space (width {dims.embed}), "
                              f"got width {dims.tokens}")
        d = dims.embed
        self.wcb_text = WeightCompensation(d, hp.heads, d, hp.map_dropout, hp.map_fusion)
        self.wcb_reference = WeightCompensation(d, hp.heads, d, hp.map_dropout, hp.map_fusion)
        self.wcb_target = WeightCompensation(d, hp.heads, d, hp.map_dropout, hp.map_fusion)
        self.combiner = Combiner.from_hparams(d, hp)
        self._labels: Optional[Tensor] = None  # soft labels of every training triplet, on the device
        self._probs: Optional[np.ndarray] = None  # clean probabilities of the annotated triplets

    # -- WCB and composition ---------------------------------------------------------------
    def _query(self, reference: Features, text: Features) -> Tuple[Tensor, Tensor]:
        ref, pen_ref = self.wcb_reference(reference)
        txt, pen_txt = self.wcb_text(text)
        return self.combiner(F.normalize(ref, dim=-1), F.normalize(txt, dim=-1)), pen_ref + pen_txt

    def compose(self, reference: Features, text: Features) -> Tensor:
        return self._query(reference, text)[0]

    def embed_target(self, image: Features) -> Tensor:
        return self.wcb_target(image)[0]

    def loss(self, batch: Batch, ctx) -> Tensor:
        query, pen_q = self._query(batch.reference, batch.text)
        target, pen_t = self.wcb_target(batch.target)
        target = F.normalize(target, dim=-1)
        labels = (torch.ones(len(batch.index), device=query.device) if self._labels is None
                  else self._labels[batch.index])
        loss = soft_label_nce(F.normalize(query, dim=-1), target, labels, self.hp.temperature)
        return loss + self.hp.diversity * (pen_q + pen_t)

    # -- NFB -----------------------------------------------------------------------------------
    @torch.no_grad()
    def sample_losses(self, train, ctx, chunk: int = 1024, seed: int = 0) -> Dict[str, Tuple[Tensor, Tensor]]:
        """Per-triplet filter losses over the whole training set in eval mode, each with its *null*
        losses (the same query scored against a random other target of the pool, drawn with
        ``seed``): ``{"query": (losses, null)}`` for the composed query (see ``filter_loss``) and,
        with ``text_check``, ``"text"`` for the frozen text against the target pool."""
        was_training = self.training
        self.eval()
        temp = self.hp.temperature
        with ctx.autocast():
            queries = torch.cat([F.normalize(self.compose(b.reference, b.text).float(), dim=-1)
                                 for b in train.batches(chunk)])
            pool, positive = torch.unique(train.target_rows, return_inverse=True)
            offset = torch.randint(1, max(len(pool), 2), positive.shape, generator=torch.Generator().manual_seed(seed))
            mismatched = ((positive.cpu() + offset) % len(pool)).to(positive.device)  # never the true target
            if self.hp.text_check:  # the frozen backbone's own text and image embeddings
                texts = F.normalize(train.texts.features.embed[train.text_rows[:, 0]].float(), dim=-1)
                frozen = F.normalize(train.images.features.embed[pool].float(), dim=-1)
            targets = torch.cat([F.normalize(self.embed_target(train.images.features[pool[s:s + chunk]]).float(), dim=-1)
                                 for s in range(0, len(pool), chunk)])
            out: Dict[str, Tuple[list, list]] = {"query": ([], []), "text": ([], [])}
            for s in range(0, len(queries), chunk):
                q, pos, null = queries[s:s + chunk], positive[s:s + chunk], mismatched[s:s + chunk]
                if self.hp.text_check:
                    logits = texts[s:s + chunk] @ frozen.t() / temp
                    out["text"][0].append(F.cross_entropy(logits, pos, reduction="none"))
                    out["text"][1].append(F.cross_entropy(logits, null, reduction="none"))
                logits = q @ targets.t() / temp
                if self.hp.filter_loss == "ref":
                    # the triplet's own reference joins the pool as one more negative (its pool column,
                    # if the reference is also some triplet's target, is masked so it counts once)
                    ref_rows = train.reference_rows[s:s + chunk]
                    refs = F.normalize(self.embed_target(train.images.features[ref_rows]).float(), dim=-1)
                    at = torch.searchsorted(pool, ref_rows).clamp(max=len(pool) - 1)
                    hit = pool[at] == ref_rows
                    logits[hit.nonzero().squeeze(1), at[hit]] = float("-inf")
                    logits = torch.cat([logits, (q * refs).sum(-1, keepdim=True) / temp], 1)
                out["query"][0].append(F.cross_entropy(logits, pos, reduction="none"))
                out["query"][1].append(F.cross_entropy(logits, null, reduction="none"))  # inf where null hit the mask
        self.train(was_training)
        return {k: (torch.cat(v[0]), torch.cat(v[1])) for k, v in out.items() if v[0]}

    def filter_probability(self, losses: Tensor, null: Tensor) -> np.ndarray:
        """Clean probability of each loss with the configured mixture fit (``filter_fit``)."""
        losses = losses.cpu().numpy()
        if self.hp.filter_fit == "gmm":
            return gmm_clean_probability(losses)
        return anchored_clean_probability(losses, null.cpu().numpy())

    def on_epoch_start(self, ctx) -> None:
        if not self.hp.filter or ctx.epoch < self.hp.warmup or len(ctx.train) == 0:
            return
        n = len(ctx.train) - ctx.train.generated
        probs = np.ones(n)
        for losses, null in self.sample_losses(ctx.train, ctx, seed=ctx.epoch).values():
            # clean = the composition fits AND (with text_check) the text fits the target
            probs = probs * self.filter_probability(losses[:n], null[:n])
        labels = np.ones(len(ctx.train), dtype=np.float32)
        labels[:n] = probs
        self._probs = probs
        self._labels = torch.from_numpy(labels).to(ctx.device)
        ctx.log["filter_selected"] = float((probs >= 0.5).mean()) if n else 1.0

    def clean_probabilities(self) -> Optional[np.ndarray]:
        return self._probs

    def get_extra_state(self):
        """The filter's last estimate, in checkpoints: a run resumed after its last epoch still reports it."""
        return {"probs": None if self._probs is None else torch.from_numpy(self._probs),
                "labels": None if self._labels is None else self._labels.cpu()}

    def set_extra_state(self, state) -> None:
        state = state or {}
        self._probs = None if state.get("probs") is None else state["probs"].numpy()
        labels = state.get("labels")
        self._labels = None if labels is None else labels.to(next(self.parameters()).device)
