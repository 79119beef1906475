"""The real-time setup of the command and policy loops (hardware/ros2/realtime.py): the deadline schedule and the
hybrid wait as arithmetic (no timing asserted), and the setup itself in a child process, once without the
privilege (it must fall back with exactly one warning and still run the loop) and once with it where the tests
run as root. The child processes keep SCHED_FIFO and the frozen gc out of the test process."""
from __future__ import annotations

import ctypes
import json
import os
import resource
import subprocess
import sys
import textwrap

import pytest

from robot_rl.hardware.ros2.config import RobotNodeConfig, from_params
from robot_rl.hardware.ros2.realtime import (ArrivalRate, DeadlineSchedule, GcPacer, PhaseLock, RealtimeConfig,
                                             phase_correction, spin_window, wait_until)


def test_deadlines_stay_on_the_grid_however_long_each_tick_takes() -> None:
    schedule = DeadlineSchedule(0.01, start=100.0)
    deadlines = [schedule.deadline]
    for k in range(1, 50):
        # each tick ends somewhere inside its period (up to 9.9 ms late): the next deadline does not move
        deadlines.append(schedule.advance(now=deadlines[-1] + 0.0099 * (k % 3) / 2))
    assert deadlines == pytest.approx([100.0 + 0.01 * k for k in range(50)], abs=1e-9)
    assert schedule.missed == 0


def test_an_overrun_skips_the_missed_deadlines_instead_of_bursting() -> None:
    schedule = DeadlineSchedule(1.0, start=0.0)
    assert schedule.advance(now=0.2) == 1.0
    # the tick that began at 1.0 ran until 3.5: deadlines 2 and 3 are gone, the next one is 4 (same phase)
    assert schedule.advance(now=3.5) == 4.0
    assert schedule.missed == 2
    assert schedule.advance(now=6.0) == 6.0  # ending exactly on a later deadline: that one runs at once
    assert schedule.missed == 3
    with pytest.raises(ValueError):
        DeadlineSchedule(0.0, start=0.0)


class FakeClock:
    def __init__(self, t: float, step: float) -> None:
        self.t, self.step, self.sleeps = t, step, []

    def __call__(self) -> float:
        self.t += self.step  # every reading costs `step` seconds: a spin advances the clock
        return self.t

    def sleep(self, s: float) -> None:
        self.sleeps.append(s)
        self.t += s


def test_hybrid_wait_sleeps_to_the_spin_window_then_spins_to_the_deadline() -> None:
    clock = FakeClock(0.0, 1e-6)
    wait_until(0.010, 0.0008, clock, clock.sleep)
    assert clock.sleeps == [pytest.approx(0.010 - 0.0008 - 1e-6)]
    assert 0.010 <= clock.t < 0.010 + 2e-6  # spun to the deadline, not past it by more than one reading
    clock = FakeClock(0.0, 1e-6)
    wait_until(0.0005, 0.0008, clock, clock.sleep)  # already inside the window: spin only
    assert clock.sleeps == [] and 0.0005 <= clock.t < 0.0005 + 2e-6
    clock = FakeClock(1.0, 1e-6)
    wait_until(0.5, 0.0008, clock, clock.sleep)  # a deadline in the past returns at once
    assert clock.sleeps == [] and clock.t < 1.0 + 3e-6


def test_phase_correction_takes_the_short_way_round_and_is_bounded() -> None:
    cam = 1 / 30
    assert phase_correction(0.010, 0.003, cam) == pytest.approx(-0.001)   # frame 10 ms old: tick earlier (capped)
    assert phase_correction(0.004, 0.003, cam) == pytest.approx(-0.0003)  # 1 ms off: 30 % of it
    assert phase_correction(0.003, 0.003, cam) == 0.0
    # a frame that came just after the tick shows up one camera period old: move later, not 30 ms earlier
    assert phase_correction(cam - 0.001, 0.003, cam) == pytest.approx(0.001)


def test_phase_lock_locks_later_only_then_tracks_a_drifting_event() -> None:
    """Events (frames) every 100 ms arrive with a phase that drifts by 0.1 ms per period; the schedule locks at
    once (moving later), then follows the drift with small steps, so each tick comes `margin` after its event."""
    period, margin = 0.1, 0.003
    schedule = DeadlineSchedule(period, start=0.0)
    lock = PhaseLock(schedule, margin, max_step=0.001)
    event_t, shifts = 0.0437, []
    for k in range(200):
        tick = schedule.deadline
        newest = event_t if event_t <= tick else event_t - period  # the newest event at or before the tick
        shifts.append(lock.event(tick - newest, period))
        schedule.advance(tick)
        event_t += period + 0.0001
    assert 0 < shifts[0] < period and lock.relocks == 1  # the first lock only ever lengthens a period
    assert max(abs(x) for x in shifts[1:]) <= 0.001 + 1e-12
    tick = schedule.deadline
    newest = event_t if event_t <= tick else event_t - period
    assert abs(tick - newest - margin) < 0.001  # locked: ~margin after the newest event
    # the event's phase jumps (a camera restarted): five ticks off by more than a quarter period re-lock later
    for _ in range(6):
        tick = schedule.deadline
        lock.event(tick - (tick - 0.05), period)
        schedule.advance(tick)
    assert lock.relocks == 2


