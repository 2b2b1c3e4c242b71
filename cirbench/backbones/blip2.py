"""BLIP-2 backbone (``blip2``): the image-text retrieval model of Hugging Face ``transformers``.

``--backbone blip2 --weights FOLDER`` loads ``Blip2ForImageTextRetrieval`` from a local folder in
the transformers format (``config.json``, weights, tokenizer files, ``preprocessor_config.json``),
for example a user's copy of ``Salesforce/blip2-itm-vit-g``. Nothing is downloaded.

What cirbench takes from BLIP-2 (its contrastive, ITC, path):

* image: the frozen ViT feeds the Q-Former's learned query tokens (cross-attention); each query's
  output goes through ``vision_projection`` into the joint space (256-d for ViT-g). BLIP-2 scores
  an image against a text by the *maximum* cosine over its queries; cirbench's interface needs
  one vector per image, so the global embedding is the **mean of the L2-normalised projected
  queries** — its dot product with a text is the mean of the per-query cosines, the smooth
  counterpart of BLIP-2's max (choice ours). Token features: that global vector first, then
  the projected queries (not normalised), so methods with ``needs_tokens`` see all queries.
* text: the Q-Former run as a text encoder (no queries, no image); global embedding =
  ``text_projection`` of the [CLS] output, as in BLIP-2; token features = every output token
  projected by ``text_projection`` ([CLS], words, [SEP]), ``mask`` from the attention mask.
  Texts are cut at :data:`MAX_TEXT_TOKENS` tokens (BLIP-2 pretrained with 32; FashionIQ's joined
  pair of captions is often longer, and the Q-Former has BERT's 512 positions).
* preprocessing: the folder's ``BlipImageProcessor`` settings (resize to the model's size,
  bicubic, CLIP mean/std) as a torchvision transform; ``--preprocess targetpad`` pads first and
  resizes the shorter side then centre-crops to that size, as SPRC does
  (:mod:`cirbench.backbones.preprocess`).

``transformers`` is imported only when a BLIP-2 backbone is built: cirbench works without it
(``pip install 'cirbench[blip2]'`` adds it).
"""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Iterable, List, Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import ConfigError, first_line
from ..files import read_json
from ..types import Features
from .base import Backbone, file_fingerprint
from .registry import register_backbone

MAX_TEXT_TOKENS = 64
ARCHITECTURE = "Blip2ForImageTextRetrieval"
SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")


def _transformers():
    try:
        import transformers
    except ImportError:
        raise ConfigError("the blip2 backbone needs Hugging Face transformers: pip install 'cirbench[blip2]' "
                          "(or pip install transformers)") from None
    return transformers


class Blip2Backbone(Backbone):
    """A frozen ``Blip2ForImageTextRetrieval`` with its tokenizer and image processor settings."""

    def __init__(self, model, tokenizer, image_processor, cache_id: str):
        super().__init__()
        from torchvision import transforms

        self.model = model.eval().requires_grad_(False)
        self.tokenizer = tokenizer
        self.image_processor = image_processor
        self.cache_id = cache_id
        self.embed_dim = int(model.config.image_text_hidden_size)
        ip = image_processor
        size = (ip.size["height"], ip.size["width"])
        steps = [transforms.Resize(size, interpolation=transforms.InterpolationMode.BICUBIC)] if ip.do_resize else []
        steps.append(transforms.ToTensor())  # scales to [0, 1]: BLIP's rescale_factor 1/255
        if ip.do_normalize:
            steps.append(transforms.Normalize(ip.image_mean, ip.image_std))
        self.preprocess = transforms.Compose(steps)

    def targetpad_preprocess(self, ratio: float):
        from .preprocess import targetpad_transform

        ip = self.image_processor
        resample = {3: "bicubic", 2: "bilinear", 0: "nearest"}.get(int(getattr(ip, "resample", 3) or 3), "bicubic")
        mean, std = (ip.image_mean, ip.image_std) if ip.do_normalize else ((0.0,) * 3, (1.0,) * 3)
        return targetpad_transform(ratio, (ip.size["height"], ip.size["width"]), mean, std, resample)

    @torch.no_grad()
    def encode_images(self, pixels: Tensor, tokens: bool = False) -> Features:
        m = self.model
        patches = m.vision_model(pixel_values=pixels).last_hidden_state
        queries = m.query_tokens.expand(patches.shape[0], -1, -1)
        out = m.qformer(query_embeds=queries, encoder_hidden_states=patches,
                        encoder_attention_mask=torch.ones(patches.shape[:-1], dtype=torch.long,
                                                          device=patches.device)).last_hidden_state
        projected = m.vision_projection(out)                      # [B, Q, D]
        pooled = F.normalize(projected.float(), dim=-1).mean(1)   # mean of normalised queries
        if not tokens:
            return Features(pooled)
        return Features(pooled, torch.cat([pooled[:, None].to(projected.dtype), projected], dim=1))

    @torch.no_grad()
    def encode_texts(self, texts: List[str], tokens: bool = False) -> Features:
        m = self.model
        enc = self.tokenizer(list(texts), padding=True, truncation=True, max_length=MAX_TEXT_TOKENS,
                             return_tensors="pt")
        ids, attention = enc["input_ids"].to(self.device), enc["attention_mask"].to(self.device)
        hidden = m.qformer(query_embeds=m.embeddings(input_ids=ids), query_length=0,
                           attention_mask=attention).last_hidden_state
        if not tokens:
            return Features(m.text_projection(hidden[:, 0]))
        projected = m.text_projection(hidden)
        return Features(projected[:, 0], projected, attention.bool())

    def save_pretrained(self, folder) -> Path:
        """Write model, tokenizer and image processor as a folder ``--weights`` loads."""
        folder = Path(folder)
        self.model.save_pretrained(folder)
        self.tokenizer.save_pretrained(folder)
        self.image_processor.save_pretrained(folder)
        return folder


