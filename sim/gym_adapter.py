"""Bring your own env: any Gymnasium env id as a :class:`robot_rl.env.RobotEnv` (registered as ``gym``).

Observations (Box, Dict, nested Dict) are flattened onto ``state`` / ``images/<camera>`` by the rule in
:mod:`robot_rl.sim.gym_spaces` (nested keys join with ``/``; images keep their own key as camera name;
``key_map`` renames cameras or drops paths); ``GymAdapter.state_layout`` says which slice of ``state`` is which.

Actions: the policy acts in [-1, 1]^n and the adapter rescales affinely into the env's Box bounds when every
bound is finite and ``rescale_actions`` is on; otherwise the spec keeps the env's own bounds and actions pass
through unchanged (an unbounded dimension gets [-1, 1] in the spec, as policies need finite bounds).
``action_names`` names the dimensions (``[dx, dy, dz, grip]``: teleop and ``policy.discrete_gripper`` find the
gripper by name). Non-finite actions raise ValueError before they reach the env.

Success, first that applies: ``success_fn`` (``package.module:function`` called as
``fn(env, obs, reward, terminated, info) -> bool`` with the Gymnasium env and its raw observation);
``info[success_key]``; ``info["is_success"]`` (Gymnasium-Robotics, SB3) or ``info["success"]`` (Meta-World);
else False. Episodes truncate on the env's own time limit or after ``max_episode_steps`` steps (when > 0).

Rendering (the eval video): an image in the last observation when the camera asked for is one, else the env's
``render()`` (needs ``kwargs.render_mode=rgb_array``); a ``render()`` returning one frame per camera (a list or
an (N, H, W, 3) array) is picked from by ``render_cameras`` (their names, in order) and ``render_camera``.

Scripted expert (``robot-rl demos``, and demos before ``robot-rl train``): ``expert=package.module:make_expert``
names a callable ``make_expert(env)`` (the Gymnasium env) returning an object with ``act(obs) -> action`` (and
optionally ``reset()``) that works in the env's own terms: the raw observation in, an action in the env's own
units out. The adapter converts that action into the policy's [-1, 1] space for the demo store.
"""
from __future__ import annotations

import importlib
import logging
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from robot_rl.config import EnvConfig, store
from robot_rl.env import StepResult
from robot_rl.registry import ENVS
from robot_rl.sim.gym_spaces import ObservationFlattener, to_rgb
from robot_rl.specs import IMAGE_PREFIX, ActionSpec

log = logging.getLogger("robot_rl.sim.gym")
_LAYOUTS_LOGGED: set[tuple] = set()


@dataclass
class GymEnvConfig(EnvConfig):
    """A Gymnasium env id, its constructor kwargs, optional wrappers and how its observation keys map to ours."""

    name: str = "gym"
    env_id: str = "Pendulum-v1"
    """Registered Gymnasium id (``gymnasium.make(env_id, **kwargs)``); import the plugin package via ``module``."""
    module: str = ""
    """Module to import first so that its envs register themselves (e.g. ``gymnasium_robotics``)."""
    kwargs: dict[str, Any] = field(default_factory=dict)
    """Keyword arguments of ``gymnasium.make`` (``+env.kwargs.render_mode=rgb_array``)."""
    wrappers: tuple[str, ...] = ()
    """Wrappers applied in order, as ``package.module:ClassName`` (e.g. ``gymnasium.wrappers:AddRenderObservation``)."""
    wrapper_kwargs: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Keyword arguments per wrapper, keyed by the same ``package.module:ClassName`` string."""
    key_map: dict[str, str] = field(default_factory=dict)
    """Observation path (nested keys joined with ``/``) -> camera name (``pixels/front: front`` gives
    ``images/front``); ``""`` drops the path and everything under it."""
    image_key: str = "camera"
    """Camera name of a plain image Box observation (``images/<image_key>``)."""
    rescale_actions: bool = True
    """Map policy actions in [-1, 1] onto the env's finite Box bounds (else keep the env's bounds)."""
    action_names: tuple[str, ...] = ()
    """One name per action dimension (``[dx, dy, dz, grip]``); teleop and ``policy.discrete_gripper`` look for
    the gripper by name (``grip...``). Empty: unnamed."""
    success_key: str = ""
    """``info`` key holding the task's success flag (``succeed``); empty: ``is_success``, then ``success``."""
    success_fn: str = ""
    """``package.module:function`` deciding success instead, called ``fn(env, obs, reward, terminated, info)``
    with the Gymnasium env and its raw observation; empty: use the ``info`` key."""
    render_cameras: tuple[str, ...] = ()
    """Names of the frames ``render()`` returns when it returns one per camera (a list or (N, H, W, 3) array),
    in order (``[front, wrist]``)."""
    render_camera: str = ""
    """Camera the eval video shows when the one asked for is not there; empty: the first frame."""
    expert: str = ""
    """``package.module:make_expert``: scripted expert factory for demos (see the module docstring); empty: none."""
    control_hz: float = 0.0
    """Control rate reported to the actor; 0 takes the env's ``metadata['render_fps']`` (or 10 Hz)."""
    task: str = ""
    """Natural-language task description; empty uses the env id."""
    max_episode_steps: int = 0
    """Extra time limit in steps (0: only the env's own TimeLimit)."""


