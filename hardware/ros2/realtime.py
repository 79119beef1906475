"""Real-time setup of a control loop, the way ros2_control's controller manager does it on a robot PC.

A loop thread calls :func:`enter_realtime` once, from itself (Linux schedules threads, so the policy applies to
the calling thread alone: not to the rest of the process, and, with ``SCHED_RESET_ON_FORK``, not to threads or
processes it starts later). It asks for:

- ``SCHED_FIFO`` at ``priority`` (``os.sched_setscheduler``): the loop preempts every normal (CFS) task the moment
  its deadline comes, whatever the load. The kernel's RT throttling (``/proc/sys/kernel/sched_rt_runtime_us``,
  950 ms of every 1 s by default) keeps 5 % of each CPU for normal tasks even if an RT thread never sleeps; our
  loops also spin at most ``spin_s`` per period (:func:`wait_until`), so they never come near it;
- optionally a CPU set (``os.sched_setaffinity``);
- ``mlockall(MCL_CURRENT | MCL_FUTURE)`` through libc (ctypes): no page of the process is swapped out, so the
  loop never waits on a major page fault;
- ``gc.freeze()`` (everything allocated during setup leaves the collector's view) and automatic collection off:
  a collection triggered by any thread of the process would stop the loop for as long as it runs (the GIL).
  :class:`GcPacer` collects at a point of the loop's choosing instead, right after a tick, when the most slack
  is left before the next deadline.

Without the privilege (not root, no ``CAP_SYS_NICE`` / ``CAP_IPC_LOCK``, no ``rtprio`` limit in
``/etc/security/limits.conf``) the loop runs at normal priority, with ONE warning naming what was refused and how
to grant it; :class:`RealtimeStatus` says what is active, and the nodes log it and report it in their stats.
The deadline schedule (:class:`DeadlineSchedule`) is pure arithmetic: absolute deadlines on a fixed grid, so the
loop never drifts, and a late tick skips the missed deadlines instead of bursting to catch up.
"""
from __future__ import annotations

import ctypes
import gc
import logging
import math
import os
import statistics
import sys
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Callable

from robot_rl.config import ConfigNode

log = logging.getLogger("robot_rl.ros2.realtime")
_MCL_CURRENT, _MCL_FUTURE = 1, 2  # <sys/mman.h>


@dataclass
class RealtimeConfig(ConfigNode):
    """Real-time setup of one loop thread (``safety_realtime``: the command loop; ``policy_realtime``: the
    actor's policy loop). Every part is best effort: what the OS refuses is named in one warning."""

    enabled: bool = True
    """Try the real-time setup below (and fall back to normal scheduling, with one warning, if not permitted).
    False: a plain thread, no warning."""
    priority: int = 50
    """``SCHED_FIFO`` priority, 1-99 (ros2_control's controller manager uses 50). Keep the safety node's command
    loop above the actor's policy loop; both below the kernel's own threads (IRQ threads run at 50 on
    PREEMPT_RT, so a real robot PC gives the NIC's IRQ thread a higher value than these)."""
    executor_priority: int = 0
    """``SCHED_FIFO`` priority of the node's ROS executor thread (sensor and target callbacks) and of the DDS
    threads already running when it starts (they hand it every message); 0 = normal scheduling. Python runs one thread at a time (the GIL): a normal executor thread that the machine's load
    preempts while it holds the GIL stalls the loop until it gets a CPU back (priority inversion). Just below
    ``priority``, it is never preempted by ordinary load, and the loop still preempts it."""
    cpus: tuple[int, ...] = ()
    """Pin the loop thread to these CPUs (``os.sched_setaffinity``); empty = any CPU. On a robot PC isolate one
    core (``isolcpus=``) and put the command loop alone on it."""
    lock_memory: bool = True
    """``mlockall(MCL_CURRENT | MCL_FUTURE)``: pages of the process are never swapped out (needs
    ``CAP_IPC_LOCK`` or a large enough ``memlock`` limit). It locks every mapping of the process, so it suits a
    small process (the safety node); the actor (torch) leaves it off by default."""
    freeze_gc: bool = True
    """``gc.freeze()`` after setup and automatic garbage collection off; the loop collects itself, right after a
    tick (:class:`GcPacer`): young generations every ``gc_every_s``, everything every 60 s."""
    gc_every_s: float = 1.0
    """Seconds between the loop's own young-generation collections (``freeze_gc``)."""
    gil_switch_s: float = 0.0005
    """``sys.setswitchinterval`` for the process (Python's default is 5 ms): how long the loop may wait for the
    GIL while another thread of the process (the ROS executor decoding a message) holds it."""
    cpu_dma_latency_us: int = -1
    """Hold a PM QoS request of this many microseconds on ``/dev/cpu_dma_latency`` while the process runs (-1 =
    none), as ``cyclictest`` and real-time Linux guides do: at 0 the CPUs stay out of idle states (a VM's vCPUs
    poll instead of halting), so a real-time thread that sleeps to its deadline, or waits for the GIL, wakes in
    microseconds rather than after the idle exit. The request is system-wide (the strictest holder wins) and ends
    with the process; it keeps idle cores busy (power, heat). Needs root (the device is root-only)."""
    spin_s: float = 0.0008
    """Hybrid wait: sleep until this long before each deadline, then spin on the clock (a sleep wakes up 50 us to
    a few ms late; the spin is exact). Capped at a quarter of the period, so the loop never takes more than a
    quarter of a CPU however high ``command_hz`` is. 0 = sleep only."""


