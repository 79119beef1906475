"""Bring your own env: any Gymnasium env id as a :class:`robot_rl.env.RobotEnv` (registered as ``gym``).

Observation mapping (to the flat ``state`` / ``images/<camera>`` dict of :class:`robot_rl.specs.ObsSpec`):

* ``Box`` observation: an (H, W, 3) uint8 Box becomes ``images/<image_key>``; anything else is flattened into
  ``state`` (float32).
* ``Dict`` observation, key by key: (H, W, 3) uint8 Boxes become ``images/<key>`` (renamed through ``key_map``);
  every other Box is flattened and the pieces are concatenated into ``state`` in sorted key order. A key mapped
  to ``""`` in ``key_map`` is dropped.
* Other spaces (Discrete, Tuple, nested Dict) are rejected with a ValueError naming the key.

Actions: the policy acts in [-1, 1]^n and the adapter rescales affinely into the env's Box bounds when every
bound is finite and ``rescale_actions`` is on; otherwise the spec keeps the env's own bounds and actions pass
through unchanged (an unbounded dimension gets [-1, 1] in the spec, as policies need finite bounds).
Non-finite actions raise ValueError before they reach the env.

``success`` is ``info["is_success"]`` (Gymnasium-Robotics, SB3 convention) or ``info["success"]`` (Meta-World)
when present, else False. Episodes truncate on the env's own time limit or after ``max_episode_steps`` steps
(when > 0), whichever comes first.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from robot_rl.config import EnvConfig, store
from robot_rl.env import StepResult
from robot_rl.registry import ENVS
from robot_rl.specs import IMAGE_PREFIX, ActionSpec, ArraySpec, ObsSpec


@dataclass
class GymEnvConfig(EnvConfig):
    """A Gymnasium env id, its constructor kwargs, optional wrappers and how its observation keys map to ours."""

    name: str = "gym"
    env_id: str = "Pendulum-v1"
    """Registered Gymnasium id (``gymnasium.make(env_id, **kwargs)``); import the plugin package via ``module``."""
    module: str = ""
    """Module to import first so that its envs register themselves (e.g. ``gymnasium_robotics``)."""
    kwargs: dict[str, Any] = field(default_factory=dict)
    """Keyword arguments of ``gymnasium.make`` (e.g. ``render_mode: rgb_array``)."""
    wrappers: tuple[str, ...] = ()
    """Wrappers applied in order, as ``package.module:ClassName`` (e.g. ``gymnasium.wrappers:AddRenderObservation``)."""
    wrapper_kwargs: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Keyword arguments per wrapper, keyed by the same ``package.module:ClassName`` string."""
    key_map: dict[str, str] = field(default_factory=dict)
    """Dict-observation key -> camera name for images (``pixels: front`` gives ``images/front``); ``""`` drops it."""
    image_key: str = "camera"
    """Camera name of a plain image Box observation (``images/<image_key>``)."""
    rescale_actions: bool = True
    """Map policy actions in [-1, 1] onto the env's finite Box bounds (else keep the env's bounds)."""
    control_hz: float = 0.0
    """Control rate reported to the actor; 0 takes the env's ``metadata['render_fps']`` (or 10 Hz)."""
    task: str = ""
    """Natural-language task description; empty uses the env id."""
    max_episode_steps: int = 0
    """Extra time limit in steps (0: only the env's own TimeLimit)."""


store("env", "gym", GymEnvConfig)


def _is_image(space: Any) -> bool:
    return (space.__class__.__name__ == "Box" and len(space.shape) == 3 and space.shape[2] == 3
            and space.dtype == np.uint8)


def _import_attribute(path: str) -> Any:
    module, _, attribute = path.partition(":")
    if not attribute:
        raise ValueError(f"wrapper {path!r} must be written 'package.module:ClassName'")
    return getattr(importlib.import_module(module), attribute)


