"""Turning progress into reward: potential-based shaping (policy-invariant) and the naive delta (not).

Potential-based shaping (Ng, Harada & Russell 1999) adds ``F(s, s') = gamma * Phi(s') - Phi(s)`` to the
reward. Along any trajectory the discounted sum of F telescopes to ``-Phi(s_0)`` plus a vanishing tail, so
every policy's Q-values shift by ``-Phi(s)`` and the optimal policy is unchanged, *provided* ``gamma`` is the
discount the learner uses and a terminal state has ``Phi = 0`` (nothing is bootstrapped after it). A
time-limit truncation is not terminal: the episode was cut, the MDP goes on, so ``Phi(s')`` stays.

The naive delta ``Phi(s') - Phi(s)`` equals the potential term plus ``(1 - gamma) * Phi(s')``: a bonus for
*being* in states the model rates highly, so an agent learns to linger in (or oscillate around) states the
model over-rates instead of finishing -- the "semantic trap" of Robo-Dopamine. It is here only as an
explicitly named option for comparisons.
"""
from __future__ import annotations

import numpy as np

SHAPINGS = ("potential", "naive_delta", "none")


def _check(name: str, x: np.ndarray, n: int | None = None) -> np.ndarray:
    a = np.asarray(x)
    if a.ndim != 1:
        raise ValueError(f"{name} must be 1-D (N,), got shape {a.shape}")
    if n is not None and a.shape[0] != n:
        raise ValueError(f"{name} has {a.shape[0]} entries, expected {n}")
    if a.dtype != bool and not np.isfinite(a).all():
        raise ValueError(f"{name} contains NaN or inf")
    return a


def potential_shaping(reward: np.ndarray, phi: np.ndarray, phi_next: np.ndarray, terminated: np.ndarray,
                      gamma: float, scale: float = 1.0,
                      terminal_potential: np.ndarray | float = 0.0) -> np.ndarray:
    """``r + scale * (gamma * Phi'(s') - Phi(s))`` with ``Phi'(s') = Phi(s')`` unless terminated, then
    ``terminal_potential`` (0 by default; (N,) or a scalar); all (N,), float32 out.

    ``terminated`` marks MDP ends. Truncated transitions must NOT be passed as terminated. Invariance needs
    every terminal of one kind to share a potential (e.g. 1 for successes, 0 otherwise: success-gated).
    """
    if not 0.0 <= gamma <= 1.0:
        raise ValueError(f"gamma must be in [0, 1], got {gamma}")
    r = _check("reward", reward).astype(np.float64)
    n = len(r)
    p, pn = _check("phi", phi, n).astype(np.float64), _check("phi_next", phi_next, n).astype(np.float64)
    term = _check("terminated", terminated, n).astype(bool)
    end = np.broadcast_to(np.asarray(terminal_potential, np.float64), (n,))
    return (r + scale * (gamma * np.where(term, end, pn) - p)).astype(np.float32)


def naive_delta(reward: np.ndarray, phi: np.ndarray, phi_next: np.ndarray, scale: float = 1.0) -> np.ndarray:
    """``r + scale * (Phi(s') - Phi(s))``: NOT policy-invariant (see module docstring). float32 (N,)."""
    r = _check("reward", reward).astype(np.float64)
    n = len(r)
    p, pn = _check("phi", phi, n).astype(np.float64), _check("phi_next", phi_next, n).astype(np.float64)
    return (r + scale * (pn - p)).astype(np.float32)


def shape(kind: str, reward: np.ndarray, phi: np.ndarray, phi_next: np.ndarray, terminated: np.ndarray,
          gamma: float, scale: float = 1.0, terminal_potential: np.ndarray | float = 0.0) -> np.ndarray:
    """Dispatch on ``kind`` (``potential`` | ``naive_delta`` | ``none``)."""
    if kind == "potential":
        return potential_shaping(reward, phi, phi_next, terminated, gamma, scale, terminal_potential)
    if kind == "naive_delta":
        return naive_delta(reward, phi, phi_next, scale)
    if kind == "none":
        return _check("reward", reward).astype(np.float32)
    raise ValueError(f"unknown shaping {kind!r}; choose one of {SHAPINGS}")