@dataclass
class RealtimeStatus:
    """What :func:`enter_realtime` achieved for the calling thread."""

    fifo_priority: int = 0
    """``SCHED_FIFO`` priority in effect (0 = normal scheduling)."""
    cpus: tuple[int, ...] = ()
    """CPU set in effect when pinned, else empty."""
    memory_locked: bool = False
    gc_frozen: bool = False
    cpu_dma_latency_us: int = -1
    """The PM QoS request held on ``/dev/cpu_dma_latency`` (-1 = none)."""
    refused: list[str] = field(default_factory=list)
    """What the OS refused, one entry per part (``SCHED_FIFO 50: [Errno 1] Operation not permitted``...)."""

    @property
    def active(self) -> bool:
        """The loop runs under SCHED_FIFO (the part that matters under load)."""
        return self.fifo_priority > 0

    def describe(self) -> str:
        if not self.active:
            return "normal scheduling (not real-time)"
        parts = [f"SCHED_FIFO {self.fifo_priority}", f"cpus {list(self.cpus)}" if self.cpus else "any cpu",
                 "memory locked" if self.memory_locked else "memory not locked",
                 "gc frozen" if self.gc_frozen else "gc automatic"]
        if self.cpu_dma_latency_us >= 0:
            parts.append(f"cpu_dma_latency {self.cpu_dma_latency_us} us")
        return "real-time: " + ", ".join(parts)

    def stats(self, prefix: str) -> dict[str, float]:
        return {f"{prefix}/active": float(self.active), f"{prefix}/fifo_priority": float(self.fifo_priority),
                f"{prefix}/memory_locked": float(self.memory_locked),
                f"{prefix}/cpu_dma_latency_us": float(self.cpu_dma_latency_us)}


def _mlockall() -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.mlockall(_MCL_CURRENT | _MCL_FUTURE) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


_PM_QOS_FDS: list[int] = []  # open /dev/cpu_dma_latency requests: the kernel drops one when its fd closes


def hold_cpu_dma_latency(us: int, device: str = "/dev/cpu_dma_latency") -> None:
    """Open ``device`` and write ``us`` (a native int32) to it, keeping it open until the process exits (the
    request lasts as long as the file descriptor). Raises OSError when refused."""
    import struct

    fd = os.open(device, os.O_WRONLY | os.O_CLOEXEC)
    try:
        os.write(fd, struct.pack("i", int(us)))
    except OSError:
        os.close(fd)
        raise
    _PM_QOS_FDS.append(fd)


