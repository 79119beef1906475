"""The intervention arbiter for a person at a device: who drives this step, with what, or hold the robot.

:class:`DeviceOperator` turns a device snapshot into a :class:`Command`: the end-effector delta after dead
zone, axis mapping, sign and scale; the gripper (toggled by its button, starting from what the robot was
doing when the person took over, so taking over never drops a held object); whether the person is
intervening (hold / toggle / motion modes); label events (success, failure, reset); and a *hold* reason when
the robot must not move: the device was unplugged, it fell silent while deflected or intervening for longer
than ``stale_timeout_s``, or the operator paused. Entering and leaving a hold is told to the operator.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from robot_rl.hardware.teleop.device import DeviceReader, OperatorNotifier

LABEL_EVENTS = ("success", "failure", "reset")


@dataclass
class Command:
    """One control step's decision by the operator (a person at a device, or the virtual operator)."""

    active: bool = False
    """The operator drives this step: ``action`` replaces the policy's."""
    action: np.ndarray | None = None
    """float32 (A,) operator action when ``active``."""
    hold: str = ""
    """Non-empty: the robot must be held (not stepped) this step; the reason, already told to the operator."""
    events: list[str] = field(default_factory=list)
    """Label/reset presses since the last step: ``success``, ``failure``, ``reset``."""


def make_device(cfg: Any) -> DeviceReader:
    """The device of a ``hil`` config (``cfg`` is its :class:`~robot_rl.hardware.teleop.config.TeleopConfig`)."""
    from robot_rl.hardware.teleop.discovery import discover

    d = cfg.device
    if cfg.name == "spacemouse":
        from robot_rl.hardware.teleop.spacemouse import SpaceMouse

        return SpaceMouse(d.path or discover("spacemouse"), full_scale=d.full_scale, buttons=dict(d.buttons),
                          reconnect_s=d.reconnect_s)
    if cfg.name == "gamepad":
        from robot_rl.hardware.teleop.gamepad import Gamepad

        return Gamepad(d.path or discover("gamepad"), axes=tuple(dict.fromkeys(d.axis_map)),
                       buttons=dict(d.buttons), abs_ranges=dict(d.abs_ranges), stale_timeout_s=d.stale_timeout_s,
                       reconnect_s=d.reconnect_s)
    if cfg.name == "keyboard":
        from robot_rl.hardware.teleop.keyboard import Keyboard

        return Keyboard(d.path or "stdin", keys=dict(d.keys), buttons=dict(d.buttons), key_timeout_s=d.key_timeout_s)
    raise ValueError(f"hil.name={cfg.name!r} is not a device (keyboard, spacemouse, gamepad)")


def grip_index(action_spec: Any) -> int | None:
    """Index of the first action dimension named ``grip...`` (as ``policy.discrete_gripper`` finds it)."""
    names = tuple(getattr(action_spec, "names", ()) or ())
    return next((i for i, name in enumerate(names) if name.startswith("grip")), None)


