"""What an actor tells the learner about itself for the dashboard's fleet table (:class:`ActorStatus`).

:class:`StatusReporter` is fed by the actor loop (steps with their intervention flags, finished episodes, holds)
and hands a fresh :class:`~robot_rl.transport.wire.ActorStatus` to the transport every ``period_s``; the
transport sends it with its next heartbeat. Everything here is O(1) per step: the control loop pays nothing
measurable for it.
"""
from __future__ import annotations

import collections
import time
from typing import Any, Sequence

from robot_rl.transport.base import ActorTransport
from robot_rl.transport.wire import ActorStatus


class StatusReporter:
    def __init__(self, transport: ActorTransport, hil_name: str, period_s: float = 0.5, window: int = 20) -> None:
        self.transport, self.hil_name, self.period_s = transport, hil_name, period_s
        self.paused = False
        """Set by the actor while the dashboard holds it paused."""
        self.operator_s = 0.0
        self._episodes: collections.deque[tuple[int, int, bool]] = collections.deque(maxlen=window)
        # (intervened steps, steps, success) of the last ``window`` episodes
        self._current = [0, 0]  # intervened steps, steps of the episodes in progress (all envs)
        self._rate_mark = (time.monotonic(), 0)  # (time, steps) at the last report: steps/s between reports
        self._next_report = 0.0
        self._steps = 0
        self._episode_count = 0
        self._last_step_time: float | None = None
        self.safety_event, self.safety_event_at = "", 0.0
        self._env_holds: dict[str, int] = {}

    def step(self, intervened: Sequence[bool]) -> None:
        """One loop iteration stepped ``len(intervened)`` envs; wall time counts as the operator's while any of
        them was driven by the operator."""
        now = time.monotonic()
        if any(intervened) and self._last_step_time is not None:
            self.operator_s += now - self._last_step_time
        self._last_step_time = now
        self._steps += len(intervened)
        self._current[0] += sum(bool(x) for x in intervened)
        self._current[1] += len(intervened)

    def episode(self, intervention_steps: int, steps: int, success: bool) -> None:
        self._episode_count += 1
        self._episodes.append((intervention_steps, steps, success))
        self._current[0] = max(0, self._current[0] - intervention_steps)
        self._current[1] = max(0, self._current[1] - steps)

    def hold(self, reason: str) -> None:
        """The robot was held this iteration (device lost or silent, operator paused): a safety event."""
        self._last_step_time = None  # time on hold is nobody's driving
        self.safety(f"hold: {reason}" if reason else "hold")

    def safety(self, event: str) -> None:
        if event != self.safety_event:
            self.safety_event, self.safety_event_at = event, time.time()

    def idle(self) -> None:
        """Nothing stepped (paused): the next step does not count the pause as operator time."""
        self._last_step_time = None

    def _watch_env_holds(self, envs: Sequence[Any]) -> None:
        """Real robot envs count their holds by reason (``estop``, ``watchdog``, ``stale``): report new ones."""
        for env in envs:
            for reason, count in dict(getattr(env, "holds", None) or {}).items():
                if count > self._env_holds.get(reason, 0):
                    self.safety(str(reason))
                self._env_holds[reason] = max(count, self._env_holds.get(reason, 0))

    def maybe_report(self, envs: Sequence[Any], weights_version: int) -> None:
        now = time.monotonic()
        if now < self._next_report:
            return
        self._next_report = now + self.period_s
        self._watch_env_holds(envs)
        t0, s0 = self._rate_mark
        rate = (self._steps - s0) / max(now - t0, 1e-6)
        self._rate_mark = (now, self._steps)
        iv = sum(e[0] for e in self._episodes) + self._current[0]
        n = sum(e[1] for e in self._episodes) + self._current[1]
        stats = self.transport.stats()
        self.transport.report_status(ActorStatus(
            steps=self._steps, steps_per_s=float(rate), episodes=self._episode_count,
            success_rate=sum(e[2] for e in self._episodes) / len(self._episodes) if self._episodes else 0.0,
            intervention_rate=iv / n if n else 0.0, operator_s=float(self.operator_s),
            pending_bytes=int(stats.get("pending_bytes", 0)), spilled=int(stats.get("spilled", 0)),
            weights_version=int(weights_version), paused=self.paused, hil=self.hil_name,
            safety_event=self.safety_event, safety_event_at=float(self.safety_event_at)))
