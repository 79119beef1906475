"""Safety below the policy: pure numpy, no ROS. Every command the node sends passes through here.

:class:`TargetLimiter` turns a desired position target (TCP xyz or joint vector) into the next command. Its
guarantees, per axis and per command (``max_step = max_speed * dt``), whatever the input (NaN, inf, 1e30,
a measured pose inside or outside the box, holds in any order):

* every command is finite;
* every command differs from the previous one by at most ``max_step`` (only :meth:`TargetLimiter.reset`,
  which re-synchronises to the measured position before an episode, may jump, and only to where the robot is);
* a command outside the box (workspace or joint limits) is no further outside than the previous command,
  except during a hold, whose commands move only towards where the robot was when the hold began (and only if
  that was within ``max_lead + max_step`` of the command: a displaced arm or a glitch is not followed);
* outside holds, a command never moves away from the measured position once it leads it by ``max_lead`` or
  more (within ``max_lead`` it may move freely).

Between those, targets are acceleration-limited (``max_accel``; a hold or a wall stops harder, on purpose).
Clipping always happens into an interval that contains the previous command, which is why no clip can undo
the speed limit: the box and the lead band are each widened just enough to contain the current command.

:class:`Guard` decides when the robot must hold instead of following the policy: e-stop (latched until an
explicit :meth:`Guard.reset_estop`), stale or invalid sensors, and the watchdog (no fresh action).

Both are plain Python so a separate safety process can run them unchanged at 100-1000 Hz.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from robot_rl.hardware.ros2.config import RobotNodeConfig


class TargetLimiter:
    """Position-target filter with box, speed, acceleration and lead limits (all per axis).

    ``target`` is the last command (None before the first); ``holding`` says whether it comes from a hold."""

    def __init__(self, low: np.ndarray, high: np.ndarray, max_speed: float, max_accel: float, dt: float,
                 max_lead: float) -> None:
        self.low, self.high = np.asarray(low, np.float64), np.asarray(high, np.float64)
        if self.low.ndim != 1 or self.low.shape != self.high.shape or not (self.low < self.high).all():
            raise ValueError(f"box low {self.low} must be below high {self.high} (1-D, same length)")
        for name, value in (("max_speed", max_speed), ("max_accel", max_accel), ("dt", dt),
                            ("max_lead", max_lead)):
            if not (np.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be finite and > 0, got {value}")
        self.dt = float(dt)
        self.max_step = float(max_speed) * float(dt)                   # largest per-command move
        self.max_step_change = float(max_accel) * float(dt) ** 2       # largest change of the per-command move
        self.max_lead = float(max_lead)
        self.target: np.ndarray | None = None
        self.step = np.zeros_like(self.low)                            # last move (velocity * dt)
        self.holding = False
        self._anchor: np.ndarray | None = None                         # where the current hold converges to
        self.refused = 0        # desired targets that were non-finite or of the wrong shape (held instead)
        self.bad_measured = 0   # measured positions that were non-finite or of the wrong shape

    def _measured(self, measured: np.ndarray) -> np.ndarray | None:
        """``measured`` as a float64 vector, or None (counted) if it is not a finite vector of the box's size."""
        m = np.asarray(measured, np.float64)
        if m.shape != self.low.shape or not np.isfinite(m).all():
            self.bad_measured += 1
            return None
        return m

    def reset(self, measured: np.ndarray) -> np.ndarray:
        """Re-synchronise to the robot: the command becomes the measured position (even outside the box), at rest.

        The one call that may jump, and only to where the robot is; the next commands re-enter the box through
        rate-limited steps. Raises ValueError on a non-finite measurement (there is nothing safe to start from)."""
        m = self._measured(measured)
        if m is None:
            raise ValueError(f"measured position {measured} is not a finite {self.low.shape} vector")
        self.target, self.step = m.copy(), np.zeros_like(self.low)
        self.holding, self._anchor = False, None
        return m

    def hold(self, measured: np.ndarray) -> np.ndarray | None:
        """Stop: move the command towards where the robot was when this hold began, by at most ``max_step``.

        The anchor is fixed for the whole hold (repeated holds do not follow a sagging or pushed arm). It is the
        current command (stay put) when the measurement is non-finite or further than ``max_lead + max_step``
        from the command on some axis: the lead limit keeps a tracking arm closer than that, so such a reading is
        a displaced arm or a sensor glitch, and walking the command towards it could drive the robot anywhere.
        Returns None only when there is neither a previous command nor a valid measurement: then nothing may be
        commanded."""
        m = self._measured(measured)
        if self.target is None:
            if m is None:
                return None
            self.target = m.copy()
            self.step = np.zeros_like(self.low)
            self.holding, self._anchor = True, m.copy()
            return m
        if not self.holding:
            self.holding = True
            plausible = m is not None and bool((np.abs(m - self.target) <= self.max_lead + self.max_step).all())
            self._anchor = m.copy() if plausible and m is not None else self.target.copy()
        assert self._anchor is not None
        step = np.clip(self._anchor - self.target, -self.max_step, self.max_step)
        self.target = self.target + step
        self.step = step
        return self.target.copy()

    def snapshot(self) -> tuple[Any, ...]:
        """The state the next command depends on, for :meth:`restore` (a command computed ahead of its deadline
        and then recomputed because a newer target came: the limits apply once, to the command that goes out)."""
        copy = lambda a: None if a is None else a.copy()  # noqa: E731
        return copy(self.target), self.step.copy(), self.holding, copy(self._anchor), self.refused, self.bad_measured

    def restore(self, state: tuple[Any, ...]) -> None:
        """Back to a :meth:`snapshot`."""
        target, step, self.holding, anchor, self.refused, self.bad_measured = state
        self.target = None if target is None else target.copy()
        self.step, self._anchor = step.copy(), None if anchor is None else anchor.copy()

    def __call__(self, desired: np.ndarray, measured: np.ndarray) -> np.ndarray:
        """The next command towards ``desired`` (see the module docstring for what it guarantees).

        A desired target that is not a finite vector of the right size, or a measurement that is not, makes this
        a :meth:`hold` (counted in ``refused`` / ``bad_measured``)."""
        if self.target is None:
            raise RuntimeError("TargetLimiter used before reset(measured) or hold(measured)")
        d = np.asarray(desired, np.float64)
        if d.shape != self.low.shape or not np.isfinite(d).all():
            self.refused += 1
            held = self.hold(measured)
            assert held is not None  # a target exists
            return held
        m = self._measured(measured)
        if m is None:
            held = self.hold(measured)
            assert held is not None
            return held
        self.holding, self._anchor = False, None
        current = self.target
        step = np.clip(d, self.low, self.high) - current
        step = np.clip(step, self.step - self.max_step_change, self.step + self.max_step_change)
        step = np.clip(step, -self.max_step, self.max_step)
        # Box and lead band, each widened to contain the current command: clipping into an interval that holds
        # `current` can only shorten the step, so neither undoes the speed limit, and outside either the
        # command may stay or come back, never go further out.
        lo = np.maximum(np.minimum(self.low, current), np.minimum(m - self.max_lead, current))
        hi = np.minimum(np.maximum(self.high, current), np.maximum(m + self.max_lead, current))
        target = np.clip(current + step, lo, hi)
        self.step = target - current
        self.target = target
        return target.copy()


