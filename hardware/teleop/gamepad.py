"""Gamepads over Linux input events (``/dev/input/eventN``), read as raw ``struct input_event`` records.

Each record is ``struct timeval time; __u16 type; __u16 code; __s32 value`` (24 bytes on 64-bit Linux).
Changes arrive as ``EV_ABS`` (sticks, triggers, d-pad hat) and ``EV_KEY`` (buttons) records and take effect
together at the next ``EV_SYN/SYN_REPORT``, so a stick's x and y never tear. ``SYN_DROPPED`` means the
kernel's buffer overflowed: everything up to the next ``SYN_REPORT`` is discarded and the state re-read from
the device (``EVIOCGABS``).

An evdev device reports changes only: a stick held still, or a button held down, sends nothing. So while the
operator is active and the device is quiet, :meth:`Gamepad.idle` asks the kernel for the current stick
values (``EVIOCGABS``); an answer proves the device is alive (and refreshes the values), ENODEV proves it
is gone. A stream that cannot be asked (a recording played through a pipe) is judged by its reports alone.
"""
from __future__ import annotations

import errno
import fcntl
import logging
import struct

from robot_rl.hardware.teleop.device import DeviceReader, normalise

log = logging.getLogger("robot_rl.teleop")

INPUT_EVENT = struct.Struct("llHHi")
"""``struct input_event`` with the native ``long`` timeval (24 bytes on 64-bit Linux)."""
EV_SYN, EV_KEY, EV_ABS = 0x00, 0x01, 0x03
SYN_REPORT, SYN_DROPPED = 0, 3
ABS_CODES = {"ABS_X": 0x00, "ABS_Y": 0x01, "ABS_Z": 0x02, "ABS_RX": 0x03, "ABS_RY": 0x04, "ABS_RZ": 0x05,
             "ABS_THROTTLE": 0x06, "ABS_RUDDER": 0x07, "ABS_GAS": 0x09, "ABS_BRAKE": 0x0A,
             "ABS_HAT0X": 0x10, "ABS_HAT0Y": 0x11}
KEY_CODES = {"BTN_TRIGGER": 0x120, "BTN_THUMB": 0x121, "BTN_THUMB2": 0x122, "BTN_TOP": 0x123, "BTN_TOP2": 0x124,
             "BTN_PINKIE": 0x125, "BTN_BASE": 0x126, "BTN_BASE2": 0x127, "BTN_BASE3": 0x128, "BTN_BASE4": 0x129,
             "BTN_SOUTH": 0x130, "BTN_A": 0x130, "BTN_EAST": 0x131, "BTN_B": 0x131, "BTN_C": 0x132,
             "BTN_NORTH": 0x133, "BTN_X": 0x133, "BTN_WEST": 0x134, "BTN_Y": 0x134, "BTN_Z": 0x135,
             "BTN_TL": 0x136, "BTN_TR": 0x137, "BTN_TL2": 0x138, "BTN_TR2": 0x139, "BTN_SELECT": 0x13A,
             "BTN_START": 0x13B, "BTN_MODE": 0x13C, "BTN_THUMBL": 0x13D, "BTN_THUMBR": 0x13E}
BTN_GAMEPAD = 0x130
_ABSINFO = struct.Struct("6i")  # value, minimum, maximum, fuzz, flat, resolution


def eviocgabs(code: int) -> int:
    """``EVIOCGABS(code)`` = ``_IOR('E', 0x40 + code, struct input_absinfo)``."""
    return (2 << 30) | (_ABSINFO.size << 16) | (ord("E") << 8) | (0x40 + code)


def encode_events(events: list[tuple[int, int, int]], t: float = 0.0) -> bytes:
    """``(type, code, value)`` records as the kernel writes them (used to build input streams)."""
    sec, usec = int(t), int((t % 1.0) * 1e6)
    return b"".join(INPUT_EVENT.pack(sec, usec, typ, code, value) for typ, code, value in events)