class DeviceOperator:
    """A person at a teleop device; see the module docstring."""

    def __init__(self, device: DeviceReader, device_cfg: Any, action_spec: Any,
                 notifier: OperatorNotifier | None = None, always_active: bool = False) -> None:
        if device_cfg.intervene_mode not in ("hold", "toggle", "motion"):
            raise ValueError(f"intervene_mode must be hold, toggle or motion, got {device_cfg.intervene_mode!r}")
        if not always_active:  # recording demos, the person drives every step: no intervene button needed
            if device_cfg.intervene_mode == "hold" and not device.streams_while_active:
                raise ValueError(f"a {device.kind} reports no key releases: use intervene_mode=toggle")
            if device_cfg.intervene_mode != "motion" and "intervene" not in device_cfg.buttons:
                raise ValueError("map an intervene button (hil.device.buttons.intervene) or use "
                                 "intervene_mode=motion")
        self.always_active = always_active
        """The person drives every step (``robot-rl demos teleop=...``); the intervene button is ignored."""
        if not 0.0 <= device_cfg.dead_zone < 1.0:
            raise ValueError(f"dead_zone must be in [0, 1), got {device_cfg.dead_zone}")
        self.device, self.cfg = device, device_cfg
        self.low, self.high = action_spec.low_array(), action_spec.high_array()
        self.action_dim = int(self.low.shape[0])
        self.grip = grip_index(action_spec)
        self.motion_dims = [i for i in range(self.action_dim) if i != self.grip][:3]
        self.notifier = notifier or OperatorNotifier()
        self.toggled = False
        self.paused = False
        self.grip_closed = False
        self.was_active = False
        self.hold_reason = ""
        self._last_motion = -1e9

    def motion(self, axes: dict[str, float]) -> np.ndarray:
        """Dead zone (rescaled so the output starts at 0), then axis map, sign and scale: (3,) in [-1, 1]."""
        dz = self.cfg.dead_zone
        out = np.zeros(3, np.float32)
        for i, name in enumerate(self.cfg.axis_map):
            if name not in axes:
                raise ValueError(f"{self.device.kind} has no axis {name!r}; it has {sorted(axes)}")
            v = float(axes[name])
            v = 0.0 if abs(v) <= dz else np.sign(v) * (abs(v) - dz) / (1.0 - dz)
            out[i] = np.clip(v * self.cfg.axis_sign[i] * self.cfg.scale[i], -1.0, 1.0)
        return out

    def _set_hold(self, reason: str) -> None:
        if reason and reason != self.hold_reason:
            self.notifier.tell(f"robot HELD: {reason}")
        elif not reason and self.hold_reason:
            self.notifier.tell(f"{self.device.kind} OK again: resuming (was: {self.hold_reason})", alarm=False)
        self.hold_reason = reason

    def command(self, obs: Any, policy_action: np.ndarray, last_action: np.ndarray | None) -> Command:
        now = time.monotonic()
        s = self.device.snapshot()
        events = []
        for role in s.events:
            if role == "intervene" and self.cfg.intervene_mode != "hold":
                self.toggled = not self.toggled
            elif role == "pause":
                self.paused = not self.paused
            elif role == "grip":
                self.grip_closed = not self.grip_closed
            elif role in LABEL_EVENTS:
                events.append(role)
        motion = self.motion(s.axes)
        deflected = bool(np.any(motion != 0.0))
        if deflected:
            self._last_motion = now
        mode = self.cfg.intervene_mode
        if self.always_active:
            active = True
        elif mode == "hold":
            active = "intervene" in s.held
        elif mode == "toggle":
            active = self.toggled
        else:
            active = self.toggled or now - self._last_motion <= self.cfg.motion_hold_s
        if not s.connected:
            self.toggled = False  # after a reconnect the person takes over again deliberately
            self._set_hold(f"{self.device.kind} disconnected ({s.error})")
        elif self.device.streams_while_active and (deflected or (active and mode == "hold" and
                                                                  not self.always_active)) \
                and now - s.last_report > self.cfg.stale_timeout_s:
            self._set_hold(f"{self.device.kind} silent for {now - s.last_report:.2f}s while in use "
                           f"(deadline {self.cfg.stale_timeout_s}s)")
        elif self.paused:
            self._set_hold("paused by the operator (press pause again to resume)")
        else:
            self._set_hold("")
        if self.hold_reason:
            self.was_active = False
            return Command(hold=self.hold_reason, events=events)
        if active and not self.was_active and self.grip is not None and last_action is not None:
            # Take over the gripper as it is: a person grabbing the controls must not drop the object.
            self.grip_closed = bool(last_action[self.grip] > 0.0)
        self.was_active = active
        if not active:
            return Command(events=events)
        action = np.zeros(self.action_dim, np.float32)
        action[self.motion_dims] = motion[:len(self.motion_dims)]
        if self.grip is not None:
            action[self.grip] = 1.0 if self.grip_closed else -1.0
        return Command(active=True, action=np.clip(action, self.low, self.high).astype(np.float32), events=events)

    def reset(self) -> None:
        """New episode: a sticky intervention ends (the policy gets the first say each episode) and the
        gripper command starts open (taking over mid-episode still copies the robot's gripper)."""
        self.toggled = False
        self.was_active = False
        self.grip_closed = False

    def close(self) -> None:
        self.device.close()
