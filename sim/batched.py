"""Batched environments: ``num_envs`` copies of a task stepped together, as tensors on the simulator's device.

Every batched backend (the vectorised CPU twin here, the MuJoCo Warp twin in :mod:`robot_rl.sim.pick_cube_warp`,
Isaac Lab tasks in :mod:`robot_rl.sim.isaac_lab`) implements :class:`BatchedEnv`:

- observations follow the single env's :class:`ObsSpec`, with a leading ``num_envs`` dimension: ``state`` is
  ``(N, S)`` float32, ``images/<camera>`` ``(N, H, W, 3)`` uint8; actions are ``(N, A)`` float32 within the
  same :class:`ActionSpec` bounds;
- ``step`` auto-resets every env whose episode ended (same-step reset, as Isaac Lab and MuJoCo Playground do):
  ``obs`` holds the first observation of the new episode for those rows and ``final_obs`` the observation
  the action actually led to (what a transition's ``next_obs`` must be); ``success``, ``terminated`` and
  ``truncated`` are ``(N,)`` bool tensors describing the step that was taken.

No per-env Python loop is needed by a consumer: policies act on the whole batch, replay takes whole rows.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Protocol, Sequence, runtime_checkable

import numpy as np
import torch

from robot_rl.env import RobotEnv
from robot_rl.specs import ActionSpec, ObsSpec

TensorObs = dict[str, torch.Tensor]


@dataclass
class BatchedStep:
    """The result of one :meth:`BatchedEnv.step` (all tensors on the env's device, leading dim ``N``)."""

    obs: TensorObs
    """Observation to act on next: the reset observation for rows that finished an episode this step."""
    final_obs: TensorObs
    """Observation the action led to (equals ``obs`` on rows that did not reset): a transition's next_obs."""
    reward: torch.Tensor
    """(N,) float32 task reward."""
    terminated: torch.Tensor
    """(N,) bool: the MDP ended (success or failure); do not bootstrap from ``final_obs``."""
    truncated: torch.Tensor
    """(N,) bool: time limit reached (bootstrapping from ``final_obs`` stays valid)."""
    success: torch.Tensor
    """(N,) bool: the task's success condition holds at ``final_obs``."""

    @property
    def done(self) -> torch.Tensor:
        """(N,) bool: rows that were auto-reset this step."""
        return self.terminated | self.truncated


@runtime_checkable
class BatchedEnv(Protocol):
    num_envs: int
    device: torch.device
    """Where observations, rewards and flags live; actions may be given on any device."""
    obs_spec: ObsSpec
    """Per-env spec: the same object the single-env twin (and the real robot) has."""
    action_spec: ActionSpec
    control_hz: float
    max_episode_steps: int
    task: str

    def reset(self, *, seed: int | None = None) -> TensorObs:
        """Reset all envs (env ``j`` seeded from ``seed`` and ``j``); returns ``(N, ...)`` observations."""
        ...

    def step(self, action: torch.Tensor) -> BatchedStep: ...

    def close(self) -> None: ...


def check_actions(action: Any, num_envs: int, spec: ActionSpec, device: torch.device) -> torch.Tensor:
    """``(N, A)`` float32 actions on ``device``, clipped into the spec bounds; fails loudly on a wrong shape
    or a NaN/inf entry (a non-finite action must never reach a controller)."""
    action = torch.as_tensor(action, dtype=torch.float32, device=device)
    if tuple(action.shape) != (num_envs, *spec.shape):
        raise ValueError(f"actions must be shaped {(num_envs, *spec.shape)}, got {tuple(action.shape)}")
    if not bool(torch.isfinite(action).all()):
        bad = torch.nonzero(~torch.isfinite(action).all(-1)).flatten().tolist()
        raise ValueError(f"non-finite actions for envs {bad}")
    low = torch.as_tensor(spec.low, dtype=torch.float32, device=device)
    high = torch.as_tensor(spec.high, dtype=torch.float32, device=device)
    return torch.maximum(torch.minimum(action, high), low)


def check_obs(obs: TensorObs, spec: ObsSpec, num_envs: int, what: str = "obs") -> TensorObs:
    """Fail loudly on a missing/extra key, a wrong shape or dtype, or NaN/inf in a float field."""
    if set(obs) != set(spec.fields):
        raise ValueError(f"{what}: keys {sorted(obs)} differ from the spec's {sorted(spec.fields)}")
    for key, field in spec.fields.items():
        value = obs[key]
        if tuple(value.shape) != (num_envs, *field.shape):
            raise ValueError(f"{what}[{key!r}] must be shaped {(num_envs, *field.shape)}, got {tuple(value.shape)}")
        if str(value.dtype).removeprefix("torch.") != field.dtype:
            raise ValueError(f"{what}[{key!r}] must be {field.dtype}, got {value.dtype}")
        if value.is_floating_point() and not bool(torch.isfinite(value).all()):
            raise FloatingPointError(f"{what}[{key!r}] holds NaN/inf (simulation diverged?)")
    return obs


class VectorizedTwin:
    """The CPU twin behind :class:`BatchedEnv`: N single-env instances (e.g. :class:`PandaPickCube`) stepped in
    turn, their results written into preallocated ``(N, ...)`` buffers shared zero-copy with torch.

    CPU MuJoCo cannot step several worlds in one call, so the loop over envs lives here, once, instead of in
    every consumer. Env ``j``'s ``k``-th episode is seeded ``seeds[j] + k`` (reproducible per env).
    """

    def __init__(self, make_env: Callable[[int], RobotEnv], num_envs: int, seed: int = 0,
                 seeds: Sequence[int] | None = None) -> None:
        if num_envs < 1:
            raise ValueError(f"num_envs must be >= 1, got {num_envs}")
        self.seeds = list(seeds) if seeds is not None else [seed + 1000 * j for j in range(num_envs)]
        if len(self.seeds) != num_envs:
            raise ValueError(f"got {len(self.seeds)} seeds for {num_envs} envs")
        self.envs = [make_env(s) for s in self.seeds]
        first = self.envs[0]
        self.num_envs = num_envs
        self.device = torch.device("cpu")
        self.obs_spec, self.action_spec = first.obs_spec, first.action_spec
        self.control_hz, self.max_episode_steps = float(first.control_hz), int(first.max_episode_steps)
        self.task = getattr(first, "task", "")
        # Preallocated numpy buffers (N, ...) per obs key; torch views share their memory.
        self._obs = self.obs_spec.zeros((num_envs,))
        self._final = self.obs_spec.zeros((num_envs,))
        self._reward = np.zeros(num_envs, np.float32)
        self._flags = np.zeros((3, num_envs), bool)  # terminated, truncated, success
        self._episodes = np.zeros(num_envs, np.int64)  # episodes started per env (seeds the next reset)

    def _write(self, buffers: dict[str, np.ndarray], j: int, obs: dict[str, np.ndarray]) -> None:
        for key, buf in buffers.items():
            buf[j] = obs[key]

    def reset(self, *, seed: int | None = None) -> TensorObs:
        if seed is not None:
            self.seeds = [seed + 1000 * j for j in range(self.num_envs)]
            self._episodes[:] = 0
        for j, env in enumerate(self.envs):
            self._write(self._obs, j, env.reset(seed=self.seeds[j] + int(self._episodes[j])))
            self._episodes[j] += 1
        return {k: torch.from_numpy(v.copy()) for k, v in self._obs.items()}

    def step(self, action: torch.Tensor) -> BatchedStep:
        actions = check_actions(action, self.num_envs, self.action_spec, self.device).numpy()  # (N, A)
        terminated, truncated, success = self._flags
        for j, env in enumerate(self.envs):
            result = env.step(actions[j])
            self._write(self._final, j, result.obs)
            self._reward[j] = result.reward
            terminated[j], truncated[j], success[j] = result.terminated, result.truncated, result.success
            if result.terminated or result.truncated:  # same-step auto-reset
                self._write(self._obs, j, env.reset(seed=self.seeds[j] + int(self._episodes[j])))
                self._episodes[j] += 1
            else:
                self._write(self._obs, j, result.obs)
        # Copies: the buffers are rewritten by the next step while a consumer may still hold these tensors.
        return BatchedStep(obs={k: torch.from_numpy(v.copy()) for k, v in self._obs.items()},
                           final_obs={k: torch.from_numpy(v.copy()) for k, v in self._final.items()},
                           reward=torch.from_numpy(self._reward.copy()),
                           terminated=torch.from_numpy(terminated.copy()),
                           truncated=torch.from_numpy(truncated.copy()),
                           success=torch.from_numpy(success.copy()))

    def close(self) -> None:
        for env in self.envs:
            env.close()


def make_batched_env(cfg: Any, num_envs: int, seed: int | None = None, backend: str = "cpu") -> BatchedEnv:
    """A batched env for env config ``cfg``: ``backend="cpu"`` vectorises the registered single env
    (any ``env=...``); ``"warp"`` is the MuJoCo Warp pick-cube twin (``panda_pick_cube`` configs only)."""
    base = cfg.seed if seed is None else seed
    if backend == "cpu":
        from robot_rl.registry import ENVS

        return VectorizedTwin(lambda s: ENVS.make(cfg.name, cfg, seed=s), num_envs, base)
    if backend == "warp":
        from robot_rl.sim.pick_cube_warp import PickCubeWarp

        return PickCubeWarp(cfg, num_envs, seed=base)
    raise ValueError(f"backend must be 'cpu' or 'warp', got {backend!r}")
