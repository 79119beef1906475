"""Reading a teleop device node on its own thread, and telling the operator when something goes wrong.

Every device (SpaceMouse over hidraw, gamepad over evdev, keyboard over a terminal) is a file descriptor
that yields bytes. :class:`DeviceReader` owns that descriptor: a daemon thread ``select``s on it, ``os.read``s
whatever arrived and hands it to the subclass's :meth:`DeviceReader.parse` under a lock. The control loop
never touches the descriptor; it takes a :meth:`DeviceReader.snapshot`. So a slow control step cannot drop
input (the kernel queues it and the thread drains it), and a button press between two control steps is
kept as an event until the next snapshot.

Loss is detected where Linux reports it: ``read`` fails with ENODEV/EIO when a USB device is unplugged, and
returns ``b""`` when the other end of a pipe, socket or terminal closes. A device that stays connected but
stops reporting while it should (deflected, or intervening) is judged stale by the operator arbiter
(:mod:`robot_rl.hardware.teleop.operator`), which holds the robot.
"""
from __future__ import annotations

import logging
import os
import select
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import IO

log = logging.getLogger("robot_rl.teleop")


@dataclass
class DeviceState:
    """What the control loop sees of a device at one instant."""

    axes: dict[str, float]
    """Device axis name -> value normalised to [-1, 1] (triggers [0, 1]), before dead zone and mapping."""
    held: frozenset[str]
    """Roles (intervene, grip, ...) whose button is down now."""
    events: list[str]
    """Roles pressed since the previous snapshot, in order (edge-triggered, never lost between polls)."""
    last_report: float
    """``time.monotonic()`` of the last report or event frame (0.0: nothing yet)."""
    connected: bool
    """False once the device was unplugged or its stream ended (until it is reopened)."""
    error: str = ""
    """Why the device is disconnected ("" while connected)."""


class OperatorNotifier:
    """Tells the person at the robot: a log warning, a terminal bell and a line on their terminal, and the
    live window's overlay when one is open. ``history`` keeps every message (the run's record)."""

    def __init__(self, stream: IO[str] | None = None) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.history: list[str] = []
        self.overlay = ""
        """The latest message, shown by the live window."""

    def tell(self, message: str, alarm: bool = True) -> None:
        self.history.append(message)
        self.overlay = message
        (log.warning if alarm else log.info)("operator: %s", message)
        try:
            self.stream.write(("\a" if alarm else "") + f"[robot_rl HIL] {message}\n")
            self.stream.flush()
        except (OSError, ValueError) as exc:  # a closed terminal must not take the control loop down
            log.error("could not write to the operator's terminal: %s", exc)


@dataclass
class _Shared:
    axes: dict[str, float] = field(default_factory=dict)
    held: set[str] = field(default_factory=set)
    events: list[str] = field(default_factory=list)
    last_report: float = 0.0
    connected: bool = False
    error: str = "not opened yet"