def _fingerprint(folder: Path) -> str:
    """Identity of a weights folder: its config and the fingerprints of its weight files."""
    h = hashlib.sha1((folder / "config.json").read_bytes())
    for f in sorted(folder.iterdir()):
        if f.suffix in (".safetensors", ".bin", ".pt", ".pth"):
            h.update(f"{f.name}:{file_fingerprint(f)}".encode())
    return h.hexdigest()[:16]


def load_folder(folder) -> Blip2Backbone:
    """The BLIP-2 retrieval model stored in ``folder`` (transformers format), offline."""
    folder = Path(folder).expanduser()
    hint = "a local copy of Salesforce/blip2-itm-vit-g (config.json, weights, tokenizer, preprocessor_config.json)"
    if not (folder / "config.json").is_file():
        raise ConfigError(f"--weights for blip2 must be a folder holding {hint}; {folder} has no config.json")
    config = read_json(folder / "config.json", "BLIP-2 config", ConfigError)
    if not isinstance(config, dict):
        raise ConfigError(f"{folder}/config.json is not a transformers config (a JSON object); use {hint}")
    if config.get("model_type") != "blip-2" or ARCHITECTURE not in config.get("architectures", [ARCHITECTURE]):
        raise ConfigError(f"{folder} holds {config.get('architectures') or config.get('model_type')!r}, not a "
                          f"BLIP-2 image-text retrieval model ({ARCHITECTURE}); use {hint}")
    if not config.get("qformer_config", {}).get("use_qformer_text_input"):
        raise ConfigError(f"{folder}/config.json: the Q-Former has no text input (qformer_config."
                          f"use_qformer_text_input is not true), so it cannot embed texts; use {hint}")
    tf = _transformers()
    try:
        model, info = tf.Blip2ForImageTextRetrieval.from_pretrained(folder, local_files_only=True,
                                                                    output_loading_info=True)
        tokenizer = tf.AutoTokenizer.from_pretrained(folder, local_files_only=True)
    except Exception as exc:  # missing / corrupt weight or tokenizer files (OSError, ValueError, safetensors)
        raise ConfigError(f"cannot load BLIP-2 from {folder} ({first_line(exc)}); use {hint}") from None
    if info.get("missing_keys"):
        raise ConfigError(f"{folder} lacks weights for {len(info['missing_keys'])} parameter(s) of {ARCHITECTURE}, "
                          f"e.g. {sorted(info['missing_keys'])[0]!r}; they would be random. Use {hint}")
    if (folder / "preprocessor_config.json").is_file():
        processor = tf.BlipImageProcessor.from_pretrained(folder, local_files_only=True)
    else:
        size = model.config.vision_config.image_size
        processor = tf.BlipImageProcessor(size={"height": size, "width": size})
    return Blip2Backbone(model.float(), tokenizer, processor, f"blip2:{_fingerprint(folder)}")


def random_blip2(config=None, words: Iterable[str] = (), seed: int = 0) -> Blip2Backbone:
    """A BLIP-2 retrieval model with random weights, built offline (tests, throughput benchmarks).

    ``config`` is a ``transformers.Blip2Config`` (default: blip2-itm-vit-g's sizes). The tokenizer
    is a BERT word-piece tokenizer over ``words`` plus single letters and digits, so any text
    tokenises (unknown words letter by letter).
    """
    tf = _transformers()
    config = config if config is not None else tf.Blip2Config()
    config.architectures = [ARCHITECTURE]
    config.qformer_config.use_qformer_text_input = True  # the Q-Former's text path (as blip2-itm-vit-g)
    chars = [*"abcdefghijklmnopqrstuvwxyz0123456789"]
    vocab = list(dict.fromkeys([*SPECIAL_TOKENS, *chars, *(f"##{c}" for c in chars),
                                *(w.lower() for w in words), *".,?!'-"]))
    if len(vocab) > config.qformer_config.vocab_size:
        raise ConfigError(f"{len(vocab)} words do not fit the Q-Former's vocabulary of {config.qformer_config.vocab_size}")
    tokenizer = tf.BertTokenizer(vocab={w: i for i, w in enumerate(vocab)})
    torch.manual_seed(seed)
    model = tf.Blip2ForImageTextRetrieval(config)
    size = config.vision_config.image_size
    processor = tf.BlipImageProcessor(size={"height": size, "width": size})
    digest = hashlib.sha1((config.to_json_string() + "\n".join(vocab)).encode()).hexdigest()[:16]
    return Blip2Backbone(model.float(), tokenizer, processor, f"blip2:random:{digest}:seed{seed}")


@register_backbone("blip2", "BLIP-2 image-text retrieval model (Hugging Face transformers, extra [blip2]); "
                   "weights: a local folder in the transformers format, e.g. a copy of Salesforce/blip2-itm-vit-g")
def build_blip2(arch: Optional[str], weights: Optional[str], cache_dir=None) -> Blip2Backbone:
    if arch:
        raise ConfigError("the blip2 backbone takes no architecture; write 'blip2' and pass the folder as --weights")
    if not weights:
        raise ConfigError("the blip2 backbone needs --weights FOLDER: a local copy of Salesforce/blip2-itm-vit-g "
                          "in the transformers format")
    if not Path(weights).expanduser().is_dir():
        raise ConfigError(f"blip2 weights folder {weights!r} does not exist; pass a local copy of "
                          "Salesforce/blip2-itm-vit-g in the transformers format")
    return load_folder(weights)
