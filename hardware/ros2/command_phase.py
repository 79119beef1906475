"""The safety node's command schedule phase-locked onto the actor's targets (``align_commands``), with a margin
learned from how much their arrival jitters. Plain arithmetic on a caller's clock (tested with a simulated one).

The actor publishes a target once per policy period; the safety node commands at ``command_hz`` on a
:class:`DeadlineSchedule`. A target waits for the next command slot: with the slot just after the target's usual
arrival the wait is short, but a target that comes a little later than the slot waits a whole command period,
which was the tail of camera frame -> command. :class:`TargetSlotLock` therefore aims the slot that serves the
targets at a high quantile (``quantile``) of their recent arrival times plus ``guard``: nearly every target
arrives before its slot, and the wait is the arrival spread rather than a period. A quantile of the targets seen
so far is no higher than the latest of them, and each new target is the latest yet with probability 1/(n + 1):
over a 200-target start about three of them arrive later than any before, and each waited a command period
(the misses of ``benchmarks/ros2_loop.py``). So the slot also sits at least ``tail_factor`` times the p90 - p50
spread after the median: an estimate of the far tail from the body of the distribution, which a few samples
already measure well (for the gamma-shaped jitter of an actor, 3x reaches about its p99.9). The slot never aims
more than one command period after the median arrival (beyond that waiting for the next slot costs no more). The
schedule moves by at most ``max_step`` per target, so the controller still gets a steady ``command_hz`` (one
command period in ``command_hz / control_hz`` changes by at most that).
"""
from __future__ import annotations

import math
from collections import deque

import numpy as np

from robot_rl.hardware.ros2.realtime import DeadlineSchedule


class TargetSlotLock:
    """Keeps one of ``schedule``'s deadlines per ``target_period`` (the slot) just after the targets' arrival.

    :meth:`arrived` gets each target's arrival time and the deadline of the command that served it; it returns
    the shift applied to the schedule (s, positive = later). ``lead_s`` is the slot's current lead over the
    median arrival (the learned margin)."""

    def __init__(self, schedule: DeadlineSchedule, target_period: float, quantile: float = 0.99,
                 guard: float = 0.0005, initial_margin: float = 0.003, max_step: float = 0.0003,
                 gain: float = 0.3, window: int = 200, min_samples: int = 10, tail_factor: float = 3.0) -> None:
        if not 0.5 <= quantile <= 1.0:
            raise ValueError(f"quantile must be in [0.5, 1], got {quantile}")
        if tail_factor < 0:
            raise ValueError(f"tail_factor must be >= 0, got {tail_factor}")
        if not target_period > 0 or max_step <= 0:
            raise ValueError("target_period and max_step must be > 0")
        self.schedule, self.target_period, self.quantile = schedule, float(target_period), float(quantile)
        self.guard, self.initial_margin, self.max_step, self.gain = guard, initial_margin, max_step, gain
        self.min_samples, self.tail_factor = min_samples, float(tail_factor)
        # arrival - slot (s) of recent targets, re-expressed against the current schedule (shifts subtracted):
        # negative = the target came before its slot
        self._offsets: deque[float] = deque(maxlen=window)  # stored + _shifted (so a shift touches one number)
        self._shifted = 0.0
        self._next_slot: float | None = None  # where the next target's slot is (a deadline of the schedule)
        self._off = 0  # consecutive targets more than a quarter target period from their slot
        self._last_arrival = -math.inf
        self._warmup_lead = initial_margin  # the lead while too few arrivals were seen: learned at a relock
        self.relocks = 0

    @property
    def lead_s(self) -> float:
        """How long before its slot the median recent target arrives (s); the initial margin until measured."""
        if len(self._offsets) < self.min_samples:
            return self.initial_margin
        return -float(np.median(self._recent()))

    def _recent(self) -> np.ndarray:
        """Recent arrival - slot offsets (s) against the current schedule."""
        return np.asarray(self._offsets) - self._shifted

    def _late_edge(self, offsets: np.ndarray, median: float) -> float:
        """How far after their ``median`` the latest targets come (s): the ``quantile`` of ``offsets`` or
        ``tail_factor`` x their p90 - p50 spread, whichever is later."""
        quantile, p90 = np.quantile(offsets, [self.quantile, 0.9])
        return max(float(quantile) - median, self.tail_factor * (float(p90) - median))

    def _best_slot(self) -> float:
        """Where the slot should be, relative to the current one (s): ``guard`` after the late edge of the
        recent arrivals, but never more than a command period (less ``guard``) after their median: a target
        later than that is better served by the next slot than by making every target wait."""
        offsets = self._recent()
        median = float(np.median(offsets))
        return median + min(self._late_edge(offsets, median), self.schedule.period - 2 * self.guard) + self.guard

    def _lock(self, arrival: float, served: float) -> float:
        """First target, or after the targets' phase moved (two in a row more than a quarter target period off
        their slot, or the first after a pause: the actor's schedule restarted on other camera frames): put a deadline after
        ``arrival`` by the lead learned so far (``initial_margin`` before anything was learned), moving later
        only (a shorter command period than the controller's could be read as a fault). The arrival spread
        learned so far sets the lead until enough new arrivals are seen: the jitter did not change with the phase."""
        period = self.schedule.period
        recent = self._recent()[:len(self._offsets) - self._off]  # without the off-phase ones that relock
        if len(recent) >= self.min_samples:
            self._warmup_lead = min(self._late_edge(recent, float(np.median(recent))), period - 2 * self.guard) + self.guard
        delta = (arrival + self._warmup_lead - served) % period
        self.schedule.shift(delta)
        # a deadline now lies exactly at arrival + lead (served + delta may be one command period later)
        self._next_slot = arrival + self._warmup_lead + self.target_period
        self._offsets.clear()
        self._shifted = 0.0
        self._off = 0
        self.relocks += 1
        return delta

    def forget_phase(self) -> None:
        """The next target locks afresh (a new source of targets), with the lead learned so far."""
        self._next_slot = None

    def arrived(self, arrival: float, served: float) -> float:
        """Target arrived at ``arrival`` and was commanded at the deadline ``served``; moves the schedule. A
        pause in the targets (the actor resetting the robot) keeps the lock: the slot grid is extrapolated by
        whole target periods, and only a changed phase relocks."""
        gap, self._last_arrival = arrival - self._last_arrival, arrival
        if self._next_slot is None:
            return self._lock(arrival, served)
        offset = math.remainder(arrival - self._next_slot, self.target_period)
        slot = arrival - offset
        self._off = self._off + 1 if abs(offset) > self.target_period / 4 else 0
        # after a pause (the actor reset the robot and restarted its schedule on other camera frames) the
        # first target off its slot is the new phase; otherwise two in a row (one slow target is not)
        if self._off >= 2 or (self._off == 1 and gap > 2.5 * self.target_period):
            self._offsets.append(offset + self._shifted)
            return self._lock(arrival, served)
        self._offsets.append(offset + self._shifted)
        if len(self._offsets) < self.min_samples:
            error = offset + self._warmup_lead  # too few to learn from yet: follow each target at a fixed lead
        else:
            error = self._best_slot()  # > 0: move the slot later
        shift = max(-self.max_step, min(self.max_step, self.gain * error))
        self.schedule.shift(shift)
        self._shifted += shift
        self._next_slot = slot + self.target_period + shift
        return shift