class GymAdapter:
    """Wraps ``gymnasium.make(cfg.env_id, **cfg.kwargs)`` (+ wrappers) behind the RobotEnv interface."""

    def __init__(self, cfg: GymEnvConfig | None = None, seed: int | None = None) -> None:
        import gymnasium as gym
        from gymnasium import spaces

        cfg = cfg if cfg is not None else GymEnvConfig()
        self.cfg = cfg
        if cfg.module:
            importlib.import_module(cfg.module)
        env = gym.make(cfg.env_id, **dict(cfg.kwargs))
        for wrapper in cfg.wrappers:
            env = _import_attribute(wrapper)(env, **dict(cfg.wrapper_kwargs.get(wrapper, {})))
        self.env = env
        self.task = cfg.task or f"solve {cfg.env_id}"
        self.control_hz = float(cfg.control_hz or env.metadata.get("render_fps") or 10.0)
        own_limit = env.spec.max_episode_steps if env.spec is not None else None
        limits = [n for n in (own_limit, cfg.max_episode_steps) if n]
        self.max_episode_steps = int(min(limits)) if limits else 1000

        # Observation plan: (gym key or None for a Box obs, our key) for images; gym keys forming `state`.
        space = env.observation_space
        self._image_sources: list[tuple[str | None, str]] = []
        self._state_sources: list[str | None] = []
        if isinstance(space, spaces.Dict):
            for key in sorted(space.spaces):
                sub = space.spaces[key]
                target = cfg.key_map.get(key, key)
                if target == "":
                    continue
                if not isinstance(sub, spaces.Box):
                    raise ValueError(f"observation key {key!r}: unsupported space {sub} (Box only)")
                if _is_image(sub):
                    self._image_sources.append((key, IMAGE_PREFIX + target))
                else:
                    self._state_sources.append(key)
        elif isinstance(space, spaces.Box):
            if _is_image(space):
                self._image_sources.append((None, IMAGE_PREFIX + cfg.image_key))
            else:
                self._state_sources.append(None)
        else:
            raise ValueError(f"unsupported observation space {space} (Box or Dict of Boxes)")
        fields: dict[str, ArraySpec] = {}
        if self._state_sources:
            subspaces = [space if key is None else space.spaces[key] for key in self._state_sources]
            fields["state"] = ArraySpec((sum(int(np.prod(s.shape)) for s in subspaces),), "float32")
        for key, name in self._image_sources:
            fields[name] = ArraySpec((space if key is None else space.spaces[key]).shape, "uint8")
        self.obs_spec = ObsSpec(fields)

        action_space = env.action_space
        if not isinstance(action_space, spaces.Box):
            raise ValueError(f"unsupported action space {action_space} (continuous Box only)")
        self._action_shape = action_space.shape
        low = action_space.low.astype(np.float64).reshape(-1)
        high = action_space.high.astype(np.float64).reshape(-1)
        bounded = bool(np.isfinite(low).all() and np.isfinite(high).all())
        self._rescale = cfg.rescale_actions and bounded
        self._env_low, self._env_high = low, high
        if self._rescale:
            self.action_spec = ActionSpec((low.size,), (-1.0,) * low.size, (1.0,) * low.size)
        else:
            self.action_spec = ActionSpec((low.size,), tuple(np.where(np.isfinite(low), low, -1.0)),
                                          tuple(np.where(np.isfinite(high), high, 1.0)))
        self._env_action_dtype = action_space.dtype
        self._next_seed = cfg.seed if seed is None else seed
        self._steps = 0
        self._last_obs: dict[str, np.ndarray] = {}

    def _convert(self, raw: Any) -> dict[str, np.ndarray]:
        obs: dict[str, np.ndarray] = {}
        if self._state_sources:
            pieces = [np.asarray(raw if key is None else raw[key], np.float64).reshape(-1)
                      for key in self._state_sources]
            obs["state"] = np.concatenate(pieces).astype(np.float32)
        for key, name in self._image_sources:
            obs[name] = np.ascontiguousarray(raw if key is None else raw[key], dtype=np.uint8)
        self._last_obs = obs
        return obs

    def reset(self, *, seed: int | None = None) -> dict[str, np.ndarray]:
        # The first reset seeds the env with the configured seed; later ones continue its RNG unless given one.
        if seed is None:
            seed, self._next_seed = self._next_seed, None
        raw, _ = self.env.reset(seed=seed)
        self._steps = 0
        return self._convert(raw)

    def step(self, action: np.ndarray) -> StepResult:
        action = np.asarray(action, np.float64).reshape(-1)
        if action.size != self.action_spec.dim:
            raise ValueError(f"action has {action.size} entries, expected {self.action_spec.dim}")
        if not np.isfinite(action).all():
            raise ValueError(f"non-finite action {action}")
        action = np.clip(action, self.action_spec.low_array(), self.action_spec.high_array())
        if self._rescale:
            action = self._env_low + (action + 1.0) * 0.5 * (self._env_high - self._env_low)
        raw, reward, terminated, truncated, info = self.env.step(
            action.astype(self._env_action_dtype).reshape(self._action_shape))
        self._steps += 1
        success = bool(info.get("is_success", info.get("success", False)))
        truncated = bool(truncated) or (self._steps >= self.max_episode_steps and not terminated)
        return StepResult(self._convert(raw), float(reward), bool(terminated), truncated, success)

    def render(self, camera: str | None = None, size: int | None = None) -> np.ndarray:
        """The last observation's ``images/<camera>`` when it has one, else the env's own ``rgb_array`` frame.

        ``size`` (px, square) resamples the frame by nearest neighbour; None keeps the native resolution.
        """
        if camera is not None and IMAGE_PREFIX + camera in self._last_obs:
            frame = self._last_obs[IMAGE_PREFIX + camera]
        else:
            frame = self.env.render()
            if frame is None:
                raise RuntimeError(f"{self.cfg.env_id} renders nothing: pass kwargs.render_mode=rgb_array")
        frame = np.asarray(frame, np.uint8)
        if size is not None:
            rows = np.arange(size) * frame.shape[0] // size
            cols = np.arange(size) * frame.shape[1] // size
            frame = frame[rows][:, cols]
        return frame

    def close(self) -> None:
        self.env.close()


@ENVS.register("gym")
def make_gym_env(cfg: GymEnvConfig, seed: int | None = None) -> GymAdapter:
    return GymAdapter(cfg, seed)