def enter_realtime(cfg: RealtimeConfig, what: str) -> RealtimeStatus:
    """Apply ``cfg`` to the calling thread (see the module docstring); never raises for a refusal: one warning
    lists what was refused. A priority outside 1-99 is a configuration error (ValueError)."""
    status = RealtimeStatus()
    if not cfg.enabled:
        log.info("%s: real-time setup disabled (normal scheduling)", what)
        return status
    if not 1 <= cfg.priority <= 99:
        raise ValueError(f"{what}: SCHED_FIFO priority must be 1-99, got {cfg.priority}")
    if not sys.platform.startswith("linux"):
        status.refused.append(f"SCHED_FIFO: not Linux ({sys.platform})")
    else:
        try:
            # RESET_ON_FORK: threads and processes this thread starts later run normally (a child process or a
            # helper thread must never inherit a real-time priority it did not ask for)
            os.sched_setscheduler(0, os.SCHED_FIFO | os.SCHED_RESET_ON_FORK, os.sched_param(cfg.priority))
            status.fifo_priority = cfg.priority
        except OSError as e:
            status.refused.append(f"SCHED_FIFO {cfg.priority}: {e}")
        if cfg.cpus:
            try:
                os.sched_setaffinity(0, cfg.cpus)
                status.cpus = tuple(sorted(os.sched_getaffinity(0)))
            except OSError as e:
                status.refused.append(f"cpus {list(cfg.cpus)}: {e}")
        if cfg.lock_memory:
            try:
                _mlockall()
                status.memory_locked = True
            except OSError as e:
                status.refused.append(f"mlockall: {e}")
        if cfg.cpu_dma_latency_us >= 0:
            try:
                hold_cpu_dma_latency(cfg.cpu_dma_latency_us)
                status.cpu_dma_latency_us = int(cfg.cpu_dma_latency_us)
            except OSError as e:
                status.refused.append(f"/dev/cpu_dma_latency {cfg.cpu_dma_latency_us} us: {e}")
    if cfg.gil_switch_s > 0:
        sys.setswitchinterval(cfg.gil_switch_s)
    if cfg.freeze_gc:
        gc.collect()
        gc.freeze()
        gc.disable()
        status.gc_frozen = True
    if status.refused and _privilege_warned(status.refused):
        log.info("%s: %s (refused: %s)", what, status.describe(), "; ".join(status.refused))
    elif status.refused:
        log.warning("%s runs WITHOUT full real-time setup (%s); now %s. Grant it as ros2_control needs: run as "
                    "root, or give the user CAP_SYS_NICE + CAP_IPC_LOCK, or `@realtime - rtprio 99` and "
                    "`@realtime - memlock unlimited` in /etc/security/limits.conf (and, for cpu_dma_latency_us, a "
                    "udev rule that makes /dev/cpu_dma_latency writable by that group)", what,
                    "; ".join(status.refused), status.describe())
    else:
        log.info("%s: %s", what, status.describe())
    return status


def log_off_the_loop() -> None:
    """Route every log record of the process through a queue to a normal-priority thread that writes it: a
    real-time loop that logs (a hold, a refusal) must never block in ``write()`` on a slow pipe or a busy disk.
    Call once, before the loops and the executor become real-time (the writer thread stays normal)."""
    import logging.handlers
    import queue

    root = logging.getLogger()
    if not root.handlers or any(isinstance(h, logging.handlers.QueueHandler) for h in root.handlers):
        return  # nothing configured (Python's last-resort stderr handler stays), or done already
    records: queue.SimpleQueue = queue.SimpleQueue()
    listener = logging.handlers.QueueListener(records, *root.handlers, respect_handler_level=True)
    root.handlers = [logging.handlers.QueueHandler(records)]
    listener.start()
    import atexit
    atexit.register(listener.stop)  # flush what is queued at exit


_WARNED: list[str] = []  # the process's one warning about missing privilege has been given (by which loop)


def _privilege_warned(refused: list[str]) -> bool:
    """False the first time a part was refused in this process (that caller warns), True afterwards (INFO)."""
    if _WARNED:
        return True
    _WARNED.extend(refused)
    return False


def enter_executor_realtime(cfg: RealtimeConfig, what: str) -> bool:
    """``SCHED_FIFO`` at ``cfg.executor_priority`` for the calling thread (a node's executor) and the process's
    other threads still at normal priority (the middleware's), nothing else: True if in effect. A refusal is part of the process's one privilege warning (see :func:`enter_realtime`)."""
    if not cfg.enabled or cfg.executor_priority <= 0 or not sys.platform.startswith("linux"):
        return False
    try:
        os.sched_setscheduler(0, os.SCHED_FIFO | os.SCHED_RESET_ON_FORK, os.sched_param(cfg.executor_priority))
        # the middleware's threads (DDS receive and event threads, started with the node) hand every message to
        # the executor: starved by other load, they would delay it just the same.
        _promote_normal_threads(cfg.executor_priority)
    except OSError as e:
        refused = [f"SCHED_FIFO {cfg.executor_priority} for the executor: {e}"]
        if _privilege_warned(refused):
            log.info("%s: normal scheduling (%s)", what, refused[0])
        else:
            log.warning("%s runs WITHOUT real-time priority (%s). Grant it as ros2_control needs: run as root, or "
                        "give the user CAP_SYS_NICE, or `@realtime - rtprio 99` in /etc/security/limits.conf",
                        what, refused[0])
        return False
    log.info("%s: SCHED_FIFO %d", what, cfg.executor_priority)
    return True


