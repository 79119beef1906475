"""PointReach: a 2-D point mass that must reach a goal. Pure numpy, deterministic for a seed.

It is the honest stand-in env of the core tests (transport, actor/learner loops, replay) and the small
task an algorithm must *learn* in the algorithm tests. With ``obs=pixels`` it also renders a tiny top-down
camera (``images/top``, uint8 HxWx3) so the image path is exercised without a renderer.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from robot_rl.config import EnvConfig, store
from robot_rl.env import StepResult
from robot_rl.registry import ENVS
from robot_rl.specs import ActionSpec, ArraySpec, ObsSpec


@dataclass
class PointReachConfig(EnvConfig):
    name: str = "point_reach"
    max_episode_steps: int = 50
    goal_radius: float = 0.1
    """Success when the point is within this distance of the goal."""
    max_speed: float = 0.1
    """Displacement per step at full action."""
    control_hz: float = 20.0
    """Nominal control rate (used when the actor runs in real time)."""


store("env", "point_reach", PointReachConfig)


class PointReach:
    """State: ``[x, y, goal_x, goal_y, dx, dy]`` in the unit square; action: ``(2,)`` in [-1, 1]."""

    task = "move the point to the goal"

    def __init__(self, cfg: PointReachConfig = PointReachConfig(), seed: int | None = None) -> None:
        self.cfg = cfg
        self.control_hz = cfg.control_hz
        self.max_episode_steps = cfg.max_episode_steps
        fields = {"state": ArraySpec((6,), "float32")}
        if cfg.obs == "pixels":
            fields["images/top"] = ArraySpec((cfg.image_size, cfg.image_size, 3), "uint8")
        elif cfg.obs != "state":
            raise ValueError(f"obs must be 'state' or 'pixels', got {cfg.obs!r}")
        self.obs_spec = ObsSpec(fields)
        self.action_spec = ActionSpec((2,), (-1.0, -1.0), (1.0, 1.0), ("vx", "vy"))
        self._rng = np.random.default_rng(cfg.seed if seed is None else seed)
        self._pos = np.zeros(2)
        self._goal = np.zeros(2)
        self._t = 0

    def _obs(self) -> dict[str, np.ndarray]:
        delta = self._goal - self._pos
        obs = {"state": np.concatenate([self._pos, self._goal, delta]).astype(np.float32)}
        if self.cfg.obs == "pixels":
            obs["images/top"] = self._draw(self.cfg.image_size, 1)
        return obs

    def _draw(self, s: int, r: int) -> np.ndarray:
        """Top-down ``(s, s, 3)`` uint8 image: goal green, point red, each a square of half-width ``r``."""
        img = np.zeros((s, s, 3), np.uint8)
        for (x, y), colour in ((self._goal, (0, 255, 0)), (self._pos, (255, 0, 0))):
            i, j = int(np.clip(y * (s - 1), 0, s - 1)), int(np.clip(x * (s - 1), 0, s - 1))
            img[max(i - r, 0):i + r + 1, max(j - r, 0):j + r + 1] = colour
        return img

    def render(self, camera: str = "top", size: int = 128) -> np.ndarray:  # noqa: ARG002 (one camera)
        """Top-down RGB frame ``(size, size, 3)`` uint8 for evaluation videos (whatever ``obs`` is)."""
        return self._draw(size, max(1, size // 32))

    def reset(self, *, seed: int | None = None) -> dict[str, np.ndarray]:
        if seed is not None:
            self._rng = np.random.default_rng(seed)
        self._pos = self._rng.uniform(0.1, 0.9, 2)
        self._goal = self._rng.uniform(0.1, 0.9, 2)
        while np.linalg.norm(self._goal - self._pos) < 3 * self.cfg.goal_radius:
            self._goal = self._rng.uniform(0.1, 0.9, 2)
        self._t = 0
        return self._obs()

    def step(self, action: np.ndarray) -> StepResult:
        action = np.clip(np.asarray(action, np.float64), -1.0, 1.0)
        if not np.isfinite(action).all():
            raise ValueError(f"non-finite action {action}")
        self._pos = np.clip(self._pos + self.cfg.max_speed * action, 0.0, 1.0)
        self._t += 1
        success = bool(np.linalg.norm(self._goal - self._pos) < self.cfg.goal_radius)
        truncated = (not success) and self._t >= self.max_episode_steps
        return StepResult(self._obs(), float(success), success, truncated, success)

    def close(self) -> None:
        pass

    def expert(self) -> "PointReachExpert":
        return PointReachExpert()


class PointReachExpert:
    """Scripted expert: head straight for the goal at full speed."""

    def reset(self) -> None:
        pass

    def progress(self, obs: dict[str, np.ndarray]) -> float:
        """Task potential: minus the distance to the goal."""
        return -float(np.linalg.norm(obs["state"][..., 4:6]))

    def act(self, obs: dict[str, np.ndarray]) -> np.ndarray:
        delta = obs["state"][..., 4:6]
        norm = np.maximum(np.linalg.norm(delta, axis=-1, keepdims=True), 1e-6)
        return np.clip(delta / norm, -1, 1).astype(np.float32)


@ENVS.register("point_reach")
def make_point_reach(cfg: PointReachConfig, seed: int | None = None) -> PointReach:
    return PointReach(cfg, seed)
