"""Live camera window of the twin while a person teleoperates it (only where a display exists).

MuJoCo's passive viewer shows the scene the actor steps (synced after every step). Keys pressed in the
window are turned into the terminal's key bytes and written into a pipe that the keyboard device reads,
so window keys and terminal keys go through one parser. Headless (no ``DISPLAY``/``WAYLAND_DISPLAY``) no
window opens, and the virtual operator drives the same actor path.
"""
from __future__ import annotations

import logging
import os
from typing import Any

log = logging.getLogger("robot_rl.teleop")

# GLFW key codes -> the bytes a terminal sends for the same key.
_GLFW_KEYS = {265: b"\x1b[A", 264: b"\x1b[B", 262: b"\x1b[C", 263: b"\x1b[D", 266: b"\x1b[5~", 267: b"\x1b[6~",
              32: b" ", 257: b"\r"}


def display_available() -> bool:
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def glfw_key_bytes(keycode: int) -> bytes:
    if keycode in _GLFW_KEYS:
        return _GLFW_KEYS[keycode]
    if 32 < keycode < 127:
        return bytes([keycode]).lower()
    return b""


class TwinWindow:
    def __init__(self, env: Any, key_fd: int | None = None) -> None:
        import mujoco.viewer

        self.key_fd = key_fd

        def on_key(keycode: int) -> None:
            data = glfw_key_bytes(keycode)
            if data and self.key_fd is not None:
                os.write(self.key_fd, data)

        self.handle = mujoco.viewer.launch_passive(env.model, env.data, key_callback=on_key)

    def sync(self, overlay: str = "") -> None:
        if self.handle.is_running():
            if overlay:
                self.handle.set_texts((None, None, "HIL", overlay))
            self.handle.sync()

    def close(self) -> None:
        self.handle.close()


def open_window(mode: str, env: Any, key_fd: int | None = None) -> TwinWindow | None:
    """A window per ``hil.window`` (``auto``: only with a display and a MuJoCo twin)."""
    if mode not in ("auto", "on", "off"):
        raise ValueError(f"hil.window must be auto, on or off, got {mode!r}")
    if mode == "off" or (mode == "auto" and not display_available()):
        return None
    if not (hasattr(env, "model") and hasattr(env, "data")):
        if mode == "on":
            raise ValueError(f"hil.window=on needs a MuJoCo twin; {type(env).__name__} is not one")
        return None
    if not display_available():
        raise RuntimeError("hil.window=on but no display (DISPLAY/WAYLAND_DISPLAY unset)")
    return TwinWindow(env, key_fd)
