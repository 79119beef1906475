"""Running state normalisation: the policy's ``state`` statistics refined with the online states the learner
receives (``learner.normalize_state_online_until``).

Why: the learner standardises ``state`` with the demonstrations' per-dimension mean/std, and a few short demos
cover a sliver of the workspace. 3 pick-cube demos (63 steps) put the TCP's y at std 0.01-0.02 m; the arm's own
exploration then reaches 13-27 standard deviations out, past the encoder's clip at 10, where every position
looks the same to the actor and the critic. Counting every online state too (Welford's running moments, as
rsl_rl's empirical normalisation does) widens the statistics to the states the policy actually visits, until
``until`` states have been counted; then they stay fixed, so the critic's inputs stop moving.

Threads: :meth:`observe` runs on the learner's IO thread (each ingested chunk), :meth:`apply` on the learner's
own thread just before the weights are published, so actors always get the statistics the weights were trained
with. A small lock keeps the two apart.
"""
from __future__ import annotations

import threading
from typing import Any

import numpy as np
import torch


class RunningStateNormalizer:
    """Per-dimension running mean/variance of ``state`` ``(S,)`` over the demos and then the online states."""

    def __init__(self, state_dim: int, until: int) -> None:
        if until <= 0:
            raise ValueError(f"RunningStateNormalizer needs until > 0, got {until}")
        self.state_dim, self.until = int(state_dim), int(until)
        self.count = 0
        self.mean = np.zeros(self.state_dim, np.float64)  # (S,)
        self.m2 = np.zeros(self.state_dim, np.float64)  # (S,) sum of squared deviations
        self._lock = threading.Lock()
        self._changed = False

    @property
    def frozen(self) -> bool:
        """True once ``until`` states were counted: the statistics no longer change."""
        return self.count >= self.until

    def observe(self, states: np.ndarray) -> None:
        """Fold ``states (N, S)`` into the moments (Chan et al.'s parallel update); non-finite rows are
        refused loudly, since one NaN would poison the statistics of every later step."""
        states = np.asarray(states, np.float64).reshape(-1, self.state_dim)
        if not len(states):
            return
        if not np.isfinite(states).all():
            raise ValueError("state normalisation got a non-finite state")
        with self._lock:
            if self.frozen:
                return
            states = states[: self.until - self.count]
            n, batch_mean = len(states), states.mean(0)
            batch_m2 = ((states - batch_mean) ** 2).sum(0)
            total = self.count + n
            delta = batch_mean - self.mean
            self.mean = self.mean + delta * (n / total)
            self.m2 = self.m2 + batch_m2 + delta ** 2 * (self.count * n / total)
            self.count = total
            self._changed = True

    def statistics(self) -> tuple[np.ndarray, np.ndarray]:
        """``(mean, std)``, each ``(S,)`` float64 (the sample std, as ``torch.std``)."""
        with self._lock:
            std = np.sqrt(self.m2 / max(self.count - 1, 1))
            return self.mean.copy(), std

    def apply(self, encoders: list[Any]) -> bool:
        """Write the current statistics into each encoder's ``set_state_normalization`` (the policy's, and a
        separate target copy where the algorithm keeps one); False when nothing changed since the last call."""
        with self._lock:
            if not self._changed or self.count < 2:
                return False
            self._changed = False
        mean, std = self.statistics()
        for encoder in encoders:
            encoder.set_state_normalization(torch.as_tensor(mean, dtype=torch.float32),
                                            torch.as_tensor(std, dtype=torch.float32))
        return True

    def state_dict(self) -> dict[str, Any]:
        with self._lock:
            return {"count": self.count, "mean": self.mean.tolist(), "m2": self.m2.tolist(), "until": self.until}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        mean, m2 = np.asarray(state["mean"], np.float64), np.asarray(state["m2"], np.float64)
        if mean.shape != (self.state_dim,) or m2.shape != (self.state_dim,):
            raise ValueError(f"state normalisation checkpoint has shape {mean.shape}, this run's state is "
                             f"({self.state_dim},)")
        with self._lock:
            self.count, self.mean, self.m2 = int(state["count"]), mean, m2
            # the encoders' buffers were restored with the algorithm's state as of the last publish; the next
            # publish writes these moments, which may have counted a few more states before the checkpoint
            self._changed = True


def make_state_normalizer(cfg: Any, policy: Any) -> RunningStateNormalizer | None:
    """The learner's normaliser for ``cfg.learner.normalize_state_online_until`` > 0 with
    ``policy.normalize_state`` on a policy whose encoder reads ``state``; None otherwise (the demos' fit only)."""
    until = int(cfg.learner.normalize_state_online_until)
    state_dim = getattr(getattr(policy, "encoder", None), "state_dim", 0)
    if until <= 0 or not getattr(cfg.policy, "normalize_state", False) or not state_dim:
        return None
    return RunningStateNormalizer(state_dim, until)


def state_encoders(policy: Any, algo: Any) -> list[Any]:
    """The policy's encoder, and the algorithm's target copy of it where it keeps a separate one (SAC with a
    trainable encoder): both must standardise ``state`` alike."""
    target = getattr(algo, "target_encoder", None)
    return [policy.encoder] + ([target] if target is not None and target is not policy.encoder else [])