def limiter_for(cfg: RobotNodeConfig) -> TargetLimiter:
    """The limiter of a node's command mode: the workspace box in Cartesian mode, the joint limits in joint modes
    (each with its speed, acceleration and lead limits), at the node's control period."""
    s, dt = cfg.safety, 1.0 / float(cfg.control_hz)
    if cfg.command.mode == "cartesian_pose":
        return TargetLimiter(np.array(s.workspace_low), np.array(s.workspace_high), s.max_ee_speed, s.max_ee_accel,
                             dt, s.max_target_lead)
    return TargetLimiter(np.array(s.joint_lower), np.array(s.joint_upper), s.max_joint_speed, s.max_joint_accel,
                         dt, s.max_joint_lead)


class TargetInterpolator:
    """The safety node's desired position between policy targets: from where the command stream stood when a
    target arrived to that target, linearly over ``duration`` seconds (0 = the target at once). Plain numpy on
    a caller's clock, so the command path can be run against the twin's physics in a test."""

    def __init__(self, duration: float) -> None:
        if not (np.isfinite(duration) and duration >= 0):
            raise ValueError(f"interpolation duration must be finite and >= 0, got {duration}")
        self.duration = float(duration)
        self.start: np.ndarray | None = None   # where the previous segment stood when the newest target came
        self.goal: np.ndarray | None = None    # newest target; None = none (hold)
        self.arrived = 0.0                     # its arrival time (s, the caller's clock)

    def desired(self, now: float) -> np.ndarray | None:
        if self.goal is None or self.start is None:
            return None
        alpha = 1.0 if self.duration == 0 else min(1.0, max(0.0, (now - self.arrived) / self.duration))
        return self.start + alpha * (self.goal - self.start)

    def new_target(self, target: np.ndarray, now: float) -> None:
        """Continue from where the interpolation stands now: no jump when a target arrives early or late."""
        current = self.desired(now)
        self.start = np.array(target, np.float64) if current is None else current
        self.goal, self.arrived = np.array(target, np.float64), now

    def clear(self) -> None:
        """No target until the next one (watchdog, e-stop reset, a non-finite target)."""
        self.goal = None


