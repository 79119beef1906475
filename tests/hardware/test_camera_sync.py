"""``CameraSync`` (the actor's policy tick following the camera's frames) on a simulated clock: no ROS, no timing."""
from __future__ import annotations

import pytest

from robot_rl.hardware.ros2.camera_sync import CameraSync
from robot_rl.hardware.ros2.realtime import DeadlineSchedule
from robot_rl.hardware.ros2.sensors import SensorCache


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _frames(sync: CameraSync, cache: SensorCache, clock: Clock, first: float, period: float, n: int) -> float:
    """``n`` frames of the synced camera at ``first + k * period``; returns the last arrival time."""
    for k in range(n):
        clock.now = first + k * period
        cache.put("images/front", k, clock.now)
        sync.frame_arrived("front")
    return clock.now


def test_align_moves_ticks_to_margin_after_the_frames() -> None:
    clock, period, cam_period, margin = Clock(), 0.1, 1 / 30, 0.002
    cache = SensorCache(["images/front"], clock, clock)
    sync = CameraSync(True, ["front", "wrist"], period, margin, 0.01, clock)
    last = _frames(sync, cache, clock, 100.0, cam_period, 12)  # the rate is known after 10 intervals
    assert sync.frame_interval.period == pytest.approx(cam_period, rel=1e-6)
    schedule = DeadlineSchedule(period, last + 0.017)  # ticks 17 ms after a frame: 15 ms of frame age wasted
    sync.restart(schedule)
    sync.align(schedule.deadline, cache)
    lag = schedule.deadline - last  # the first event locks at once, moving the schedule later (never shorter)
    assert lag % cam_period == pytest.approx(margin, abs=1e-9)
    assert sync.lock is not None and sync.lock.locked


def test_no_lock_when_the_camera_rate_is_not_a_multiple_of_control_hz() -> None:
    clock = Clock()
    cache = SensorCache(["images/front"], clock, clock)
    sync = CameraSync(True, ["front"], 0.1, 0.002, 0.01, clock)
    last = _frames(sync, cache, clock, 100.0, 1 / 25.5, 12)  # 2.55 frames per tick
    schedule = DeadlineSchedule(0.1, last + 0.017)
    sync.restart(schedule)
    before = schedule.deadline
    sync.align(before, cache)
    assert schedule.deadline == before and not sync.lock.locked


def test_disabled_or_unmeasured_does_nothing() -> None:
    clock = Clock()
    cache = SensorCache(["images/front"], clock, clock)
    for sync in (CameraSync(False, ["front"], 0.1, 0.002, 0.01, clock), CameraSync(True, ["front"], 0.1, 0.002,
                                                                                      0.01, clock)):
        if sync.enabled:
            _frames(sync, cache, clock, 100.0, 1 / 30, 3)  # too few intervals: period unknown
        else:
            _frames(sync, cache, clock, 100.0, 1 / 30, 12)
        schedule = DeadlineSchedule(0.1, clock.now + 0.017)
        sync.restart(schedule)
        before = schedule.deadline
        sync.align(before, cache)
        sync.wait_for_late_frame(cache)  # returns at once: nothing to wait for
        assert schedule.deadline == before


def test_an_episode_starts_on_a_fresh_frame() -> None:
    """Reset waits for the synced camera's next frame and the margin, so the first observation is not up to a
    camera period old (it was the benchmark's frame-age tail: 17-28 ms at the first tick)."""
    clock, cam_period, margin = Clock(), 1 / 30, 0.002
    cache = SensorCache(["images/front"], clock, clock)
    frames = [100.0 + k * cam_period for k in range(40)]

    def sleep(dt: float) -> None:  # time passes; frames arrive when due
        clock.now += dt
        while frames and frames[0] <= clock.now:
            cache.put("images/front", 0, frames.pop(0))
            sync.frame_arrived("front")

    sync = CameraSync(True, ["front"], 0.1, margin, 0.004, clock, sleep)
    while clock.now < 100.0 + 12 * cam_period + 0.010:  # the rate is known; the newest frame is 10 ms old
        sleep(0.001)
    newest = cache.snapshot()[0]["images/front"].received
    assert sync.wait_for_next_frame(cache)
    first_obs = clock.now
    assert first_obs - cache.snapshot()[0]["images/front"].received == pytest.approx(margin, abs=0.0003)
    assert cache.snapshot()[0]["images/front"].received == pytest.approx(newest + cam_period)
    frames.clear()  # the camera stops: the wait gives up after two camera periods
    start = clock.now
    assert not sync.wait_for_next_frame(cache)
    assert clock.now - start == pytest.approx(2 * sync.frame_interval.period, abs=0.0005)


