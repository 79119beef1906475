"""Safety below the policy: pure numpy, no ROS. Every command the node sends passes through here.

:class:`TargetLimiter` turns a desired position target (TCP xyz or joint vector) into a safe one: non-finite
input is refused (the previous target is held), the target is clipped into the box (workspace or joint
limits), its per-step speed and acceleration are bounded, and it may lead the measured position by at most
``max_lead``. :class:`Guard` decides when the robot must hold instead of following the policy: e-stop
(latched until released), stale or missing sensors, and the watchdog (no fresh action).
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np


class TargetLimiter:
    """Position-target filter with box, speed, acceleration and lead limits (all per axis)."""

    def __init__(self, low: np.ndarray, high: np.ndarray, max_speed: float, max_accel: float, dt: float,
                 max_lead: float = np.inf) -> None:
        self.low, self.high = np.asarray(low, np.float64), np.asarray(high, np.float64)
        if self.low.shape != self.high.shape or (self.low >= self.high).any():
            raise ValueError(f"box low {self.low} must be below high {self.high}")
        if max_speed <= 0 or max_accel <= 0 or dt <= 0:
            raise ValueError("max_speed, max_accel and dt must be > 0")
        self.max_step = max_speed * dt            # largest per-step move
        self.max_step_change = max_accel * dt * dt  # largest change of the per-step move
        self.max_lead = max_lead
        self.target: np.ndarray | None = None
        self.step = np.zeros_like(self.low)
        self.refused = 0  # non-finite inputs seen

    def reset(self, measured: np.ndarray) -> np.ndarray:
        """Start from the measured position (clipped into the box), at rest."""
        measured = np.asarray(measured, np.float64)
        if measured.shape != self.low.shape or not np.isfinite(measured).all():
            raise ValueError(f"measured position {measured} is not a finite {self.low.shape} vector")
        self.target = np.clip(measured, self.low, self.high)
        self.step = np.zeros_like(self.low)
        return self.target.copy()

    def hold(self, measured: np.ndarray) -> np.ndarray:
        """Stop where the robot is (an immediate stop: deliberately not acceleration-limited)."""
        return self.reset(measured)

    def __call__(self, desired: np.ndarray, measured: np.ndarray) -> np.ndarray:
        """The safe target for this control step (always finite, always inside the box)."""
        if self.target is None:
            raise RuntimeError("TargetLimiter used before reset(measured)")
        desired = np.asarray(desired, np.float64)
        measured = np.asarray(measured, np.float64)
        if desired.shape != self.low.shape or not np.isfinite(desired).all() or not np.isfinite(measured).all():
            self.refused += 1
            self.step = np.zeros_like(self.low)
            return self.target.copy()  # hold the last safe target
        step = np.clip(desired, self.low, self.high) - self.target
        step = np.clip(step, self.step - self.max_step_change, self.step + self.max_step_change)
        step = np.clip(step, -self.max_step, self.max_step)
        target = np.clip(self.target + step, self.low, self.high)
        if np.isfinite(self.max_lead):
            target = np.clip(target, measured - self.max_lead, measured + self.max_lead)
            target = np.clip(target, self.low, self.high)
        self.step = target - self.target
        self.target = target
        return target.copy()


@dataclass
class Guard:
    """Why the robot must hold right now, if it must. Thread-safe: ROS callbacks and the control loop share it."""

    watchdog_timeout_s: float
    """No action for this long -> hold."""
    clock: Callable[[], float] = time.monotonic
    estopped: bool = False
    last_action_t: float | None = None
    counts: dict[str, int] = field(default_factory=lambda: {"estop": 0, "stale": 0, "watchdog": 0,
                                                             "non_finite": 0})
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def set_estop(self, active: bool) -> None:
        with self._lock:
            if active and not self.estopped:
                self.counts["estop"] += 1
            self.estopped = bool(active)

    def action_arrived(self) -> None:
        with self._lock:
            self.last_action_t = self.clock()

    def arm(self) -> None:
        """Stop the watchdog clock (between episodes: no action is expected while resetting)."""
        with self._lock:
            self.last_action_t = None

    def watchdog_expired(self) -> bool:
        with self._lock:
            if self.last_action_t is None:
                return False
            if self.clock() - self.last_action_t > self.watchdog_timeout_s:
                self.counts["watchdog"] += 1
                self.last_action_t = None  # report once per stall; the hold stays until the next action
                return True
            return False

    def hold_reason(self, stale: list[str]) -> str | None:
        """``estop``, ``stale: <sensors>`` or None (follow the policy)."""
        with self._lock:
            if self.estopped:
                return "estop"
        if stale:
            self.counts["stale"] += 1
            return "stale: " + ", ".join(stale)
        return None
