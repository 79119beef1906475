"""Metrics that say whether to trust a reward model. Pure numpy, no torch.

- ``voc``: value-order correlation (GVL/VLAC): Spearman rank correlation of predicted progress with time
  over one successful episode; 1 = progress rises monotonically.
- ``vroc``: the same on the time-reversed episode, scored against reversed time: the model reads the clip
  backwards (first frame = the goal state), so its progress should *fall*; we return
  ``spearman(-pred_on_reversed, t)`` so that, like VOC, 1 is best. A model that only counts frames or trusts
  the clip's first frame scores low.
- ``order_accuracy``: fraction of frame pairs (i < j, different labels) whose predicted order matches.
- ``auroc``: area under the ROC curve (ties count half), e.g. success vs failure episodes.
- ``precision_recall``: of thresholded done predictions against done labels.
"""
from __future__ import annotations

import numpy as np


def _as_1d(x: np.ndarray, name: str) -> np.ndarray:
    a = np.asarray(x, np.float64)
    if a.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {a.shape}")
    if not np.isfinite(a).all():
        raise ValueError(f"{name} contains NaN or inf")
    return a


def rankdata(x: np.ndarray) -> np.ndarray:
    """Average ranks (1-based, ties share the mean rank), like ``scipy.stats.rankdata``."""
    x = _as_1d(x, "x")
    order = np.argsort(x, kind="mergesort")
    ranks = np.empty(len(x), np.float64)
    sorted_x = x[order]
    i = 0
    while i < len(x):
        j = i
        while j + 1 < len(x) and sorted_x[j + 1] == sorted_x[i]:
            j += 1
        ranks[order[i:j + 1]] = 0.5 * (i + j) + 1.0
        i = j + 1
    return ranks


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman rank correlation; 0 when either side is constant (no order information)."""
    x, y = _as_1d(x, "x"), _as_1d(y, "y")
    if len(x) != len(y) or len(x) < 2:
        raise ValueError(f"need two equal-length sequences of >= 2 values, got {len(x)} and {len(y)}")
    rx, ry = rankdata(x), rankdata(y)
    rx, ry = rx - rx.mean(), ry - ry.mean()
    denom = np.sqrt((rx ** 2).sum() * (ry ** 2).sum())
    return float((rx * ry).sum() / denom) if denom > 0 else 0.0


def voc(pred_progress: np.ndarray) -> float:
    """Spearman of predicted progress (one value per frame, in time order) with the frame index."""
    p = _as_1d(pred_progress, "pred_progress")
    return spearman(p, np.arange(len(p)))


def vroc(pred_progress_on_reversed: np.ndarray) -> float:
    """VOC for the reversed clip: ``pred_progress_on_reversed[t]`` is the model's progress for frame t of the
    clip played backwards; the ideal falls with t, scored as ``spearman(-pred, t)`` (1 best)."""
    p = _as_1d(pred_progress_on_reversed, "pred_progress_on_reversed")
    return spearman(-p, np.arange(len(p)))


def order_accuracy(pred: np.ndarray, target: np.ndarray) -> float:
    """Fraction of pairs (i, j) with ``target[i] < target[j]`` whose prediction is ordered the same way
    (a predicted tie counts half). Raises when no pair has distinct targets."""
    p, t = _as_1d(pred, "pred"), _as_1d(target, "target")
    if len(p) != len(t):
        raise ValueError(f"pred has {len(p)} values, target {len(t)}")
    dt = t[None, :] - t[:, None]  # (N, N): dt[i, j] = t[j] - t[i]
    dp = p[None, :] - p[:, None]
    mask = dt > 0
    if not mask.any():
        raise ValueError("order_accuracy needs at least two distinct targets")
    agree = (dp[mask] > 0).astype(np.float64) + 0.5 * (dp[mask] == 0)
    return float(agree.mean())


def auroc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Probability that a random positive scores above a random negative (ties count half)."""
    s = _as_1d(scores, "scores")
    y = np.asarray(labels)
    if y.shape != s.shape:
        raise ValueError(f"labels shape {y.shape} != scores shape {s.shape}")
    y = y.astype(bool)
    pos, neg = s[y], s[~y]
    if len(pos) == 0 or len(neg) == 0:
        raise ValueError(f"auroc needs positives and negatives, got {len(pos)} and {len(neg)}")
    # Mann-Whitney U via average ranks (handles ties exactly).
    ranks = rankdata(np.concatenate([pos, neg]))
    u = ranks[: len(pos)].sum() - len(pos) * (len(pos) + 1) / 2.0
    return float(u / (len(pos) * len(neg)))


def precision_recall(pred_prob: np.ndarray, labels: np.ndarray, threshold: float = 0.5) -> tuple[float, float]:
    """(precision, recall) of ``pred_prob >= threshold`` against boolean labels. Precision is 1.0 when nothing
    is predicted positive (no false alarms); recall is 1.0 when there are no positives."""
    p = _as_1d(pred_prob, "pred_prob")
    y = np.asarray(labels).astype(bool)
    if y.shape != p.shape:
        raise ValueError(f"labels shape {y.shape} != pred shape {p.shape}")
    hit = p >= threshold
    tp = float((hit & y).sum())
    precision = tp / hit.sum() if hit.any() else 1.0
    recall = tp / y.sum() if y.any() else 1.0
    return float(precision), float(recall)
