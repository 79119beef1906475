"""The virtual operator: a headless stand-in for the person at the robot, for the twins and for CI.

It watches every step the way a person would and takes the controls (the env's scripted expert drives)
when the policy *stalls* (the TCP, ``state[:3]``, moved less than ``stall_distance`` over ``window`` steps)
or *heads for failure* (its motion disagrees with the expert's by more than ``disagreement`` on average over
``window`` steps, or it keeps the gripper the other way). It keeps control for ``takeover_steps``, then hands
back and lets the policy try for at least ``cooldown_steps``. Its commands go through the same arbitration,
labelling, transport and replay path as a person's.

The expert is asked every step, driving or not, so its phase machine follows the scene the policy makes.
"""
from __future__ import annotations

from collections import deque
from typing import Any

import numpy as np

from robot_rl.hardware.teleop.operator import Command, grip_index


class VirtualOperator:
    def __init__(self, env: Any, cfg: Any, action_spec: Any, rng: np.random.Generator) -> None:
        if not hasattr(env, "expert"):
            raise ValueError(f"hil=virtual needs an env with a scripted expert; {type(env).__name__} has none")
        if cfg.window < 2 or cfg.takeover_steps < 1:
            raise ValueError("hil.virtual.window must be >= 2 and takeover_steps >= 1")
        self.expert = env.expert()
        self.cfg = cfg
        self.rng = rng
        self.grip = grip_index(action_spec)
        self.motion_dims = [i for i in range(int(action_spec.low_array().shape[0])) if i != self.grip][:3]
        self.low, self.high = action_spec.low_array(), action_spec.high_array()
        self.reset()

    def reset(self) -> None:
        self.expert.reset()
        self._tcp: deque[np.ndarray] = deque(maxlen=self.cfg.window)
        self._gap: deque[float] = deque(maxlen=self.cfg.window)
        self.remaining = 0
        self.cooldown = 0
        self.takeovers = 0
        self.last_trigger = ""

    def _triggered(self) -> str:
        if len(self._tcp) < self.cfg.window:
            return ""
        if float(np.linalg.norm(self._tcp[-1] - self._tcp[0])) < self.cfg.stall_distance:
            return "stall"
        if float(np.mean(self._gap)) > self.cfg.disagreement:
            return "disagreement"
        return ""

    def command(self, obs: dict[str, np.ndarray], policy_action: np.ndarray,
                last_action: np.ndarray | None) -> Command:
        expert = np.clip(np.asarray(self.expert.act(obs), np.float32), self.low, self.high)
        policy_action = np.asarray(policy_action, np.float32)
        gap = float(np.linalg.norm(policy_action[self.motion_dims] - expert[self.motion_dims]))
        if self.grip is not None and np.sign(policy_action[self.grip]) != np.sign(expert[self.grip]):
            gap += 1.0  # closing on nothing / letting go mid-lift is heading for failure too
        self._tcp.append(np.asarray(obs["state"][:3], np.float64))
        self._gap.append(gap)
        if self.remaining > 0:
            self.remaining -= 1
            if self.remaining == 0:
                self.cooldown = self.cfg.cooldown_steps
                self._tcp.clear()
                self._gap.clear()
            return Command(active=True, action=expert)
        if self.cooldown > 0:
            self.cooldown -= 1
            return Command()
        trigger = self._triggered()
        if trigger and self.rng.random() < self.cfg.takeover_prob:
            self.takeovers += 1
            self.last_trigger = trigger
            self.remaining = self.cfg.takeover_steps - 1
            if self.remaining == 0:
                self.cooldown = self.cfg.cooldown_steps
            return Command(active=True, action=expert)
        return Command()

    def close(self) -> None:
        """Nothing to release (no device)."""
