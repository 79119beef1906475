"""Feature statistics in LeRobot's layout (``meta/stats.json`` and the ``stats/<feature>/<stat>`` columns of the
episode index): min, max, mean, std, count and the 1/10/50/90/99 % quantiles, per dimension for vectors and per
channel, scaled to [0, 1] and shaped (3, 1, 1), for images (exact, from pixel histograms: LeRobot samples frames)."""
from __future__ import annotations

from typing import Any

import numpy as np

QUANTILES = {"q01": 0.01, "q10": 0.10, "q50": 0.50, "q90": 0.90, "q99": 0.99}


def vector_stats(values: np.ndarray) -> dict[str, np.ndarray]:
    """``(N,)`` or ``(N, D)`` -> stats of shape ``(1,)`` or ``(D,)``."""
    x = np.asarray(values, np.float64)
    x = x.reshape(len(x), -1)
    out = {"min": x.min(0), "max": x.max(0), "mean": x.mean(0), "std": x.std(0),
           "count": np.array([len(x)], np.int64)}
    for name, q in QUANTILES.items():
        out[name] = np.quantile(x, q, axis=0)
    return out


def image_histogram(frames: np.ndarray) -> np.ndarray:
    """``(N, H, W, C)`` uint8 -> ``(C, 256)`` pixel-value counts: exact image statistics at the cost of one
    ``bincount`` per channel (a quantile over millions of pixels would sort them), and summable over episodes."""
    pixels = frames.reshape(-1, frames.shape[-1])
    return np.stack([np.bincount(pixels[:, c], minlength=256) for c in range(pixels.shape[1])]).astype(np.int64)


def histogram_stats(hist: np.ndarray, frames: int) -> dict[str, np.ndarray]:
    """Per-channel stats in [0, 1], each ``(C, 1, 1)``, from :func:`image_histogram` counts (summed over any number
    of frames); ``count`` is the number of frames. Quantiles are the lowest value whose cumulative share reaches q."""
    values = np.arange(256, dtype=np.float64) / 255.0
    n = hist.sum(axis=1, keepdims=True).astype(np.float64)  # (C, 1)
    mean = (hist * values).sum(axis=1, keepdims=True) / n
    std = np.sqrt(np.maximum((hist * values ** 2).sum(axis=1, keepdims=True) / n - mean ** 2, 0.0))
    present = hist > 0
    out = {"min": values[present.argmax(axis=1)][:, None], "max": values[255 - present[:, ::-1].argmax(axis=1)][:, None],
           "mean": mean, "std": std}
    cdf = np.cumsum(hist, axis=1) / n
    for name, q in QUANTILES.items():
        out[name] = values[(cdf < q).sum(axis=1).clip(0, 255)][:, None]
    stats = {k: v.reshape(-1, 1, 1) for k, v in out.items()}
    stats["count"] = np.array([frames], np.int64)
    return stats


def to_json(stats: dict[str, dict[str, np.ndarray]]) -> dict[str, dict[str, Any]]:
    return {feature: {k: np.asarray(v).tolist() for k, v in s.items()} for feature, s in stats.items()}
