"""Domain randomization, action latency and observation noise for the MuJoCo twins.

:class:`ModelRandomizer` keeps the nominal values of every field it touches and, at each reset, writes
nominal x (random factor) back into the ``MjModel`` (never compounding draws across episodes). It works on
plain arrays of the model (ids resolved by the env), so this module needs no mujoco import. All draws come
from the env's seeded ``numpy.random.Generator``: a seed fixes the whole episode, randomization included.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Any

import numpy as np

from robot_rl.sim.panda_config import RandomizationConfig


@dataclass
class RandomizedIds:
    """Model element ids the randomizer touches (resolved by the env from names)."""

    cube_body: int
    friction_geoms: list[int]
    """Geoms whose sliding friction is scaled (cube, finger pads, table)."""
    colour_geoms: list[int]
    """Geoms whose RGB is perturbed (table, floor, cube)."""
    cameras: list[int]
    lights: list[int]


class ModelRandomizer:
    """Applies the physical/visual knobs of a :class:`RandomizationConfig` to a model at reset."""

    def __init__(self, model: Any, cfg: RandomizationConfig, ids: RandomizedIds) -> None:
        self.model, self.cfg, self.ids = model, cfg, ids
        self._geom_friction = model.geom_friction.copy()  # (ngeom, 3)
        self._geom_rgba = model.geom_rgba.copy()  # (ngeom, 4)
        self._body_mass = model.body_mass.copy()  # (nbody,)
        self._body_inertia = model.body_inertia.copy()  # (nbody, 3)
        self._cam_pos = model.cam_pos.copy()  # (ncam, 3)
        self._cam_fovy = model.cam_fovy.copy()  # (ncam,)
        self._light_diffuse = model.light_diffuse.copy()  # (nlight, 3)
        self._light_dir = model.light_dir.copy()  # (nlight, 3)

    def apply(self, rng: np.random.Generator) -> None:
        """Restore nominal values, then draw and write this episode's values (only for knobs that are on)."""
        m, cfg, ids = self.model, self.cfg, self.ids
        m.geom_friction[:] = self._geom_friction
        m.geom_rgba[:] = self._geom_rgba
        m.body_mass[:] = self._body_mass
        m.body_inertia[:] = self._body_inertia
        m.cam_pos[:] = self._cam_pos
        m.cam_fovy[:] = self._cam_fovy
        m.light_diffuse[:] = self._light_diffuse
        m.light_dir[:] = self._light_dir
        if cfg.friction_range > 0:
            scale = rng.uniform(1 - cfg.friction_range, 1 + cfg.friction_range, len(ids.friction_geoms))
            m.geom_friction[ids.friction_geoms, 0] = self._geom_friction[ids.friction_geoms, 0] * scale
        if cfg.mass_range > 0:
            # Scale inertia with mass: a uniformly denser/lighter cube of the same size.
            scale = rng.uniform(1 - cfg.mass_range, 1 + cfg.mass_range)
            m.body_mass[ids.cube_body] = self._body_mass[ids.cube_body] * scale
            m.body_inertia[ids.cube_body] = self._body_inertia[ids.cube_body] * scale
        if cfg.camera_pos_range > 0:
            offsets = rng.uniform(-cfg.camera_pos_range, cfg.camera_pos_range, (len(ids.cameras), 3))
            m.cam_pos[ids.cameras] = self._cam_pos[ids.cameras] + offsets
        if cfg.camera_fovy_range > 0:
            offsets = rng.uniform(-cfg.camera_fovy_range, cfg.camera_fovy_range, len(ids.cameras))
            m.cam_fovy[ids.cameras] = np.clip(self._cam_fovy[ids.cameras] + offsets, 10.0, 120.0)
        if cfg.light_range > 0:
            scale = rng.uniform(1 - cfg.light_range, 1 + cfg.light_range, (len(ids.lights), 1))
            m.light_diffuse[ids.lights] = np.clip(self._light_diffuse[ids.lights] * scale, 0.0, 1.0)
            direction = self._light_dir[ids.lights] + rng.normal(0.0, cfg.light_range, (len(ids.lights), 3))
            m.light_dir[ids.lights] = direction / np.linalg.norm(direction, axis=1, keepdims=True)
        if cfg.colour_range > 0:
            offsets = rng.uniform(-cfg.colour_range, cfg.colour_range, (len(ids.colour_geoms), 3))
            m.geom_rgba[ids.colour_geoms, :3] = np.clip(self._geom_rgba[ids.colour_geoms, :3] + offsets, 0.0, 1.0)


def sample_object_pose(rng: np.random.Generator, cfg: RandomizationConfig, nominal_xy: tuple[float, float]
                       ) -> tuple[np.ndarray, float]:
    """Cube xy (2,) and yaw (rad) for a new episode: nominal when the pose knobs are off."""
    xy = np.asarray(nominal_xy, np.float64).copy()
    if cfg.object_xy_range > 0:
        xy += rng.uniform(-cfg.object_xy_range, cfg.object_xy_range, 2)
    yaw = float(rng.uniform(-cfg.object_yaw_range, cfg.object_yaw_range)) if cfg.object_yaw_range > 0 else 0.0
    return xy, yaw


class ActionDelay:
    """A FIFO of ``steps`` actions: :meth:`push` returns the action commanded ``steps`` control steps ago.

    The queue starts filled with ``idle_action`` (hold still, gripper open), as a real robot would execute
    whatever it was doing before the policy's first command arrived.
    """

    def __init__(self, steps: int, idle_action: np.ndarray) -> None:
        if steps < 0:
            raise ValueError(f"action_delay_steps must be >= 0, got {steps}")
        self.steps = steps
        self.idle_action = np.asarray(idle_action, np.float64).copy()
        self._queue: deque[np.ndarray] = deque()
        self.reset()

    def reset(self) -> None:
        self._queue = deque(self.idle_action.copy() for _ in range(self.steps))

    def push(self, action: np.ndarray) -> np.ndarray:
        if self.steps == 0:
            return action
        self._queue.append(np.array(action, np.float64))
        return self._queue.popleft()


def add_state_noise(state: np.ndarray, std: float, rng: np.random.Generator) -> np.ndarray:
    """``state`` (float32 vector) plus N(0, std^2) noise per entry; returned unchanged when std is 0."""
    if std <= 0:
        return state
    return (state + rng.normal(0.0, std, state.shape)).astype(np.float32)
