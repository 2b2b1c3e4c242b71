"""Noise-detection quality of a method's per-triplet clean probabilities, scored against the
run's noise manifest (any method whose ``clean_probabilities()`` returns an array).

The positive class is *clean*: AUROC and average precision (AP) rank triplets by their clean
probability; at the method's threshold (0.5) a triplet is *selected* as clean, ``precision`` is the
share of selected triplets that are clean and ``recall`` the share of clean triplets selected.
``selected`` (the selected fraction) sits next to ``clean_rate`` (the true clean fraction).
``by_type`` repeats AUROC / AP for the clean triplets against the noisy ones of each noise type,
with ``flagged``: the share of that type's noisy triplets the method rejects (probability < 0.5).
A value that is undefined (AUROC with only one class present) is ``None``. All values in [0, 1].
"""
from __future__ import annotations

from typing import Dict, Optional, Sequence

import numpy as np
from sklearn.metrics import average_precision_score, roc_auc_score

from ..errors import DataError

THRESHOLD = 0.5


def _ranking(clean: np.ndarray, probs: np.ndarray) -> Dict[str, Optional[float]]:
    if len(clean) == 0 or clean.all() or not clean.any():
        return {"auroc": None, "ap": None}
    return {"auroc": float(roc_auc_score(clean, probs)), "ap": float(average_precision_score(clean, probs))}


def detection_metrics(probs: Sequence[float], qids: Sequence[str], manifest: dict,
                      threshold: float = THRESHOLD) -> dict:
    """Score clean probabilities ``probs`` (one per triplet ``qids[i]``) against ``manifest``.

    Triplets are joined by qid, so a training set that dropped triplets (images missing on disk)
    is scored on the triplets it kept. Raises DataError when the lengths differ or a qid is not
    in the manifest.
    """
    probs = np.asarray(probs, dtype=float).reshape(-1)
    if len(probs) != len(qids):
        raise DataError(f"{len(probs)} clean probabilities for {len(qids)} training triplets: "
                        "clean_probabilities() must return one value per annotated training triplet")
    entries = {e["qid"]: e for e in manifest["triplets"]}
    missing = [q for q in qids if q not in entries]
    if missing:
        raise DataError(f"{len(missing)} training triplets are not in the noise manifest (e.g. qid "
                        f"{missing[0]!r}); was the manifest written for another training set?")
    clean = np.array([not entries[q]["is_noisy"] for q in qids], dtype=bool)
    types = np.array([entries[q]["type"] or "clean" for q in qids])
    selected = probs >= threshold
    n_sel, n_clean = int(selected.sum()), int(clean.sum())
    out = {
        **_ranking(clean, probs),
        "precision": float((selected & clean).sum() / n_sel) if n_sel else None,
        "recall": float((selected & clean).sum() / n_clean) if n_clean else None,
        "selected": float(selected.mean()) if len(probs) else None,
        "clean_rate": float(clean.mean()) if len(probs) else None,
        "threshold": threshold,
        "n": int(len(probs)),
        "by_type": {},
    }
    for kind in sorted(set(types.tolist()) - {"clean"}):
        noisy = types == kind
        keep = clean | noisy
        out["by_type"][kind] = {**_ranking(clean[keep], probs[keep]),
                                "flagged": float((~selected[noisy]).mean()), "n": int(noisy.sum())}
    return out


__all__ = ["THRESHOLD", "detection_metrics"]