def action_reach(limiter: TargetLimiter, interpolation_s: float, step: float, seconds: float) -> float:
    """Fraction of a move of ``step`` (one full action on one axis, from rest) that the command stream covers
    within ``seconds`` (one policy period) through ``limiter`` (at its own ``dt``) after ``interpolation_s``.
    Below ~0.9 the robot executes each action noticeably later and differently than the twin's env, where the
    controller's target takes the whole step at once."""
    low, high = limiter.low, limiter.high
    probe = TargetLimiter(low, high, limiter.max_step / limiter.dt, limiter.max_step_change / limiter.dt ** 2,
                          limiter.dt, limiter.max_lead)
    start = (low + high) / 2
    probe.reset(start)
    interp = TargetInterpolator(min(interpolation_s, seconds))
    interp.new_target(start + step, 0.0)
    t, command = 0.0, start
    for _ in range(int(round(seconds / limiter.dt))):
        t += limiter.dt
        desired = interp.desired(t)
        assert desired is not None
        command = probe(desired, desired)  # the robot follows exactly: only the command limits count here
    return float(np.min((command - start) / step))


def safety_limiter(cfg: RobotNodeConfig) -> TargetLimiter:
    """The actor's limits at the command period (``limiter_for`` uses the policy period)."""
    s, dt = cfg.safety, 1.0 / float(cfg.command_hz)
    if cfg.command.mode == "cartesian_pose":
        return TargetLimiter(np.array(s.workspace_low), np.array(s.workspace_high), s.max_ee_speed,
                             s.max_ee_accel, dt, s.max_target_lead)
    return TargetLimiter(np.array(s.joint_lower), np.array(s.joint_upper), s.max_joint_speed, s.max_joint_accel,
                         dt, s.max_joint_lead)


