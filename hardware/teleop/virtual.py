"""The virtual operator: a headless stand-in for the person at the robot, for the twins and for CI.

It watches every step the way a person would and takes the controls (the env's scripted expert drives) when
the policy

- *makes no progress*: the expert's task potential (``expert.progress(obs)``, e.g. minus the TCP-cube distance
  plus the cube's lift) rose by less than ``min_progress`` over ``window`` steps. This judges where the task is
  going, not how: a policy that takes another route than the expert (descending diagonally instead of hovering
  first) keeps control while it gets closer, and a good policy's exploration noise does not trip it;
- *stalls*: the TCP (``state[:3]``) moved less than ``stall_distance`` over ``window`` steps while the expert
  would be moving;
- optionally (``disagreement > 0``) *disagrees*: its mean motion over the window differs from the expert's by
  more than ``disagreement``, or its gripper is the other way on most steps. That is the only failure judge for
  an expert without ``progress``.

It keeps control for ``takeover_steps``, then hands back and lets the policy try for at least
``cooldown_steps``. Its commands go through the same arbitration, labelling, transport and replay path as a
person's. The expert is asked every step, driving or not, so its phase machine follows the scene the policy makes.
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
        self.has_progress = callable(getattr(self.expert, "progress", None))
        if not self.has_progress and cfg.disagreement <= 0:
            raise ValueError(f"{type(self.expert).__name__} has no progress(obs): set hil.virtual.disagreement > 0 "
                             "so that the operator can tell when the policy heads for failure")
        self.cfg = cfg
        self.rng = rng
        self.grip = grip_index(action_spec)
        self.motion_dims = [i for i in range(int(action_spec.low_array().shape[0])) if i != self.grip][:3]
        self.low, self.high = action_spec.low_array(), action_spec.high_array()
        self.reset()

    def reset(self) -> None:
        self.expert.reset()
        n = self.cfg.window
        self._tcp: deque[np.ndarray] = deque(maxlen=n)
        self._progress: deque[float] = deque(maxlen=n)
        # per step: policy motion (3), expert motion (3), gripper opposite to the expert's (0/1)
        self._policy_motion: deque[np.ndarray] = deque(maxlen=n)
        self._expert_motion: deque[np.ndarray] = deque(maxlen=n)
        self._grip_opposite: deque[float] = deque(maxlen=n)
        self.remaining = 0
        self.cooldown = 0
        self.takeovers = 0
        self.last_trigger = ""

    def _triggered(self) -> str:
        if len(self._tcp) < self.cfg.window:
            return ""
        if self.has_progress and self._progress[-1] - self._progress[0] < self.cfg.min_progress:
            return "no_progress"
        expert_speed = float(np.linalg.norm(np.mean(self._expert_motion, axis=0)))
        if float(np.linalg.norm(self._tcp[-1] - self._tcp[0])) < self.cfg.stall_distance \
                and expert_speed > self.cfg.stall_expert_motion:  # standing still while grasping is no stall
            return "stall"
        if self.cfg.disagreement > 0 and self.disagreement() > self.cfg.disagreement:
            return "disagreement"
        return ""

    def disagreement(self) -> float:
        """L2 between the window's mean policy and expert motions, +1 when the gripper is the other way on most
        steps (closing on nothing, letting go mid-lift)."""
        if not self._policy_motion:
            return 0.0
        gap = float(np.linalg.norm(np.mean(self._policy_motion, axis=0) - np.mean(self._expert_motion, axis=0)))
        return gap + (1.0 if np.mean(self._grip_opposite) > 0.5 else 0.0)

    def _forget(self) -> None:
        for window in (self._tcp, self._progress, self._policy_motion, self._expert_motion, self._grip_opposite):
            window.clear()

    def command(self, obs: dict[str, np.ndarray], policy_action: np.ndarray,
                last_action: np.ndarray | None) -> Command:
        expert = np.clip(np.asarray(self.expert.act(obs), np.float32), self.low, self.high)
        policy_action = np.asarray(policy_action, np.float32)
        self._tcp.append(np.asarray(obs["state"][:3], np.float64))
        if self.has_progress:
            self._progress.append(float(self.expert.progress(obs)))
        self._policy_motion.append(policy_action[self.motion_dims])
        self._expert_motion.append(expert[self.motion_dims])
        self._grip_opposite.append(float(self.grip is not None
                                         and np.sign(policy_action[self.grip]) != np.sign(expert[self.grip])))
        if self.remaining > 0:
            self.remaining -= 1
            if self.remaining == 0:
                self.cooldown = self.cfg.cooldown_steps
                self._forget()  # judge the policy on its own steps after the hand-back
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