def test_arrival_rate_measures_the_period_and_ignores_gaps() -> None:
    rate = ArrivalRate()
    t = 0.0
    for k in range(30):
        rate.arrived(t)
        t += 1 / 30 + (0.002 if k % 2 else -0.002)
    assert rate.period == pytest.approx(1 / 30, abs=0.002)
    rate.arrived(t + 5.0)  # a stopped camera: the gap is not an interval
    assert rate.period == pytest.approx(1 / 30, abs=0.002)
    assert ArrivalRate().period is None


def test_arrival_rate_is_right_from_its_tenth_interval_after_a_slow_start() -> None:
    """Regression: a running mean seeded with a camera's slow first interval (start-up) stayed more than 5% off
    for about a second, so camera sync did not lock and the first ticks acted on frames a camera period old."""
    rate = ArrivalRate()
    t = 0.0
    for dt in [0.2, 0.001, *[1 / 30] * 9]:  # a slow first frame, then a burst, then the steady rate
        rate.arrived(t)
        t += dt
    rate.arrived(t)
    assert rate.period == pytest.approx(1 / 30, rel=0.01)


def test_the_spin_never_takes_more_than_a_quarter_of_the_period() -> None:
    cfg = RealtimeConfig(spin_s=0.0008)
    assert spin_window(cfg, 0.01) == pytest.approx(0.0008)        # 100 Hz
    assert spin_window(cfg, 0.001) == pytest.approx(0.00025)      # 1 kHz: capped
    assert spin_window(RealtimeConfig(enabled=False), 0.01) == 0.0


def test_gc_pacer_collects_young_generations_often_and_everything_rarely() -> None:
    now = [0.0]
    pacer = GcPacer(True, every_s=1.0, clock=lambda: now[0], full_every_s=10.0)
    counts = []
    for _ in range(200):  # 20 s of 10 Hz ticks
        now[0] += 0.1
        pacer.after_tick()
        counts.append(pacer.collections)
    assert 19 <= pacer.collections <= 21  # about once a second (the full collection replaces one young one)
    idle = GcPacer(False, every_s=1.0, clock=lambda: now[0])
    now[0] += 100.0
    idle.after_tick()
    assert idle.collections == 0


def test_policy_loop_keeps_its_own_defaults_below_the_command_loop() -> None:
    cfg = from_params(RobotNodeConfig, {"policy_realtime.cpus": [0]})
    assert cfg.policy_realtime.priority < cfg.safety_realtime.priority
    assert cfg.policy_realtime.cpus == (0,) and not cfg.policy_realtime.lock_memory
    with pytest.raises(ValueError, match="priority"):
        from_params(RobotNodeConfig, {"safety_realtime.priority": 120})


CHILD = textwrap.dedent("""
    import gc, json, logging, os, sys, threading, time
    records = []
    class Keep(logging.Handler):
        def emit(self, record): records.append((record.levelname, record.getMessage()))
    logging.getLogger("robot_rl.ros2.realtime").addHandler(Keep())
    logging.getLogger("robot_rl.ros2.realtime").setLevel(logging.INFO)
    from robot_rl.hardware.ros2.realtime import (RealtimeConfig, DeadlineSchedule, enter_executor_realtime,
                                                 enter_realtime, promote_helper_threads, wait_until)
    cfg = RealtimeConfig(priority=10, executor_priority=9, cpu_dma_latency_us=0)
    executor = enter_executor_realtime(cfg, "test executor")  # a node's two threads: one warning between them
    status = enter_realtime(cfg, "test loop")
    release = threading.Event()
    helper = threading.Thread(target=release.wait)  # started after both: normal (RESET_ON_FORK), as a transport's
    helper.start()
    promoted = promote_helper_threads(cfg, "test helpers")
    helper_sched = [os.sched_getscheduler(helper.native_id) & ~os.SCHED_RESET_ON_FORK,
                    os.sched_getparam(helper.native_id).sched_priority]
    release.set()
    helper.join()
    schedule = DeadlineSchedule(0.002, time.monotonic())
    for _ in range(20):  # the loop still runs, whatever was refused
        wait_until(schedule.deadline, 0.0005)
        schedule.advance(time.monotonic())
    dma = None  # the system's PM QoS target now (the strictest request held), where readable
    if status.cpu_dma_latency_us >= 0:
        import struct
        with open("/dev/cpu_dma_latency", "rb") as f:
            dma = struct.unpack("i", f.read(4))[0]
    print(json.dumps({"active": status.active, "policy": os.sched_getscheduler(0), "refused": status.refused,
                      "dma_held": status.cpu_dma_latency_us, "dma_now": dma,
                      "locked": status.memory_locked, "gc_enabled": gc.isenabled(), "records": records,
                      "ticks": schedule.k, "executor": executor, "promoted": promoted, "helper": helper_sched}))
""")


