"""Tools that say when NOT to trust a learned reward: calibration, a reward-hacking alarm, probe drift.

- :func:`expected_calibration_error` / :func:`reliability_diagram`: does P(success) (the done head, or the
  final progress) match the success (or operator) labels? ECE = sum over equal-width bins of
  ``|bin| / N * |mean(prob) - mean(label)|``; 0 is perfectly calibrated.
- :class:`HackingMonitor`: the learner feeds it every finished online episode (learned progress along it and
  its success label). An episode is *hacked* when the model's final progress says "done"
  (``>= hack_progress``) but the success label says no. It raises an alarm per such episode and when the
  running rate over the last ``window`` episodes exceeds ``max_hack_rate``, and a trend alarm when the mean
  final progress of the newest half-window rose by ``trend_margin`` over the older half while the success
  rate did not rise.
- :class:`ProbeDrift`: progress of the model on a fixed probe set (demo frames captured at start), compared
  with the first reading; a large change means the model the learner trusts is not the one that was evaluated.

Pure numpy except the optional matplotlib plot. Alarms are plain strings (the dashboard shows them as list
items, ``robot_rl/dashboard/feed.py`` reads ``labeller.alarms()``).
"""
from __future__ import annotations

import collections
import logging
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

log = logging.getLogger("robot_rl.reward_models")

# ------------------------------------------------------------------------------------------ calibration
def calibration_bins(probs: np.ndarray, labels: np.ndarray, n_bins: int = 10) -> dict[str, np.ndarray]:
    """Equal-width bins over [0, 1]: ``count``, ``mean_prob`` and ``frac_positive`` per bin, each (n_bins,);
    empty bins hold 0 count and NaN means."""
    p = np.asarray(probs, np.float64)
    y = np.asarray(labels).astype(np.float64)
    if p.ndim != 1 or p.shape != y.shape:
        raise ValueError(f"probs and labels must be equal-length 1-D arrays, got {p.shape} and {y.shape}")
    if len(p) == 0:
        raise ValueError("calibration needs at least one prediction")
    if not np.isfinite(p).all() or (p < 0).any() or (p > 1).any():
        raise ValueError("probs must be finite and in [0, 1]")
    if n_bins < 1:
        raise ValueError(f"n_bins must be >= 1, got {n_bins}")
    idx = np.minimum((p * n_bins).astype(int), n_bins - 1)  # p == 1 falls in the last bin
    count = np.bincount(idx, minlength=n_bins).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_prob = np.bincount(idx, p, n_bins) / count
        frac_pos = np.bincount(idx, y, n_bins) / count
    return {"count": count, "mean_prob": mean_prob, "frac_positive": frac_pos}


def expected_calibration_error(probs: np.ndarray, labels: np.ndarray, n_bins: int = 10) -> float:
    """ECE: ``sum_b |b| / N * |mean_prob_b - frac_positive_b|`` over non-empty bins (0 best, 1 worst)."""
    b = calibration_bins(probs, labels, n_bins)
    filled = b["count"] > 0
    gaps = np.abs(b["mean_prob"][filled] - b["frac_positive"][filled])
    return float((b["count"][filled] / b["count"].sum() * gaps).sum())


