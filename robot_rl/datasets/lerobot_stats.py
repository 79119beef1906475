"""Feature statistics in LeRobot's layout (``meta/stats.json`` and the ``stats/<feature>/<stat>`` columns of the
episode index): min, max, mean, std, count and the 1/10/50/90/99 % quantiles, per dimension for vectors and per
channel, scaled to [0, 1] and shaped (3, 1, 1), for images."""
from __future__ import annotations

from typing import Any

import numpy as np

QUANTILES = {"q01": 0.01, "q10": 0.10, "q50": 0.50, "q90": 0.90, "q99": 0.99}
MAX_IMAGE_SAMPLES = 100  # frames per episode that image statistics look at (LeRobot samples too)


def vector_stats(values: np.ndarray) -> dict[str, np.ndarray]:
    """``(N,)`` or ``(N, D)`` -> stats of shape ``(1,)`` or ``(D,)``."""
    x = np.asarray(values, np.float64)
    x = x.reshape(len(x), -1)
    out = {"min": x.min(0), "max": x.max(0), "mean": x.mean(0), "std": x.std(0),
           "count": np.array([len(x)], np.int64)}
    for name, q in QUANTILES.items():
        out[name] = np.quantile(x, q, axis=0)
    return out


def sample_frames(frames: np.ndarray) -> np.ndarray:
    """Evenly spaced frames (at most ``MAX_IMAGE_SAMPLES``) of an episode, for image statistics."""
    idx = np.unique(np.linspace(0, len(frames) - 1, min(len(frames), MAX_IMAGE_SAMPLES)).round().astype(int))
    return frames[idx]


def image_stats(frames: np.ndarray) -> dict[str, np.ndarray]:
    """``(N, H, W, 3)`` uint8 -> per-channel stats in [0, 1], each ``(3, 1, 1)`` (count: ``(1,)``)."""
    pixels = frames.reshape(-1, frames.shape[-1]).astype(np.float64) / 255.0
    stats = vector_stats(pixels)
    return {k: v if k == "count" else v.reshape(-1, 1, 1) for k, v in stats.items()} | \
        {"count": np.array([len(frames)], np.int64)}


def to_json(stats: dict[str, dict[str, np.ndarray]]) -> dict[str, dict[str, Any]]:
    return {feature: {k: np.asarray(v).tolist() for k, v in s.items()} for feature, s in stats.items()}
