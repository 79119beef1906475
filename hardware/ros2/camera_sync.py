"""``camera_sync``: the actor's policy tick follows the cameras' frames.

The observation is taken ``camera_sync_margin_s`` after the synced (first) camera's frame arrives, so a frame
waits at most that margin for the policy instead of up to a whole camera period. :class:`CameraSync` measures
the frame period (:class:`ArrivalRate`), locks the control schedule's phase to the frames (:class:`PhaseLock`)
and, at a tick where a camera's newest frame is late, waits a bounded time for it.
"""
from __future__ import annotations

import math
import time
from typing import Callable

from robot_rl.hardware.ros2.realtime import ArrivalRate, DeadlineSchedule, PhaseLock, wait_until
from robot_rl.hardware.ros2.sensors import SensorCache


class CameraSync:
    """Phase lock of a control schedule (period ``control_period`` s) to the frames of ``cameras[0]``."""

    def __init__(self, enabled: bool, cameras: list[str], control_period: float, margin_s: float, wait_s: float,
                 clock: Callable[[], float], sleep: Callable[[float], None] = time.sleep) -> None:
        self.enabled, self.control_period, self.margin_s, self.wait_s = enabled, control_period, margin_s, wait_s
        self.clock, self.sleep = clock, sleep
        self.keys = [f"images/{c}" for c in cameras]
        self.sync_camera = cameras[0] if cameras else None
        self.frame_interval = ArrivalRate()  # the synced camera's frame period, measured
        self.lock: PhaseLock | None = None
        self._last_tick: float | None = None  # deadline of the last tick aligned to the frames (the phase kept)

    def frame_arrived(self, camera: str) -> None:
        """From the image callback: one frame of ``camera`` arrived now."""
        if camera == self.sync_camera:
            self.frame_interval.arrived(self.clock())

    def restart(self, schedule: DeadlineSchedule) -> None:
        """A new episode's schedule: lock to it afresh (the first frame event locks at once)."""
        self.lock = PhaseLock(schedule, self.margin_s, max_step=0.001)

    def wait_for_late_frame(self, cache: SensorCache) -> None:
        """At a tick where a camera's frame has not come yet (its newest is more than half a camera period old:
        the synced camera's, or another camera's that arrives a little after it), wait for it up to
        ``camera_sync_wait_s``."""
        cam_period = self.frame_interval.period
        if not self.enabled or cam_period is None or self.lock is None or not self.lock.locked:
            return
        give_up = self.clock() + self.wait_s
        while self.clock() < give_up:
            latest, now = cache.snapshot()[0], self.clock()
            if all(k not in latest or now - latest[k].received < cam_period / 2 for k in self.keys):
                return
            self.sleep(0.0002)

    def _frames_per_tick(self, cam_period: float) -> int:
        """Camera frames per control period at the measured ``cam_period``, 0 when the camera rate is not a
        multiple of ``control_hz`` (no phase to lock to)."""
        frames = self.control_period / cam_period
        return round(frames) if round(frames) >= 1 and abs(frames - round(frames)) <= 0.05 else 0

    def wait_for_next_frame(self, cache: SensorCache) -> float | None:
        """At an episode's start (before its first observation): wait for the synced camera's next frame on the
        policy's phase, then ``camera_sync_margin_s``. Returns the tick it waited for (that frame's arrival +
        margin: start the episode's schedule there), None when no such frame came.

        On the policy's phase: with ``k`` camera frames per control period, the frame whose tick (its arrival +
        margin) falls on the grid of the previous episode's ticks, so the policy keeps its phase from episode
        to episode (a wait of at most ``k`` camera periods). Restarting on whichever frame came first can move
        the actor's targets by one or two camera periods at a reset, and each such move makes the safety
        node's command slot relock, with the first target of the new phase waiting up to a command period
        (``RosRobotEnv.reset`` starts the schedule on the returned tick for the same reason). Before the first
        episode (no grid yet) or without a lockable camera rate, the next frame. Gives up after ``k + 1``
        camera periods (two without a grid)."""
        cam_period = self.frame_interval.period
        if not self.enabled or cam_period is None or self.sync_camera is None:
            return None
        frames = self._frames_per_tick(cam_period)
        grid = self._last_tick if frames else None
        key = f"images/{self.sync_camera}"
        seen = cache.snapshot()[0].get(key)
        give_up = self.clock() + ((frames + 1) if grid is not None else 2) * cam_period
        while self.clock() < give_up:
            sample = cache.snapshot()[0].get(key)
            if sample is not None and (seen is None or sample.received > seen.received):
                seen = sample
                tick = sample.received + self.margin_s
                if grid is None or abs(math.remainder(tick - grid, self.control_period)) < cam_period / 2:
                    wait_until(tick, 0.0, self.clock, self.sleep)
                    return tick
            self.sleep(0.0002)
        return None

    def align(self, tick: float, cache: SensorCache) -> None:
        """Move the control schedule so that its ticks come ``camera_sync_margin_s`` after the synced camera's
        frames arrive (at most 1 ms per tick once locked); ``tick`` is the deadline of the tick just taken."""
        cam_period = self.frame_interval.period
        if not self.enabled or cam_period is None or self.lock is None:
            return
        if not self._frames_per_tick(cam_period):
            return  # the camera rate is not a multiple of control_hz: no phase to lock to
        sample = cache.snapshot()[0].get(f"images/{self.sync_camera}")
        if sample is not None:
            self.lock.event(tick - sample.received, cam_period)
            self._last_tick = tick