@pytest.mark.parametrize("reset_ends_after_frames", [0.2, 1.2, 2.2])
def test_a_new_episode_keeps_the_policy_phase_of_the_last_one(reset_ends_after_frames: float) -> None:
    """With 3 frames per control period the reset waits for the frame on the previous episode's tick grid, not
    for whichever frame comes first: the actor's targets keep their phase, so the safety node's command slot
    does not relock at every episode start (358 relocks in 216 episodes before)."""
    clock, cam_period, margin, period = Clock(), 1 / 30, 0.002, 0.1
    cache = SensorCache(["images/front"], clock, clock)
    frames = [100.0 + k * cam_period for k in range(400)]

    def sleep(dt: float) -> None:  # frames arrive exactly when due (the camera period is measured exactly)
        end = clock.now + dt
        while frames and frames[0] <= end:
            clock.now = max(clock.now, frames.pop(0))
            cache.put("images/front", 0, clock.now)
            sync.frame_arrived("front")
        clock.now = end

    sync = CameraSync(True, ["front"], period, margin, 0.004, clock, sleep)
    while clock.now < 100.0 + 12 * cam_period + 0.001:
        sleep(0.001)
    # an episode whose ticks came on frames 12, 15, 18, ... (+ margin)
    schedule = DeadlineSchedule(period, clock.now)
    sync.restart(schedule)
    grid = 100.0 + 12 * cam_period + margin
    for k in range(20):
        tick = grid + k * period
        sleep(tick - clock.now)
        sync.align(tick, cache)
    # the reset (moving home) ends at a phase unrelated to the grid
    sleep(2.0 + reset_ends_after_frames * cam_period - (clock.now - (grid + 19 * period)))
    start = clock.now
    assert sync.wait_for_next_frame(cache)
    first_obs = clock.now
    assert abs((first_obs - grid + period / 2) % period - period / 2) < 0.0005  # on the old grid
    assert first_obs - start <= 3 * cam_period + margin + 0.001  # at most one control period of waiting
    assert first_obs - cache.snapshot()[0]["images/front"].received == pytest.approx(margin, abs=0.0003)
    assert first_obs - cache.snapshot()[0]["images/front"].received == pytest.approx(margin, abs=0.0003)


def test_the_episode_schedule_starts_on_the_frame_tick_not_when_the_observation_was_read() -> None:
    """``RobotEnv.reset`` starts the schedule on the tick ``wait_for_next_frame`` returns. Reading the observation
    takes a few ms past the margin; aligning that later time to the frames moved the ticks onto the next camera
    frame, one camera period later at every episode start (what made the safety node relock)."""
    clock, cam_period, margin, period = Clock(), 1 / 30, 0.002, 0.1
    cache = SensorCache(["images/front"], clock, clock)
    sync = CameraSync(True, ["front"], period, margin, 0.004, clock)
    last = _frames(sync, cache, clock, 100.0, cam_period, 12)
    tick = last + margin  # what wait_for_next_frame returns for the last frame
    clock.now = tick + 0.004  # the observation was read 4 ms later
    for start, moved in ((tick, False), (clock.now, True)):
        schedule = DeadlineSchedule(period, start)
        sync.restart(schedule)
        sync.align(start, cache)
        schedule.advance(clock.now)
        next_tick_after_frame = (schedule.deadline - last) % cam_period
        if moved:  # the old way: the ticks jump to margin after the NEXT frame
            assert schedule.deadline == pytest.approx(clock.now + period + cam_period - 0.004, abs=1e-6)
        else:
            assert schedule.deadline == pytest.approx(tick + period, abs=1e-9)
        assert next_tick_after_frame == pytest.approx(margin, abs=1e-6)
