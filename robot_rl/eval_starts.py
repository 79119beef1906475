"""Where a policy fails: its evaluation episodes' start states, against where the demonstrations started.

Why: a success rate says how often a policy fails, not where. On the pick-cube twin with 3 demos a state policy
that plateaus at 60-80% does not fail at random: it fails on the cube positions of one part of the start range
(and there often flies off to a corner of the workspace), and the part differs from seed to seed. That is a
coverage failure of learning from a few demos, which a learned reward can only help through exploration, and a
researcher comparing two rewards needs to see it before reading a 20-episode success rate as the reward's doing.

:func:`start_report` takes ``run_episodes``' per-episode records (each with ``start``: the env's
``start_features()``, e.g. the twin's cube pose) and the demos' recorded start vectors, and measures how far
each evaluation start lies from the nearest demo start, in units of the start distribution's own spread over
the dimensions that vary. :func:`plot_start_map` draws successes, failures and demos over the two dimensions
that vary most (``robot-rl eval starts=map.png``).
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Sequence

import numpy as np

log = logging.getLogger("robot_rl.eval")


def demo_start_vectors(demo_dir: str | Path) -> list[np.ndarray]:
    """Each demo's start vector (D,) from an episode store (:func:`robot_rl.demos.recorded_starts`: the
    ``start_features`` the scripted expert stored, else the first observation's low-dim part); [] when the
    directory is missing or unset. Unreadable episodes are skipped with an error in the log."""
    from robot_rl.demos import recorded_starts

    if not str(demo_dir) or not Path(demo_dir).is_dir():
        return []
    return recorded_starts(demo_dir)


def _episode_starts(per_episode: Sequence[dict[str, Any]]) -> tuple[np.ndarray, np.ndarray]:
    """``(starts (N, D) float64, success (N,) bool)`` of the records that carry a start vector."""
    rows = [r for r in per_episode if r.get("start") is not None]
    if not rows:
        return np.zeros((0, 0)), np.zeros(0, bool)
    lengths = {len(r["start"]) for r in rows}
    if len(lengths) != 1:
        raise ValueError(f"evaluation start vectors differ in length: {sorted(lengths)}")
    return np.asarray([r["start"] for r in rows], np.float64), np.asarray([bool(r["success"]) for r in rows])


def _varying(starts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(indices of the dimensions that vary over the episodes, their std)``; the rest (e.g. the cube's
    resting height and, without yaw randomisation, its orientation) say nothing about where a start lies."""
    spread = starts.std(axis=0)
    dims = np.flatnonzero(spread > 1e-9)
    return dims, spread[dims]


def _labels(dims: Sequence[int], names: Sequence[str] | None) -> list[str]:
    return [names[d] if names is not None and d < len(names) else f"start[{d}]" for d in dims]


def _usable_demos(demo_starts: Sequence[np.ndarray], length: int) -> np.ndarray:
    """``(M, length)`` demo start vectors of the env's length; a warning names how many others were left out."""
    demos = [np.asarray(d, np.float64).reshape(-1) for d in demo_starts]
    usable = [d for d in demos if d.shape == (length,)]
    if len(usable) < len(demos):
        log.warning("%d of %d demo start vectors do not match the env's %d start features: left out",
                    len(demos) - len(usable), len(demos), length)
    return np.asarray(usable).reshape(-1, length)


def nearest_demo_distances(starts: np.ndarray, demos: np.ndarray) -> np.ndarray:
    """``(N,)`` distance from each start ``(N, D)`` to its nearest demo start ``(M, D)`` (M >= 1): Euclidean over
    the dimensions that vary over ``starts``, each divided by its std over them (the start-spread units of
    :func:`start_report` and ``benchmarks/demo_cover.py``)."""
    dims, spread = _varying(starts)
    scaled = starts[:, dims] / spread  # (N, K)
    demo_scaled = demos[:, dims] / spread  # (M, K)
    return np.linalg.norm(scaled[:, None, :] - demo_scaled[None], axis=-1).min(axis=1)


def start_report(per_episode: Sequence[dict[str, Any]], demo_starts: Sequence[np.ndarray] = (),
                 names: Sequence[str] | None = None) -> dict[str, Any]:
    """Summary of where the episodes started: the varying start dimensions (``names`` where the env gives them),
    and with demo starts of the same length, the distance from each episode's start to the nearest demo start
    (Euclidean over the varying dimensions, each divided by its std over the episodes), as medians over the
    successful and the failed episodes. Empty dict when no record has a start vector."""
    starts, success = _episode_starts(per_episode)
    if len(starts) == 0:
        return {}
    dims, _ = _varying(starts)
    report: dict[str, Any] = {"episodes": int(len(starts)), "failures": int((~success).sum()),
                              "varying_dims": _labels(dims, names)}
    usable = _usable_demos(demo_starts, starts.shape[1])
    if len(usable) and len(dims):
        nearest = nearest_demo_distances(starts, usable)  # (N,)
        report["demos"] = len(usable)
        report["nearest_demo_distance"] = {
            "success_median": float(np.median(nearest[success])) if success.any() else None,
            "failure_median": float(np.median(nearest[~success])) if (~success).any() else None,
        }
    return report


def plot_start_map(per_episode: Sequence[dict[str, Any]], path: str | Path, demo_starts: Sequence[np.ndarray] = (),
                   names: Sequence[str] | None = None, title: str = "") -> Path | None:
    """PNG: successes (green circles) and failures (red crosses) at their start, demo starts (black stars), over
    the two start dimensions that vary most (one dimension: against the episode index). None, with a warning,
    when no record has a start vector or no dimension varies."""
    starts, success = _episode_starts(per_episode)
    dims, spread = _varying(starts) if len(starts) else (np.zeros(0, int), np.zeros(0))
    if len(dims) == 0:
        log.warning("no start map: the evaluation episodes carry no varying start vector")
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = dims[np.argsort(-spread)[:2]]  # the one or two dimensions that vary most
    label = _labels(shown, names)
    xy = starts[:, shown] if len(shown) == 2 else np.stack([np.arange(len(starts)), starts[:, shown[0]]], 1)
    demos = _usable_demos(demo_starts, starts.shape[1])
    fig, ax = plt.subplots(figsize=(5, 4.5))
    ax.scatter(*xy[success].T, marker="o", facecolors="none", edgecolors="tab:green", label="success")
    ax.scatter(*xy[~success].T, marker="x", color="tab:red", label="failure")
    if len(demos) and len(shown) == 2:
        ax.scatter(*demos[:, shown].T, marker="*", s=160, color="black", label="demo start")
    ax.set_xlabel(label[0] if len(shown) == 2 else "episode")
    ax.set_ylabel(label[-1])
    ax.set_title(title or f"success {success.mean():.2f} over {len(success)} episodes")
    ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return Path(path)