def check_action_reach(cfg: RobotNodeConfig, log: Callable[..., None]) -> float:
    """How much of one full action (``action_scale`` / ``joint_action_scale`` on an axis, from rest) the command
    stream executes within one policy period under ``cfg``'s limits (through the safety node's limiter when
    ``command.via_safety_node``, else the actor's own); ``log`` (a warning) below 0.9: then every action is
    executed later and slower than in the twin's env (demos, the learner's evaluation), a different policy."""
    cartesian = cfg.command.mode == "cartesian_pose"
    scale = cfg.command.action_scale if cartesian else cfg.command.joint_action_scale
    period = 1.0 / float(cfg.control_hz)
    if cfg.command.via_safety_node:
        reach = action_reach(safety_limiter(cfg), cfg.command.interpolation_s, scale, period)
    else:
        reach = action_reach(limiter_for(cfg), 0.0, scale, period)
    if reach < 0.9:
        s = cfg.safety
        log("the safety limits let a full action (%.3g per step) reach only %.0f%% of its move within one policy "
            "period (max speed %s, max accel %s, interpolation %s s): the robot executes actions later than the "
            "twin the policy learns from", scale, 100 * reach, s.max_ee_speed if cartesian else s.max_joint_speed,
            s.max_ee_accel if cartesian else s.max_joint_accel, cfg.command.interpolation_s)
    return reach


@dataclass
class Guard:
    """Why the robot must hold right now, if it must. Thread-safe: ROS callbacks and the control loop share it.

    The e-stop latches on the first ``True`` input and stays latched until :meth:`reset_estop` (a person's
    explicit act), which is refused while the input still reads ``True``; a ``False`` input alone never
    releases it."""

    watchdog_timeout_s: float
    """No action for this long -> hold."""
    clock: Callable[[], float] = time.monotonic
    estopped: bool = False
    """The latch: the robot holds while it is set."""
    estop_input: bool = False
    """The newest value of the e-stop input (True = pressed)."""
    estopped_since: float | None = None
    last_action_t: float | None = None
    counts: dict[str, int] = field(default_factory=lambda: {"estop": 0, "estop_reset": 0, "stale": 0,
                                                             "watchdog": 0, "non_finite": 0, "bad_sensor": 0,
                                                             "callback_error": 0})
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def set_estop(self, active: bool) -> bool:
        """Record the e-stop input; True latches the hold. Returns whether this call latched it."""
        with self._lock:
            self.estop_input = bool(active)
            if active and not self.estopped:
                self.counts["estop"] += 1
                self.estopped, self.estopped_since = True, self.clock()
                return True
            return False

    def reset_estop(self) -> tuple[bool, str]:
        """Release the latch (``(True, why)``), or refuse while the input is still pressed (``(False, why)``)."""
        with self._lock:
            if not self.estopped:
                return True, "e-stop was not latched"
            if self.estop_input:
                return False, "e-stop input still active (True): release it first, then reset"
            now = self.clock()
            held = now - (self.estopped_since if self.estopped_since is not None else now)
            self.estopped, self.estopped_since = False, None
            self.counts["estop_reset"] += 1
            self.last_action_t = None  # the watchdog restarts with the next action
            return True, f"e-stop released after {held:.1f} s"

    def reflect_estop(self, latched: bool) -> bool:
        """Mirror a latch owned by another process (``robot_rl_safety_node``'s, published on
        ``topics.estop_latched``): no latch logic and no reset here. Returns whether the state changed."""
        with self._lock:
            latched = bool(latched)
            if latched == self.estopped:
                return False
            self.estopped = latched
            if latched:
                self.counts["estop"] += 1
                self.estopped_since = self.clock()
            else:
                self.estopped_since, self.last_action_t = None, None
                self.counts["estop_reset"] += 1
            return True

    def count(self, what: str) -> None:
        with self._lock:
            self.counts[what] = self.counts.get(what, 0) + 1

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


class RateLimitedLog:
    """At most one message per ``interval_s`` per key, with the number suppressed since the last one."""

    def __init__(self, emit: Callable[[str], None], interval_s: float = 1.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.emit, self.interval_s, self.clock = emit, interval_s, clock
        self._last: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}
        self._lock = threading.Lock()

    def __call__(self, key: str, text: str) -> bool:
        now = self.clock()
        with self._lock:
            last = self._last.get(key)
            if last is not None and now - last < self.interval_s:
                self._suppressed[key] = self._suppressed.get(key, 0) + 1
                return False
            self._last[key] = now
            suppressed = self._suppressed.pop(key, 0)
        self.emit(text + (f" ({suppressed} similar suppressed)" if suppressed else ""))
        return True