class Gamepad(DeviceReader):
    kind = "gamepad"
    streams_while_active = True  # with the EVIOCGABS probe in idle(): quiet but answering counts as alive

    def __init__(self, path: str = "", fd: int | None = None, axes: tuple[str, ...] = ("ABS_X", "ABS_Y"),
                 buttons: dict[str, str] | None = None, abs_ranges: dict[str, tuple[int, int]] | None = None,
                 stale_timeout_s: float = 0.5, reconnect_s: float = 1.0) -> None:
        super().__init__(path, fd, reconnect_s)
        unknown = [a for a in axes if a not in ABS_CODES]
        if unknown:
            raise ValueError(f"gamepad: unknown axes {unknown}; known: {sorted(ABS_CODES)}")
        self.axis_codes = {ABS_CODES[a]: a for a in axes}
        self.button_codes: dict[int, str] = {}
        for role, name in (buttons or {}).items():
            if name not in KEY_CODES:
                raise ValueError(f"gamepad button for {role!r}: unknown {name!r}; known: {sorted(KEY_CODES)}")
            self.button_codes[KEY_CODES[name]] = role
        self.config_ranges = {k: (int(v[0]), int(v[1])) for k, v in (abs_ranges or {}).items()}
        self.ranges: dict[str, tuple[int, int]] = {}
        self.stale_timeout_s = float(stale_timeout_s)
        self._s.axes = {a: 0.0 for a in axes}
        self._pending: list[tuple[int, int, int]] = []
        self._partial = b""
        self._dropping = False
        self._can_query = False
        self.dropped_frames = 0

    # ------------------------------------------------------------------ setup: axis ranges
    def _query(self, fd: int, code: int) -> tuple[int, int, int] | None:
        try:
            value, low, high, *_ = _ABSINFO.unpack(fcntl.ioctl(fd, eviocgabs(code), bytes(_ABSINFO.size)))
            return value, low, high
        except OSError as exc:
            if exc.errno == errno.ENODEV:
                raise
            return None  # ENOTTY/EINVAL: not an evdev node (a recorded stream), or no such axis

    def _on_open(self, fd: int) -> None:
        self._partial, self._pending, self._dropping = b"", [], False
        self._can_query = False
        for code, name in self.axis_codes.items():
            info = self._query(fd, code)
            if info is not None:
                self._can_query = True
                self.ranges[name] = (info[1], info[2])
                self._s.axes[name] = normalise(info[0], info[1], info[2])
            elif name in self.config_ranges:
                self.ranges[name] = self.config_ranges[name]
            else:
                raise ValueError(f"gamepad: the device does not report a range for {name} and "
                                 f"hil.device.abs_ranges has none")

    # ------------------------------------------------------------------ parsing
    def parse(self, data: bytes) -> None:
        data = self._partial + data
        whole = len(data) - len(data) % INPUT_EVENT.size
        self._partial = data[whole:]
        for _sec, _usec, typ, code, value in INPUT_EVENT.iter_unpack(data[:whole]):
            if typ == EV_SYN and code == SYN_DROPPED:
                self._dropping, self._pending = True, []
                self.dropped_frames += 1
            elif typ == EV_SYN and code == SYN_REPORT:
                if self._dropping:
                    self._dropping = False
                    self._resync()
                else:
                    self._apply(self._pending)
                self._pending = []
            elif not self._dropping and typ in (EV_ABS, EV_KEY):
                self._pending.append((typ, code, value))

    def _apply(self, frame: list[tuple[int, int, int]]) -> None:
        for typ, code, value in frame:
            if typ == EV_ABS and code in self.axis_codes:
                name = self.axis_codes[code]
                self._s.axes[name] = normalise(value, *self.ranges[name])
            elif typ == EV_KEY and code in self.button_codes:
                # value 2 is autorepeat (keyboards); a gamepad sends 1 (down) and 0 (up)
                self._button(self.button_codes[code], value != 0)

    def _resync(self) -> None:
        """After SYN_DROPPED: re-read the sticks from the kernel (buttons settle at their next change)."""
        if self._fd is None or not self._can_query:
            log.warning("gamepad: input events were dropped and this stream cannot be re-read")
            return
        self._refresh(self._fd)

    def _refresh(self, fd: int) -> None:
        for code, name in self.axis_codes.items():
            info = self._query(fd, code)
            if info is not None:
                self._s.axes[name] = normalise(info[0], *self.ranges[name])

    def idle(self, now: float) -> None:
        s = self._s
        active = s.held or any(v != 0.0 for v in s.axes.values())
        if not (active and self._can_query and self._fd is not None):
            return
        if now - s.last_report < self.stale_timeout_s / 2:
            return
        try:
            self._refresh(self._fd)
        except OSError:
            return  # ENODEV: the next read reports the loss
        s.last_report = now  # the kernel answered: the device is there, just quiet