def reliability_diagram(probs: np.ndarray, labels: np.ndarray, path: str | Path, n_bins: int = 10,
                        title: str = "reliability") -> Path:
    """PNG: fraction of positives against mean predicted probability per bin, with the diagonal (perfect
    calibration) and the bins' counts; the title carries the ECE."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    b = calibration_bins(probs, labels, n_bins)
    ece = expected_calibration_error(probs, labels, n_bins)
    centers = (np.arange(n_bins) + 0.5) / n_bins
    fig, (ax, axc) = plt.subplots(2, 1, figsize=(5, 6), sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    filled = b["count"] > 0
    ax.bar(centers[filled], b["frac_positive"][filled], width=1.0 / n_bins, edgecolor="k", alpha=0.7,
           label="fraction successful")
    ax.plot(b["mean_prob"][filled], b["frac_positive"][filled], "o", color="C3", label="(mean prob, fraction)")
    ax.plot([0, 1], [0, 1], "k--", lw=1, label="perfect calibration")
    ax.set_ylabel("fraction of positive labels")
    ax.set_ylim(0, 1)
    ax.set_title(f"{title}: ECE {ece:.3f} (N={int(b['count'].sum())})")
    ax.legend(loc="upper left")
    axc.bar(centers, b["count"], width=1.0 / n_bins, edgecolor="k", color="C7")
    axc.set_xlabel("predicted probability")
    axc.set_ylabel("count")
    axc.set_xlim(0, 1)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


# ------------------------------------------------------------------------------------------ hacking
@dataclass(frozen=True)
class EpisodeVerdict:
    """One finished online episode as the hacking monitor saw it."""

    index: int
    """Running episode count (0-based) of the monitor."""
    progress_start: float
    progress_final: float
    progress_max: float
    success: bool
    hacked: bool
    """Final progress >= ``hack_progress`` but the success label is False."""


class HackingMonitor:
    """Per-episode and running-rate reward-hacking alarm (thread-safe: fed on one thread, read on another)."""

    def __init__(self, hack_progress: float = 0.8, window: int = 20, max_hack_rate: float = 0.3,
                 trend_margin: float = 0.15, max_alarms: int = 20) -> None:
        if not 0.0 < hack_progress <= 1.0:
            raise ValueError(f"hack_progress must be in (0, 1], got {hack_progress}")
        if window < 2:
            raise ValueError(f"window must be >= 2, got {window}")
        self.hack_progress, self.window, self.max_hack_rate = hack_progress, window, max_hack_rate
        self.trend_margin = trend_margin
        self.recent: collections.deque[EpisodeVerdict] = collections.deque(maxlen=window)
        self._alarms: collections.deque[str] = collections.deque(maxlen=max_alarms)
        self._lock = threading.Lock()
        self.episodes = 0
        self.hacked_total = 0
        self.successes_total = 0
        self.rate_alarm = False
        self.trend_alarm = False

    def observe(self, progress: np.ndarray, success: bool) -> EpisodeVerdict:
        """``progress``: (T+1,) learned progress along one finished episode (first obs .. final next_obs)."""
        p = np.asarray(progress, np.float64)
        if p.ndim != 1 or len(p) < 2 or not np.isfinite(p).all():
            raise ValueError(f"progress must be a finite 1-D array of >= 2 values, got shape {p.shape}")
        with self._lock:
            hacked = bool(p[-1] >= self.hack_progress and not success)
            v = EpisodeVerdict(self.episodes, float(p[0]), float(p[-1]), float(p.max()), bool(success), hacked)
            self.episodes += 1
            self.hacked_total += hacked
            self.successes_total += bool(success)
            self.recent.append(v)
            if hacked:
                self._raise(f"episode {v.index}: learned progress {v.progress_final:.2f} at the end but "
                                    f"the success label is False")
            self._update_running()
            return v

    def _update_running(self) -> None:
        n = len(self.recent)
        if n < self.window:
            return  # too few episodes for a rate
        rate = sum(v.hacked for v in self.recent) / n
        was = self.rate_alarm
        self.rate_alarm = rate > self.max_hack_rate
        if self.rate_alarm and not was:
            self._raise(f"hacking rate {rate:.0%} over the last {n} episodes (> {self.max_hack_rate:.0%}):"
                                f" the learned reward says done where success says no")
        half = n // 2
        old, new = list(self.recent)[:half], list(self.recent)[half:]
        prog_rise = np.mean([v.progress_final for v in new]) - np.mean([v.progress_final for v in old])
        succ_rise = np.mean([v.success for v in new]) - np.mean([v.success for v in old])
        was = self.trend_alarm
        self.trend_alarm = bool(prog_rise > self.trend_margin and succ_rise <= 0.0)
        if self.trend_alarm and not was:
            self._raise(f"learned progress rising (+{prog_rise:.2f} final progress over the last {n} "
                                f"episodes) while success is not ({succ_rise:+.0%})")

    def _raise(self, alarm: str) -> None:
        self._alarms.append(alarm)
        log.warning("learned-reward alarm: %s", alarm)

    def hack_rate(self) -> float:
        with self._lock:
            return sum(v.hacked for v in self.recent) / len(self.recent) if self.recent else 0.0

    def alarms(self) -> list[str]:
        with self._lock:
            return list(self._alarms)

    def state_dict(self) -> dict:
        """Counters, the running window and the alarms raised so far (plain types: a learner checkpoint holds
        it, so a resumed run's rate and trend alarms see the episodes before the restart)."""
        with self._lock:
            return {"episodes": self.episodes, "hacked_total": self.hacked_total,
                    "successes_total": self.successes_total, "rate_alarm": self.rate_alarm,
                    "trend_alarm": self.trend_alarm, "alarms": list(self._alarms),
                    "recent": [(v.index, v.progress_start, v.progress_final, v.progress_max, v.success, v.hacked)
                               for v in self.recent]}

    def load_state_dict(self, state: dict) -> None:
        with self._lock:
            self.episodes, self.hacked_total = int(state["episodes"]), int(state["hacked_total"])
            self.successes_total = int(state["successes_total"])
            self.rate_alarm, self.trend_alarm = bool(state["rate_alarm"]), bool(state["trend_alarm"])
            self._alarms.clear()
            self._alarms.extend(state["alarms"])
            self.recent.clear()  # the newest ``window`` of them when this run's window is shorter
            self.recent.extend(EpisodeVerdict(int(i), float(p0), float(p1), float(pm), bool(s), bool(h))
                               for i, p0, p1, pm, s, h in state["recent"])

    def stats(self) -> dict[str, float]:
        with self._lock:
            recent = list(self.recent)
        succ = [v.progress_final for v in recent if v.success]
        fail = [v.progress_final for v in recent if not v.success]
        out = {"reward/hack_rate": sum(v.hacked for v in recent) / len(recent) if recent else 0.0,
               "reward/hacked_episodes": float(self.hacked_total), "reward/monitored_episodes": float(self.episodes),
               "reward/alarm": float(self.rate_alarm or self.trend_alarm)}
        if succ:  # absent (not NaN) while the window has none: the metrics file stays plain JSON
            out["reward/final_progress_success"] = float(np.mean(succ))
        if fail:
            out["reward/final_progress_failure"] = float(np.mean(fail))
        return out


class ProbeDrift:
    """Mean absolute change of the model's progress on a fixed probe set since the first reading."""

    def __init__(self, max_drift: float = 0.1) -> None:
        self.max_drift = max_drift
        self.reference: np.ndarray | None = None
        self.last = 0.0

    def update(self, phi: np.ndarray) -> float:
        phi = np.asarray(phi, np.float64)
        if self.reference is None:
            self.reference = phi.copy()
        if phi.shape != self.reference.shape:
            raise ValueError(f"probe set changed size: {phi.shape} vs {self.reference.shape}")
        self.last = float(np.abs(phi - self.reference).mean())
        return self.last

    @property
    def drifted(self) -> bool:
        return self.last > self.max_drift

    def state_dict(self) -> dict:
        """The first reading and the last drift (plain types, for the learner's checkpoint)."""
        return {"reference": None if self.reference is None else self.reference.tolist(), "last": self.last}

    def load_state_dict(self, state: dict) -> None:
        ref = state["reference"]
        self.reference = None if ref is None else np.asarray(ref, np.float64)
        self.last = float(state["last"])