def _promote_normal_threads(priority: int) -> int:
    """``SCHED_FIFO priority`` for every thread of the process still at normal scheduling (threads already
    real-time, the loop, keep theirs); returns how many were raised. Raises OSError when not permitted."""
    policy, param = os.SCHED_FIFO | os.SCHED_RESET_ON_FORK, os.sched_param(priority)
    raised = 0
    for tid in (int(t) for t in os.listdir("/proc/self/task")):
        try:
            if os.sched_getscheduler(tid) & ~os.SCHED_RESET_ON_FORK == os.SCHED_OTHER:
                os.sched_setscheduler(tid, policy, param)
                raised += 1
        except ProcessLookupError:  # a thread that ended meanwhile
            continue
    return raised


def promote_helper_threads(cfg: RealtimeConfig, what: str) -> int:
    """Give the process's helper threads started after its executor (the actor's transport IO thread, libzmq's
    I/O threads) the executor's priority; returns how many were raised (0 when real-time is off or refused).
    Why: Python runs one thread at a time. A normal thread that holds the GIL when the machine's load (the
    learner on the same cores) preempts it stalls the real-time policy loop until the scheduler gives it a CPU
    back, tens of ms on a loaded 2-core machine, however high the loop's own priority. The transport thread
    wakes every 2 ms, so it often holds the GIL. Call after those threads are started, from any thread."""
    if not cfg.enabled or cfg.executor_priority <= 0 or not sys.platform.startswith("linux"):
        return 0
    try:
        raised = _promote_normal_threads(cfg.executor_priority)
    except OSError as e:  # no privilege: the executor's refusal already warned once
        log.info("%s: normal scheduling (%s)", what, e)
        return 0
    log.info("%s: %d threads at SCHED_FIFO %d", what, raised, cfg.executor_priority)
    return raised


class DeadlineSchedule:
    """Absolute deadlines ``start + k * period``: the loop never drifts (a tick's own duration does not push the
    next one later), and after an overrun it skips to the next deadline still ahead instead of bursting through
    the missed ones (``missed`` counts them)."""

    def __init__(self, period: float, start: float) -> None:
        if not period > 0:
            raise ValueError(f"period must be > 0, got {period}")
        self.period, self.start = float(period), float(start)
        self.k = 0          # index of the current deadline
        self.missed = 0     # deadlines skipped after overruns

    def shift(self, delta: float) -> None:
        """Move every later deadline by ``delta`` seconds (phase alignment, :func:`phase_correction`)."""
        self.start += delta

    @property
    def deadline(self) -> float:
        return self.start + self.k * self.period

    def advance(self, now: float) -> float:
        """The next deadline after a tick that ended at ``now``: the following grid point, or, if that has
        passed already, the first grid point at or after ``now`` (the ones skipped are counted as missed)."""
        self.k += 1
        if self.deadline < now:
            first_ahead = math.ceil((now - self.start) / self.period)  # first grid point at or after `now`
            self.missed += first_ahead - self.k
            self.k = first_ahead
        return self.deadline


def phase_correction(lag: float, margin: float, period: float, gain: float = 0.3,
                     max_step: float = 0.001) -> float:
    """How far to move a schedule (negative = earlier) so that its deadlines come ``margin`` after a periodic
    event (a camera frame, the actor's target) instead of ``lag`` after it. The error ``lag - margin`` is taken
    modulo the event ``period`` into (-period/2, period/2] (an event just after a deadline is the next one, not
    one period late), then a fraction ``gain`` of it, at most ``max_step``, is corrected per tick: the loop's
    period changes by at most ``max_step``, and noise on the event's arrival is smoothed."""
    error = math.remainder(lag - margin, period) if period > 0 else lag - margin
    return -max(-max_step, min(max_step, gain * error))


