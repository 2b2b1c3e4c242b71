"""The method interface: what a CIR method must say, and the hooks it may use.

A method is a ``torch.nn.Module`` over backbone features. It says three things:

* ``compose(reference, text)`` — the query embedding for a reference image and a text;
* ``embed_target(image)`` — the embedding a candidate image is ranked by (default: the
  backbone's global image embedding);
* ``loss(batch, ctx)`` — the training objective (default: InfoNCE over the batch).

and may use these hooks: ``on_epoch_start(ctx)`` (GMM fits, negative refresh),
``stages()`` (extra training stages, e.g. SPN's static-bank stage 2), and
``text_side_features(texts)`` (features computed from the raw texts, carried as
``Features.extra``), ``extra_triplets(run)`` (training triplets it generates, e.g. SPN's positives) and
``clean_probabilities()`` (per-training-triplet clean probabilities, scored against the noise
manifest). Hyper-parameters are a dataclass ``Hparams`` on the class; users override them
by name from the CLI or a spec file. ``variants`` names cirbench's own configurations of a method
beside the paper's (``ncl-cir:robust``: a description and hyper-parameter overrides); the bare name is
always the paper's method. ``query_embeddings`` / ``gallery_embeddings`` give the
normalised embeddings that ranking uses. The data it works on (``Features``, ``Batch``, ``Dims``,
``Stage``) lives in :mod:`cirbench.types`.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Dict, List, NamedTuple, Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .errors import ConfigError
from .losses import info_nce
from .types import Batch, Dims, Features, Stage

if TYPE_CHECKING:  # pragma: no cover
    from .data.triplets import Triplet
    from .runs import RunContext
    from .training import TrainContext


class Variant(NamedTuple):
    """A named configuration cirbench adds beside a paper's method: run as ``method:name``, listed by
    ``cirbench list methods`` under its method, expanded by ``"*"``. ``hparams`` are overrides of the
    method's ``Hparams`` defaults; a user's ``--set`` wins over them."""

    description: str
    hparams: Dict[str, Any]


class Method(nn.Module):
    """Base class of every CIR method (see the module docstring)."""

    name: str = "?"  # set by @register_method
    needs_tokens: bool = False
    training_free: bool = False  # no stages: scored by `cirbench eval`, left out of wildcard (training) grids
    arg_hparam: Optional[str] = None  # the hyper-parameter that "name:arg" sets (e.g. SPN's base)
    variants: ClassVar[Dict[str, Variant]] = {}  # cirbench's named configurations ("name:variant")

    @dataclass
    class Hparams:
        lr: float = 1e-3
        weight_decay: float = 1e-2
        temperature: float = 0.01

    def __init__(self, dims: Dims, hparams: Optional["Method.Hparams"] = None):
        super().__init__()
        self.dims = dims
        self.hp = hparams if hparams is not None else self.Hparams()

    # -- what every method says -------------------------------------------------------
    def compose(self, reference: Features, text: Features) -> Tensor:
        raise NotImplementedError

    def embed_target(self, image: Features) -> Tensor:
        return image.embed

    def loss(self, batch: Batch, ctx: "TrainContext") -> Tensor:
        query = F.normalize(self.compose(batch.reference, batch.text), dim=-1)
        target = F.normalize(self.embed_target(batch.target), dim=-1)
        return info_nce(query, target, self.hp.temperature)

    # -- hooks ----------------------------------------------------------------------------
    def on_epoch_start(self, ctx: "TrainContext") -> None:
        """Called before every epoch of every stage (after loading a checkpoint on resume)."""

    def stages(self, epochs: int) -> List[Stage]:
        """The training stages; by default one stage that trains everything with ``loss``."""
        return [Stage("main", epochs, self.parameters, self.loss)]

    def extra_triplets(self, run: "RunContext") -> List["Triplet"]:
        """Training triplets the method adds before training (SPN's generated positives). They
        are appended after the annotated ones, never noised and never evaluated."""
        return []

    def text_side_features(self, texts: List[str]) -> Optional[Tensor]:
        """Per-text features the method derives from the raw strings (e.g. which attribute words a
        modification text uses); they reach ``compose`` and ``loss`` as ``text.extra``."""
        return None

    def clean_probabilities(self) -> Optional[np.ndarray]:
        """Per-training-triplet probability of being clean, if the method estimates one."""
        return None

    # -- what ranking uses ------------------------------------------------------------------
    @torch.no_grad()
    def query_embeddings(self, reference: Features, text: Features, chunk: int = 1024) -> Tensor:
        """L2-normalised ``compose`` of parallel rows of reference and text features, in chunks,
        without gradients: the queries evaluation ranks with."""
        out = [F.normalize(self.compose(reference[s:s + chunk], text[s:s + chunk]).float(), dim=-1)
               for s in range(0, reference.embed.shape[0], chunk)]
        return torch.cat(out) if out else torch.zeros(0, self.dims.embed)

    @torch.no_grad()
    def gallery_embeddings(self, images: Features, chunk: int = 4096) -> Tensor:
        """L2-normalised ``embed_target`` of image features, in chunks, without gradients: what
        evaluation ranks (and what SPN's bank and DQE-CIR's negative pool hold)."""
        out = [F.normalize(self.embed_target(images[s:s + chunk]).float(), dim=-1)
               for s in range(0, images.embed.shape[0], chunk)]
        return torch.cat(out) if out else torch.zeros(0, self.dims.embed)

    # -- construction ---------------------------------------------------------------------
    @classmethod
    def wants_tokens(cls, hparams: "Method.Hparams") -> bool:
        """Whether a run with these hyper-parameters needs token features (a wrapper such as SPN
        asks its base method); by default the class's ``needs_tokens``."""
        return cls.needs_tokens

    @classmethod
    def make_hparams(cls, overrides: Optional[Dict[str, Any]] = None) -> "Method.Hparams":
        """``Hparams`` with user overrides applied; unknown names are a clear error."""
        overrides = dict(overrides or {})
        valid = {f.name: f for f in dataclasses.fields(cls.Hparams)}
        unknown = sorted(set(overrides) - set(valid))
        if unknown:
            raise ConfigError(
                f"method {cls.name!r} has no hyper-parameter {', '.join(map(repr, unknown))}; "
                f"it takes: {', '.join(sorted(valid))}"
            )
        for key, value in overrides.items():
            default = getattr(cls.Hparams(), key)
            if isinstance(default, bool) and isinstance(value, str):
                value = value.lower() in ("1", "true", "yes", "on")
            elif isinstance(default, (int, float)) and not isinstance(default, bool) and isinstance(value, str):
                try:
                    value = type(default)(float(value)) if isinstance(default, int) else float(value)
                except ValueError:
                    raise ConfigError(f"{cls.name}.{key} must be a number, got {value!r}") from None
            overrides[key] = value
        return cls.Hparams(**overrides)


__all__ = ["Method", "Variant"]