store("env", "gym", GymEnvConfig)


class RenderUnavailable(RuntimeError):
    """The env draws no frames (no ``render_mode=rgb_array``): videos are skipped, not fatal."""


def import_attribute(path: str, what: str = "wrapper") -> Any:
    """``package.module:Name`` -> the object (a clear error for any other spelling or a missing name)."""
    module, _, attribute = path.partition(":")
    if not module or not attribute:
        raise ValueError(f"{what} {path!r} must be written 'package.module:Name'")
    try:
        return getattr(importlib.import_module(module), attribute)
    except AttributeError:
        raise ValueError(f"{what} {path!r}: module {module!r} has no {attribute!r}") from None


class GymExpert:
    """A user's scripted expert (env terms: raw observation in, env-unit action out) as a ScriptedPolicy."""

    def __init__(self, adapter: "GymAdapter", inner: Any) -> None:
        if not callable(getattr(inner, "act", None)):
            raise ValueError(f"env.expert={adapter.cfg.expert!r} must return an object with act(obs); "
                             f"got {type(inner).__name__}")
        self.adapter, self.inner = adapter, inner

    def reset(self) -> None:
        reset = getattr(self.inner, "reset", None)
        if callable(reset):
            reset()

    def act(self, obs: dict[str, np.ndarray]) -> np.ndarray:  # noqa: ARG002 (the expert reads the raw obs)
        return self.adapter.to_policy_action(self.inner.act(self.adapter.last_raw_obs))


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
            env = import_attribute(wrapper)(env, **dict(cfg.wrapper_kwargs.get(wrapper, {})))
        self.env = env
        self.task = cfg.task or f"solve {cfg.env_id}"
        self.control_hz = float(cfg.control_hz or env.metadata.get("render_fps") or 10.0)
        own_limit = env.spec.max_episode_steps if env.spec is not None else None
        limits = [n for n in (own_limit, cfg.max_episode_steps) if n]
        self.max_episode_steps = int(min(limits)) if limits else 1000

        self.flattener = ObservationFlattener(env.observation_space, cfg.key_map, cfg.image_key)
        self.obs_spec = self.flattener.obs_spec
        self.state_layout = self.flattener.state_layout
        """``(observation path, start, stop)`` of each piece of ``state``."""
        layout = (cfg.env_id, tuple(self.obs_spec.keys()), tuple(self.state_layout))
        if layout not in _LAYOUTS_LOGGED:  # once per process: train, eval and every actor env build one
            _LAYOUTS_LOGGED.add(layout)
            log.info("%s observation -> %s; state layout %s", cfg.env_id, self.obs_spec.keys(), self.state_layout)

        action_space = env.action_space
        if not isinstance(action_space, spaces.Box):
            raise ValueError(f"unsupported action space {action_space} (continuous Box only)")
        self._action_shape = action_space.shape
        low = action_space.low.astype(np.float64).reshape(-1)
        high = action_space.high.astype(np.float64).reshape(-1)
        if cfg.action_names and len(cfg.action_names) != low.size:
            raise ValueError(f"env.action_names has {len(cfg.action_names)} names {list(cfg.action_names)} for "
                             f"{low.size} action dimensions")
        bounded = bool(np.isfinite(low).all() and np.isfinite(high).all())
        self._rescale = cfg.rescale_actions and bounded
        self._env_low, self._env_high = low, high
        names = tuple(cfg.action_names)
        if self._rescale:
            self.action_spec = ActionSpec((low.size,), (-1.0,) * low.size, (1.0,) * low.size, names)
        else:
            self.action_spec = ActionSpec((low.size,), tuple(np.where(np.isfinite(low), low, -1.0)),
                                          tuple(np.where(np.isfinite(high), high, 1.0)), names)
        self._env_action_dtype = action_space.dtype
        self._success_fn: Callable[..., Any] | None = (
            import_attribute(cfg.success_fn, "env.success_fn") if cfg.success_fn else None)
        self._warned_success_key = False
        if cfg.expert:
            # Only envs with an expert have ``expert`` (the RobotEnv protocol's optional method).
            factory = import_attribute(cfg.expert, "env.expert")
            self.expert = lambda: GymExpert(self, factory(self.env))
        self._next_seed = cfg.seed if seed is None else seed
        self._steps = 0
        self._last_obs: dict[str, np.ndarray] = {}
        self.last_raw_obs: Any = None
        """The env's own observation from the last reset/step (what a scripted expert reads)."""

    def _convert(self, raw: Any) -> dict[str, np.ndarray]:
        self.last_raw_obs = raw
        self._last_obs = self.flattener.convert(raw)
        return self._last_obs

    def to_policy_action(self, env_action: Any) -> np.ndarray:
        """An action in the env's own units -> the policy's space (inverse of the rescale), float32 (A,)."""
        action = np.asarray(env_action, np.float64).reshape(-1)
        if action.size != self.action_spec.dim:
            raise ValueError(f"expert action has {action.size} entries, expected {self.action_spec.dim}")
        if self._rescale:
            action = 2.0 * (action - self._env_low) / (self._env_high - self._env_low) - 1.0
        return np.clip(action, self.action_spec.low_array(), self.action_spec.high_array()).astype(np.float32)

    def reset(self, *, seed: int | None = None) -> dict[str, np.ndarray]:
        # The first reset seeds the env with the configured seed; later ones continue its RNG unless given one.
        if seed is None:
            seed, self._next_seed = self._next_seed, None
        raw, _ = self.env.reset(seed=seed)
        self._steps = 0
        return self._convert(raw)

    def _success(self, raw: Any, reward: float, terminated: bool, info: dict[str, Any]) -> bool:
        if self._success_fn is not None:
            return bool(self._success_fn(self.env, raw, reward, terminated, info))
        key = self.cfg.success_key
        if key:
            if key not in info and not self._warned_success_key:
                self._warned_success_key = True  # a typo would otherwise read as "never succeeds"
                log.warning("env.success_key=%r is not in %s's info (keys: %s); counting it as False",
                            key, self.cfg.env_id, sorted(info))
            return bool(info.get(key, False))
        return bool(info.get("is_success", info.get("success", False)))

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
        success = self._success(raw, float(reward), bool(terminated), info)
        truncated = bool(truncated) or (self._steps >= self.max_episode_steps and not terminated)
        return StepResult(self._convert(raw), float(reward), bool(terminated), truncated, success)

    def _pick_frame(self, frames: Any, camera: str | None) -> np.ndarray:
        """One (H, W, 3) frame from what ``render()`` returned: one frame, or one per camera."""
        if isinstance(frames, (list, tuple)) or (isinstance(frames, np.ndarray) and frames.ndim == 4):
            names = tuple(self.cfg.render_cameras)
            if names and len(names) != len(frames):
                raise ValueError(f"render() returned {len(frames)} frames but env.render_cameras names "
                                 f"{len(names)}: {list(names)}")
            for wanted in (camera, self.cfg.render_camera):
                if wanted and wanted in names:
                    return np.asarray(frames[names.index(wanted)])
            if self.cfg.render_camera:
                raise ValueError(f"env.render_camera={self.cfg.render_camera!r} is not in "
                                 f"env.render_cameras={list(names)}")
            return np.asarray(frames[0])
        return np.asarray(frames)

    def render(self, camera: str | None = None, size: int | None = None) -> np.ndarray:
        """(H, W, 3) uint8: the last observation's ``images/<camera>`` when it has one, else the env's own
        ``rgb_array`` frame (the named one of a per-camera list). ``size`` (px, square) resamples by nearest
        neighbour; None keeps the native resolution. Raises :class:`RenderUnavailable` without frames."""
        if camera is not None and IMAGE_PREFIX + camera in self._last_obs:
            frame = self._last_obs[IMAGE_PREFIX + camera]
        else:
            frames = self.env.render()
            if frames is None:
                raise RenderUnavailable(f"{self.cfg.env_id} renders nothing (render_mode="
                                        f"{self.env.render_mode!r}): pass +env.kwargs.render_mode=rgb_array")
            frame = np.asarray(self._pick_frame(frames, camera))
            if frame.dtype != np.uint8:
                raise ValueError(f"{self.cfg.env_id} render() gave {frame.dtype} frames; expected uint8 RGB")
            frame = to_rgb(frame)
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