class PhaseLock:
    """Keeps a :class:`DeadlineSchedule`'s deadlines ``margin`` after a periodic event (the synced camera's
    frames; the actor's targets). :meth:`event` gets ``lag``, how long before the current deadline the newest
    event came. The first event, and an event after ``relock_after`` in a row that were off by more than a
    quarter of ``event_period``, lock at once by moving the schedule *later* (one longer period, never a shorter
    one); otherwise :func:`phase_correction` nudges it by at most ``max_step``."""

    def __init__(self, schedule: DeadlineSchedule, margin: float, max_step: float, gain: float = 0.3,
                 relock_after: int = 5) -> None:
        self.schedule, self.margin, self.max_step, self.gain = schedule, margin, max_step, gain
        self.relock_after = relock_after
        self.locked, self._off, self.relocks = False, 0, 0

    def event(self, lag: float, event_period: float) -> float:
        """Apply and return the shift (s) of the schedule for an event ``lag`` before the deadline."""
        error = math.remainder(lag - self.margin, event_period)
        self._off = self._off + 1 if abs(error) > event_period / 4 else 0
        if not self.locked or self._off >= self.relock_after:
            delta = (self.margin - lag) % event_period  # later only: no period is ever cut short
            if event_period - delta < 1e-6:
                delta = 0.0  # lag a rounding error over the margin: in phase already, not a whole period early
            self.locked, self._off = True, 0
            self.relocks += 1
        else:
            delta = phase_correction(lag, self.margin, event_period, self.gain, self.max_step)
        self.schedule.shift(delta)
        return delta


class ArrivalRate:
    """The period of a periodic input (camera frames), measured: the median of the last ``window`` intervals
    between arrivals, ignoring gaps over 1 s (a stopped sensor). ``period`` is None until ``min_intervals`` were
    seen. A median, not a running mean: a camera's first interval (driver start-up, DDS discovery) can be several
    periods long, and a mean seeded with it stayed off by more than camera sync's 5% for a second, so the first
    ticks of a run acted on frames up to a camera period old."""

    def __init__(self, window: int = 31, min_intervals: int = 10) -> None:
        self.min_intervals = min_intervals
        self._last: float | None = None
        self._intervals: deque[float] = deque(maxlen=window)

    def arrived(self, t: float) -> None:
        if self._last is not None and 0.0 < t - self._last < 1.0:
            self._intervals.append(t - self._last)
        self._last = t

    @property
    def period(self) -> float | None:
        if len(self._intervals) < self.min_intervals:
            return None
        return float(statistics.median(self._intervals))


def spin_window(cfg: RealtimeConfig, period: float) -> float:
    """The spin part of the hybrid wait: ``cfg.spin_s``, at most a quarter of ``period``; 0 when the setup is
    disabled. Kept without SCHED_FIFO too: a spin also hides a normal thread's late wake-up."""
    return 0.0 if not cfg.enabled else min(max(cfg.spin_s, 0.0), 0.25 * period)


def wait_until(deadline: float, spin_s: float, clock: Callable[[], float] = time.monotonic,
               sleep: Callable[[float], None] = time.sleep) -> None:
    """Sleep until ``spin_s`` before ``deadline``, then spin on ``clock`` until it. The spin is bounded by
    ``spin_s`` (the sleep ends at most that far ahead of the deadline)."""
    remaining = deadline - clock()
    if remaining > spin_s:
        sleep(remaining - spin_s)
    while clock() < deadline:
        pass


class GcPacer:
    """With automatic collection off (``freeze_gc``), the loop collects here, right after a tick: the young
    generations every ``every_s``, all of them every ``full_every_s`` (reference cycles are still freed, only at
    a time that cannot delay a command). Without ``freeze_gc`` it does nothing."""

    def __init__(self, active: bool, every_s: float, clock: Callable[[], float] = time.monotonic,
                 full_every_s: float = 60.0) -> None:
        self.active, self.every_s, self.full_every_s, self.clock = active, every_s, full_every_s, clock
        now = clock()
        self._next, self._next_full = now + every_s, now + full_every_s
        self.collections = 0

    def after_tick(self) -> None:
        if not self.active:
            return
        now = self.clock()
        if now >= self._next_full:
            gc.collect()
            self._next_full, self._next = now + self.full_every_s, now + self.every_s
            self.collections += 1
        elif now >= self._next:
            gc.collect(1)
            self._next = now + self.every_s
            self.collections += 1
