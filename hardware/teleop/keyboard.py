"""Keyboard teleop from a terminal: raw key bytes (and escape sequences) read on the device thread.

The terminal is put in cbreak mode (no line buffering, no echo; Ctrl-C still interrupts), so every key
press arrives as bytes at once. Arrow and editing keys arrive as escape sequences (``ESC [ A``, ``ESC O A``
in application mode, ``ESC [ 5 ~``...) which may be split across reads; the parser keeps its state between
reads, so a sequence is never mistaken for a lone Escape followed by letters. A terminal reports presses but
no releases: a motion key acts for ``key_timeout_s`` after its last byte (autorepeat keeps a held key alive),
``space`` stops all motion at once, and intervention toggles.
"""
from __future__ import annotations

import atexit
import os
import termios
import time
import tty

from robot_rl.hardware.teleop.device import DeviceReader

CSI_FINAL = {"A": "up", "B": "down", "C": "right", "D": "left", "H": "home", "F": "end"}
CSI_TILDE = {"1": "home", "2": "insert", "3": "delete", "4": "end", "5": "pgup", "6": "pgdn", "7": "home",
             "8": "end"}
SS3_FINAL = {"A": "up", "B": "down", "C": "right", "D": "left", "H": "home", "F": "end", "P": "f1", "Q": "f2",
             "R": "f3", "S": "f4"}
CONTROL = {" ": "space", "\r": "enter", "\n": "enter", "\t": "tab", "\x7f": "backspace"}
DIRECTIONS = {"+x": (0, 1.0), "-x": (0, -1.0), "+y": (1, 1.0), "-y": (1, -1.0), "+z": (2, 1.0), "-z": (2, -1.0)}
AXES = ("x", "y", "z")
ESC_TIMEOUT_S = 0.05
"""A lone ESC followed by nothing for this long is the Escape key, not the start of a sequence."""


class Keyboard(DeviceReader):
    kind = "keyboard"
    streams_while_active = False  # keys expire by themselves; silence is the normal state
    read_size = 1024

    def __init__(self, path: str = "stdin", fd: int | None = None, keys: dict[str, str] | None = None,
                 buttons: dict[str, str] | None = None, key_timeout_s: float = 0.6) -> None:
        if path == "stdin" and fd is None:
            if not os.isatty(0):
                raise RuntimeError("hil=keyboard reads the terminal on stdin, but stdin is not a terminal; "
                                   "run from a terminal or set hil.device.path=/dev/pts/N")
            fd, path = 0, ""
        super().__init__(path, fd)
        self.directions: dict[str, tuple[int, float]] = {}
        for key, direction in (keys or {}).items():
            if direction not in DIRECTIONS:
                raise ValueError(f"keyboard: key {key!r} -> {direction!r}; directions are {sorted(DIRECTIONS)}")
            self.directions[key] = DIRECTIONS[direction]
        self.roles = {key: role for role, key in (buttons or {}).items()}
        clash = set(self.roles) & set(self.directions)
        if clash:
            raise ValueError(f"keyboard: keys {sorted(clash)} are mapped to both a motion and a button")
        self.key_timeout_s = float(key_timeout_s)
        self._last_press: dict[str, float] = {}
        self._seq = ""  # escape sequence in progress (between reads)
        self._seq_started = 0.0
        self._saved_mode: list | None = None
        self.keys_seen: list[str] = []
        """Every key name decoded, in order (a record for the run log and tests)."""

    def _on_open(self, fd: int) -> None:
        if os.isatty(fd):
            self._saved_mode = termios.tcgetattr(fd)
            tty.setcbreak(fd, termios.TCSANOW)
            # A crash must not leave the person's terminal without echo: restore at exit too.
            atexit.register(self._on_close, fd)

    def _on_close(self, fd: int) -> None:
        if self._saved_mode is not None:
            try:
                termios.tcsetattr(fd, termios.TCSANOW, self._saved_mode)
            except termios.error:
                pass  # the terminal is already gone
            self._saved_mode = None

    # ------------------------------------------------------------------ parsing
    def parse(self, data: bytes) -> None:
        now = time.monotonic()
        for ch in data.decode("latin-1"):
            if self._seq:
                self._seq += ch
                self._continue_sequence(now)
            elif ch == "\x1b":
                self._seq, self._seq_started = ch, now
            elif ch in CONTROL:
                self._key(CONTROL[ch], now)
            elif ch.isprintable():
                self._key(ch.lower(), now)  # caps lock must not disable the keys

    def _continue_sequence(self, now: float) -> None:
        seq = self._seq
        if len(seq) == 2:
            if seq[1] not in "[O":  # ESC + key: Alt-key, or a lone Escape followed by a key
                self._seq = ""
                self._key("esc", now)
                self.parse(seq[1].encode("latin-1"))
            return
        final = seq[-1]
        if seq[1] == "O":
            self._seq = ""
            if final in SS3_FINAL:
                self._key(SS3_FINAL[final], now)
        elif "\x40" <= final <= "\x7e":  # CSI final byte
            self._seq = ""
            params = seq[2:-1]
            if final == "~":
                name = CSI_TILDE.get(params.split(";")[0])
            else:
                name = CSI_FINAL.get(final)  # modifiers (``ESC [ 1 ; 5 A``) keep the key
            if name is not None:
                self._key(name, now)
        elif len(seq) > 16:
            self._seq = ""  # not a sequence we know: drop it rather than swallow keys forever

    def idle(self, now: float) -> None:
        if self._seq == "\x1b" and now - self._seq_started > ESC_TIMEOUT_S:
            self._seq = ""
            self._key("esc", now)

    def _key(self, name: str, now: float) -> None:
        self.keys_seen.append(name)
        if name == "space":
            self._last_press.clear()
        elif name in self.directions:
            self._last_press[name] = now
        elif name in self.roles:
            self._button(self.roles[name], True)
            self._button(self.roles[name], False)  # a terminal has no release: every press is one event

    def current_axes(self, now: float) -> dict[str, float]:
        axes = [0.0, 0.0, 0.0]
        for key, t in self._last_press.items():
            if now - t <= self.key_timeout_s:
                index, sign = self.directions[key]
                axes[index] += sign
        return {name: max(-1.0, min(1.0, v)) for name, v in zip(AXES, axes)}