class DeviceReader:
    """Base of the devices: opens ``path`` (or adopts an open ``fd``) and parses what it yields on a thread.

    Subclasses implement :meth:`parse` (called with the lock held, with what one ``read`` returned) and may
    override :meth:`idle` (called when nothing arrived for a poll period). They update ``self._s.axes`` and
    call :meth:`_button` for role buttons.
    """

    kind = "device"
    streams_while_active = True
    """True when the device keeps reporting while deflected or held (so silence then means it is lost)."""
    read_size = 4096
    poll_s = 0.02

    def __init__(self, path: str = "", fd: int | None = None, reconnect_s: float = 1.0) -> None:
        if not path and fd is None:
            raise ValueError(f"{self.kind}: give a device path or an open file descriptor")
        self.path = path
        self.reconnect_s = float(reconnect_s)
        self._fd: int | None = fd
        self._owns_fd = fd is None
        self._s = _Shared()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.reports = 0
        """Reads parsed so far (a figure for tests and the run log)."""

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> "DeviceReader":
        if self._fd is None:
            self._fd = self._open()  # the first open fails loudly: a missing device is a config error
        self._on_open(self._fd)
        with self._lock:
            self._s.connected, self._s.error = True, ""
        self._thread = threading.Thread(target=self._run, name=f"teleop-{self.kind}", daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2.0)
        if self._fd is not None:
            self._on_close(self._fd)
            if self._owns_fd:
                os.close(self._fd)
            self._fd = None

    def _open(self) -> int:
        return os.open(self.path, os.O_RDONLY | os.O_NONBLOCK)

    def _on_open(self, fd: int) -> None:
        """Hook: query the device (axis ranges, terminal mode) right after it was opened."""

    def _on_close(self, fd: int) -> None:
        """Hook: undo what :meth:`_on_open` changed (a terminal's mode)."""

    # ------------------------------------------------------------------ reader thread
    def _run(self) -> None:
        next_reopen = 0.0
        while not self._stop.is_set():
            fd = self._fd
            if fd is None:  # lost: try to reopen the same node (a USB device plugged back in)
                if self._owns_fd and self.path and time.monotonic() >= next_reopen:
                    next_reopen = time.monotonic() + self.reconnect_s
                    try:
                        self._fd = self._open()
                        self._on_open(self._fd)
                        with self._lock:
                            self._s.connected, self._s.error = True, ""
                            self._s.last_report = time.monotonic()
                        log.info("%s %s is back", self.kind, self.path)
                    except OSError:
                        pass
                self._stop.wait(self.poll_s)
                continue
            try:
                ready, _, _ = select.select([fd], [], [], self.poll_s)
            except (OSError, ValueError) as exc:
                self._lost(f"select failed: {exc}")
                continue
            if not ready:
                with self._lock:
                    self.idle(time.monotonic())
                continue
            try:
                data = os.read(fd, self.read_size)
            except BlockingIOError:
                continue
            except OSError as exc:  # ENODEV/EIO: unplugged; the kernel tells us at the next read
                self._lost(f"read failed: {exc.strerror} (errno {exc.errno})")
                continue
            if not data:
                self._lost("end of stream: the device (or the other end) closed")
                continue
            with self._lock:
                self._s.last_report = time.monotonic()
                self.reports += 1
                self.parse(data)

    def _lost(self, reason: str) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            self._on_close(fd)
            if self._owns_fd:
                try:
                    os.close(fd)
                except OSError:
                    pass
        with self._lock:
            # A lost device commands nothing: forget deflections and held buttons.
            self._s.connected, self._s.error = False, reason
            self._s.axes = {k: 0.0 for k in self._s.axes}
            self._s.held.clear()
        log.error("%s %s lost: %s", self.kind, self.path or "(fd)", reason)

    # ------------------------------------------------------------------ subclass API
    def parse(self, data: bytes) -> None:
        raise NotImplementedError

    def idle(self, now: float) -> None:
        """Called (lock held) when nothing arrived for ``poll_s``."""

    def _button(self, role: str, down: bool) -> None:
        held = self._s.held
        if down and role not in held:
            held.add(role)
            self._s.events.append(role)
        elif not down:
            held.discard(role)

    def current_axes(self, now: float) -> dict[str, float]:
        """Axis values at ``now`` (lock held); the keyboard overrides it (its keys expire)."""
        return dict(self._s.axes)

    # ------------------------------------------------------------------ control-loop side
    def snapshot(self) -> DeviceState:
        with self._lock:
            s = self._s
            events, s.events = s.events, []
            return DeviceState(axes=self.current_axes(time.monotonic()), held=frozenset(s.held), events=events,
                               last_report=s.last_report, connected=s.connected, error=s.error)


def normalise(value: float, low: float, high: float) -> float:
    """Raw axis value -> [-1, 1] for centred axes (low < 0), [0, 1] for one-sided ones (triggers: low = 0)."""
    if high <= low:
        raise ValueError(f"axis range [{low}, {high}] is empty")
    if low >= 0:
        return min(max((value - low) / (high - low), 0.0), 1.0)
    return min(max(2.0 * (value - low) / (high - low) - 1.0, -1.0), 1.0)
