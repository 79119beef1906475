"""Does the critic believe returns the policy never gets? Start-state Q against realised returns, online.

A learned reward's benefit collapsed in our runs because the critic over-estimated (README, Learned rewards:
Q 10.6 against a Monte-Carlo return of -0.19 at the start of the last episodes, with no episode flagged as
hacked), and nothing in the learner's logs said so: ``q_mean`` alone has no reference. :class:`ValueCheck` keeps
the last ``episodes`` finished online episodes (replay form: embeddings where replay holds embeddings) and, when
asked, compares the critic's Q at each episode's first ``head`` steps with the discounted return the episode
actually realised from there, on the rewards the algorithm trains on (the learned reward's labels, when one is
configured). Metrics ``value/q_start``, ``value/return_start``, ``value/best_return_start``, ``value/gap``.

The alarm: mean start-state Q above the *best* return any of those episodes realised, by more than
``margin`` (absolute) or ``relative_margin`` x that best return, whichever is larger. The best realised return is
what a policy at least as good as the recent one has shown it can get from these starts, so an expected value
above it by a wide margin is belief, not experience. A truncated episode's return lacks its tail
``gamma^T V(s_T)``, so it is a lower bound; comparing against the best episode (a success, when there is one)
keeps that from raising the alarm on a policy that sometimes succeeds. Warns once each time it enters the alarm.
"""
from __future__ import annotations

import collections
import logging
from typing import Callable

import numpy as np

from robot_rl.replay import concat_batches
from robot_rl.types import Batch

log = logging.getLogger(__name__)

QFunction = Callable[[Batch], np.ndarray]
"""numpy batch (replay form) -> Q (N,) of its rows' (obs, action), as the algorithm's critic estimates it."""
RewardFunction = Callable[[Batch], np.ndarray]
"""numpy batch -> the rewards (N,) the algorithm trains on (the recorded ones, or a learned reward's labels)."""


def discounted_returns(rewards: np.ndarray, gamma: float) -> np.ndarray:
    """(T,) rewards of one episode -> (T,) discounted return from each step to the episode's end."""
    out = np.zeros(len(rewards), np.float64)
    acc = 0.0
    for t in range(len(rewards) - 1, -1, -1):
        acc = float(rewards[t]) + gamma * acc
        out[t] = acc
    return out


class ValueCheck:
    """Collects finished online episodes (:meth:`observe`, any thread) and compares the critic's start-state Q
    with their realised returns (:meth:`check`, the thread that owns the algorithm)."""

    def __init__(self, gamma: float, episodes: int = 10, head: int = 5, margin: float = 1.0,
                 relative_margin: float = 0.5, max_open: int = 16, stale_after: int = 512,
                 critic_keys: tuple[str, ...] = ()) -> None:
        """``max_open``: episodes followed at once (a fleet's others are not; memory stays bounded);
        ``stale_after``: :meth:`observe` calls without a row after which an open episode is dropped (its actor
        stopped mid-episode); ``critic_keys``: the obs keys the critic reads (the rows handed to ``q_values``
        carry only these; replay may hold more, e.g. a reward model's frames); empty = all."""
        if not 0.0 < gamma <= 1.0:
            raise ValueError(f"gamma must be in (0, 1], got {gamma}")
        if episodes < 1 or head < 1:
            raise ValueError(f"episodes and head must be >= 1, got {episodes}, {head}")
        if margin < 0 or relative_margin < 0:
            raise ValueError(f"margins must be >= 0, got {margin}, {relative_margin}")
        self.gamma, self.head, self.margin, self.relative_margin = gamma, head, margin, relative_margin
        self.critic_keys = tuple(critic_keys)
        self.finished: collections.deque[Batch] = collections.deque(maxlen=episodes)
        # (actor, episode id) -> (the observe call that last brought a row, its rows so far)
        self._open: dict[tuple[str, int], tuple[int, list[Batch]]] = {}
        self._max_open, self._stale_after, self._calls = max_open, stale_after, 0
        self.alarm = False
        self.alarms_raised = 0
        self._alarms: collections.deque[str] = collections.deque(maxlen=20)  # newest last (the dashboard's)
        self.last: dict[str, float] = {}

    def observe(self, batch: Batch) -> None:
        """Rows of online episodes in arrival order (numpy, replay form); an episode is kept once its last row
        (terminated or truncated) arrived."""
        self._calls += 1
        for key in [k for k, (seen, _) in self._open.items() if self._calls - seen > self._stale_after]:
            del self._open[key]  # its actor stopped mid-episode
        actors = batch.actor_id or ("",) * len(batch)
        keys = list(zip(actors, np.asarray(batch.episode_id).tolist()))
        ends = np.asarray(batch.terminated, bool) | np.asarray(batch.truncated, bool)
        steps = np.asarray(batch.step)
        for key in dict.fromkeys(keys):  # each episode in the batch once, in order
            rows = np.fromiter((k == key for k in keys), bool, len(keys))
            if key not in self._open and (len(self._open) >= self._max_open or steps[rows].min() != 0):
                continue  # enough episodes followed already, or one seen from its middle (no start state)
            parts = self._open.pop(key, (0, []))[1] + [batch.select(rows)]
            if ends[rows].any():
                self.finished.append(parts[0] if len(parts) == 1 else concat_batches(parts))
            else:
                self._open[key] = (self._calls, parts)

    def alarms(self) -> list[str]:
        """The alarms raised so far (newest last, at most 20), plain strings; the dashboard lists them."""
        return list(self._alarms)

    def check(self, q_values: QFunction, rewards: RewardFunction) -> dict[str, float]:
        """Compare now; returns the ``value/*`` metrics (empty before the first finished episode)."""
        episodes = list(self.finished)
        if not episodes:
            return {}
        q_start, ret_start = [], []
        for episode in episodes:
            if np.any(np.diff(np.asarray(episode.step)) < 0):  # chunks of an episode arrive in order; be sure
                episode = episode.select(np.argsort(np.asarray(episode.step), kind="stable"))
            returns = discounted_returns(np.asarray(rewards(episode), np.float64), self.gamma)  # (T,)
            head = episode.select(np.arange(len(episode)) < self.head)
            if self.critic_keys:
                head = head.with_obs_keys(self.critic_keys)
            q_start.append(float(np.mean(q_values(head))))
            ret_start.append(float(np.mean(returns[:self.head])))
        q, ret, best = float(np.mean(q_start)), float(np.mean(ret_start)), float(np.max(ret_start))
        bound = best + max(self.margin, self.relative_margin * abs(best))
        was, self.alarm = self.alarm, q > bound
        if self.alarm and not was:
            self.alarms_raised += 1
            self._alarms.append(f"critic over-estimation: start-state Q {q:.3f} over the last {len(episodes)} "
                                f"episodes, best realised return {best:.3f} (mean {ret:.3f})")
            log.warning("%s: the critic believes returns the policy does not get. With a learned reward this "
                        "preceded the collapse of success; an ensemble critic (algo.num_critics=4 "
                        "algo.target_subset_size=2, README: Learned rewards) held.", self._alarms[-1])
        self.last = {"value/q_start": q, "value/return_start": ret, "value/best_return_start": best,
                     "value/gap": q - ret, "value/overestimation_alarm": float(self.alarm),
                     "value/episodes": float(len(episodes))}
        return dict(self.last)