def _drop_realtime_privilege() -> None:
    """In the child before exec: no CAP_SYS_NICE / CAP_IPC_LOCK after exec (dropped from the bounding set, which
    bounds even root's capabilities) and no rtprio / memlock allowance: an ordinary user's process."""
    if os.geteuid() == 0:
        libc = ctypes.CDLL(None, use_errno=True)
        for cap in (23, 14):  # CAP_SYS_NICE, CAP_IPC_LOCK
            if libc.prctl(24, cap, 0, 0, 0) != 0:  # PR_CAPBSET_DROP
                raise OSError(ctypes.get_errno(), "PR_CAPBSET_DROP")
    resource.setrlimit(resource.RLIMIT_RTPRIO, (0, 0))
    resource.setrlimit(resource.RLIMIT_MEMLOCK, (64 * 1024, 64 * 1024))


def _run_child(preexec=None) -> dict:
    out = subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True, timeout=120,
                         preexec_fn=preexec)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_without_the_privilege_the_loop_falls_back_with_one_warning() -> None:
    result = _run_child(_drop_realtime_privilege)
    assert not result["active"] and result["policy"] == os.SCHED_OTHER
    assert any(r.startswith("SCHED_FIFO 10") for r in result["refused"])
    assert any(r.startswith("mlockall") for r in result["refused"]) and not result["locked"]
    warnings = [m for level, m in result["records"] if level == "WARNING"]
    assert len(warnings) == 1, result["records"]
    assert "WITHOUT real-time priority" in warnings[0] and "CAP_SYS_NICE" in warnings[0]
    assert not result["executor"]
    assert result["promoted"] == 0 and result["helper"] == [os.SCHED_OTHER, 0]  # and no second warning (above)
    loop_info = [m for level, m in result["records"] if level == "INFO" and m.startswith("test loop")]
    assert loop_info and "normal scheduling" in loop_info[0] and "mlockall" in loop_info[0]
    assert not result["gc_enabled"]  # the gc part needs no privilege
    # /dev/cpu_dma_latency is root-only by file mode, which a root process without those capabilities still owns
    assert result["dma_held"] == 0 or any(r.startswith("/dev/cpu_dma_latency") for r in result["refused"])
    assert result["ticks"] >= 20  # (more when a late tick skipped deadlines)


@pytest.mark.skipif(os.geteuid() != 0, reason="SCHED_FIFO needs root or CAP_SYS_NICE; the fallback test runs anyway")
def test_with_the_privilege_the_loop_runs_sched_fifo_with_memory_locked() -> None:
    result = _run_child()
    assert result["active"] and result["policy"] == os.SCHED_FIFO | os.SCHED_RESET_ON_FORK
    assert result["locked"] and result["refused"] == [] and result["executor"]
    assert result["dma_held"] == 0 and result["dma_now"] == 0  # the CPUs' PM QoS target while the loop runs
    # a helper thread started later (the actor's transport) runs at the executor's priority, below the loop
    assert result["promoted"] >= 1 and result["helper"] == [os.SCHED_FIFO, 9]
    assert [level for level, _ in result["records"]] == ["INFO", "INFO", "INFO"]


def test_the_cpu_dma_latency_request_is_written_and_held_open(tmp_path, monkeypatch) -> None:
    """The PM QoS request is an int32 written to the device, and lasts while its file descriptor stays open; a
    refusal is reported with the rest of what the OS refused, never raised."""
    import struct

    from robot_rl.hardware.ros2 import realtime
    from robot_rl.hardware.ros2.realtime import RealtimeConfig, enter_realtime, hold_cpu_dma_latency

    device = tmp_path / "cpu_dma_latency"
    device.write_bytes(b"")
    held = len(realtime._PM_QOS_FDS)
    hold_cpu_dma_latency(0, str(device))
    try:
        assert struct.unpack("i", device.read_bytes()) == (0,)
        fd = realtime._PM_QOS_FDS[-1]
        assert len(realtime._PM_QOS_FDS) == held + 1 and os.fstat(fd).st_ino == device.stat().st_ino
    finally:
        os.close(realtime._PM_QOS_FDS.pop())
    with pytest.raises(OSError):
        hold_cpu_dma_latency(0, str(tmp_path / "missing" / "cpu_dma_latency"))
    assert len(realtime._PM_QOS_FDS) == held

    def refuse(us: int) -> None:
        raise PermissionError(13, "Permission denied")
    monkeypatch.setattr(realtime, "hold_cpu_dma_latency", refuse)
    monkeypatch.setattr(realtime, "_WARNED", ["already warned"])  # INFO, not a second warning in this process
    # the rest of the setup is off so that this pytest process stays an ordinary one
    status = enter_realtime(RealtimeConfig(priority=10, lock_memory=False, freeze_gc=False, gil_switch_s=0.0,
                                           cpu_dma_latency_us=0), "test loop")
    try:
        assert status.cpu_dma_latency_us == -1
        assert any(r.startswith("/dev/cpu_dma_latency 0 us") for r in status.refused)
        assert status.stats("rt")["rt/cpu_dma_latency_us"] == -1.0
    finally:
        os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))
