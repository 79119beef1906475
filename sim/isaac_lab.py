"""Isaac Lab tasks behind :class:`robot_rl.sim.batched.BatchedEnv` (optional extra: Isaac Lab needs Isaac Sim and
an NVIDIA GPU, and is installed on its own, see https://isaac-sim.github.io/IsaacLab).

Isaac Lab registers its manipulation tasks with Gymnasium (``Isaac-Lift-Cube-Franka-v0``, ...) as vectorized
envs: ``reset() -> (obs, extras)`` and ``step(actions (N, A)) -> (obs, reward (N,), terminated (N,),
time_outs (N,), extras)``, tensors on the sim device, observations a dict of groups (``obs["policy"]`` is
``(N, D)``), and envs that finished reset in the same step. :class:`GymVectorAdapter` converts exactly that
layout; it also accepts any ``gymnasium.vector`` env with same-step auto-reset (numpy arrays are converted,
``extras["final_obs"]`` is used when present), which is how it is tested here.

Isaac Lab does not return the observation a finished env reached before its reset, so ``final_obs`` equals
``obs`` on reset rows there: harmless for terminated rows (no bootstrap), slightly biased for time-outs.
"""
from __future__ import annotations

from typing import Any, Callable

import numpy as np
import torch

from robot_rl.sim.batched import BatchedStep, check_actions, check_obs
from robot_rl.specs import ActionSpec, ArraySpec, ObsSpec


def isaac_lab_available() -> tuple[bool, str]:
    """(True, "") when Isaac Lab imports; else (False, why)."""
    try:
        import isaaclab  # noqa: F401
    except Exception as exc:
        return False, f"{type(exc).__name__}: {exc}"
    return True, ""


class GymVectorAdapter:
    """A vectorized Gymnasium env (Isaac Lab layout) as a :class:`BatchedEnv` with a flat ``state`` observation.

    ``obs_group`` picks the observation group of dict observations (Isaac Lab: ``policy``). ``success_fn(extras,
    terminated) -> (N,) bool`` says which rows succeeded; by default a row succeeded when it terminated (Isaac
    Lab's lift task terminates on time-outs and failures through ``time_outs``/terms, so pass a function reading
    its success term for other tasks). Infinite action bounds need ``action_bounds=(low, high)``.
    """

    def __init__(self, env: Any, *, obs_group: str = "policy", task: str = "", control_hz: float = 0.0,
                 max_episode_steps: int = 0, action_bounds: tuple[Any, Any] | None = None,
                 success_fn: Callable[[dict, torch.Tensor], torch.Tensor] | None = None,
                 device: str | torch.device | None = None) -> None:
        self.env = env
        self.num_envs = int(env.num_envs)
        self.obs_group = obs_group
        space = env.single_observation_space
        if hasattr(space, "spaces"):  # Dict space of observation groups
            space = space.spaces[obs_group]
        if len(space.shape) != 1:
            raise ValueError(f"observation group {obs_group!r} must be a flat vector, got shape {space.shape}")
        self.obs_spec = ObsSpec({"state": ArraySpec(tuple(space.shape), "float32")})
        act = env.single_action_space
        low, high = (np.asarray(b, np.float64) for b in (action_bounds or (act.low, act.high)))
        if not (np.isfinite(low).all() and np.isfinite(high).all()):
            raise ValueError("the env's action space is unbounded: pass action_bounds=(low, high)")
        self.action_spec = ActionSpec(tuple(act.shape), tuple(low.reshape(-1).tolist()), tuple(high.reshape(-1).tolist()))
        self.device = torch.device(device or getattr(getattr(env, "unwrapped", env), "device", "cpu"))
        unwrapped = getattr(env, "unwrapped", env)
        step_dt = getattr(unwrapped, "step_dt", None)
        self.control_hz = float(control_hz or (1.0 / step_dt if step_dt else 0.0))
        self.max_episode_steps = int(max_episode_steps or getattr(unwrapped, "max_episode_length", 0))
        self.task = task
        self.success_fn = success_fn or (lambda extras, terminated: terminated)

    def _state(self, obs: Any) -> torch.Tensor:
        """Env observation (tensor/array ``(N, D)``, or a dict of groups) -> ``(N, D)`` float32 on our device."""
        if isinstance(obs, dict):
            obs = obs[self.obs_group]
        return torch.as_tensor(obs, device=self.device).float()

    def reset(self, *, seed: int | None = None) -> dict[str, torch.Tensor]:
        obs, _ = self.env.reset(seed=seed)
        return check_obs({"state": self._state(obs)}, self.obs_spec, self.num_envs)

    def step(self, action: Any) -> BatchedStep:
        action = check_actions(action, self.num_envs, self.action_spec, self.device)  # (N, A)
        env_action = action if self._wants_torch() else action.cpu().numpy()
        obs, reward, terminated, truncated, extras = self.env.step(env_action)
        return self.convert(obs, reward, terminated, truncated, extras)

    def _wants_torch(self) -> bool:
        return hasattr(getattr(self.env, "unwrapped", self.env), "sim")  # Isaac Lab envs own a SimulationContext

    def convert(self, obs: Any, reward: Any, terminated: Any, truncated: Any, extras: dict) -> BatchedStep:
        """One vectorized step's outputs -> :class:`BatchedStep` (shapes and finiteness checked)."""
        n, dev = self.num_envs, self.device
        state = self._state(obs)  # (N, D)
        reward = torch.as_tensor(reward, device=dev).float().reshape(-1)  # (N,)
        terminated = torch.as_tensor(terminated, device=dev).bool().reshape(-1)  # (N,)
        truncated = torch.as_tensor(truncated, device=dev).bool().reshape(-1) & ~terminated  # (N,)
        for name, value in (("reward", reward), ("terminated", terminated), ("truncated", truncated)):
            if value.shape != (n,):
                raise ValueError(f"{name} must have {n} entries, got shape {tuple(value.shape)}")
        if not bool(torch.isfinite(reward).all()):
            raise FloatingPointError("the env returned non-finite rewards")
        final = state
        final_obs = extras.get("final_obs") if isinstance(extras, dict) else None
        if final_obs is not None:  # gymnasium same-step auto-reset: object array, None on rows that did not end
            done_rows = np.asarray(extras.get("_final_obs", [o is not None for o in final_obs]), bool)
            final = state.clone()
            for j in np.flatnonzero(done_rows):
                final[j] = self._state(final_obs[j] if not isinstance(final_obs[j], dict)
                                       else final_obs[j][self.obs_group])
        success = torch.as_tensor(self.success_fn(extras, terminated), device=dev).bool().reshape(-1)
        return BatchedStep(obs=check_obs({"state": state}, self.obs_spec, n),
                           final_obs=check_obs({"state": final}, self.obs_spec, n, "final_obs"),
                           reward=reward, terminated=terminated, truncated=truncated, success=success)

    def close(self) -> None:
        self.env.close()


def make_isaac_lab_env(task_id: str, num_envs: int, device: str = "cuda:0", headless: bool = True,
                       **adapter_kwargs: Any) -> GymVectorAdapter:
    """Launch Isaac Sim (headless), build Isaac Lab task ``task_id`` with ``num_envs`` envs, and adapt it."""
    ok, why = isaac_lab_available()
    if not ok:
        raise RuntimeError(f"Isaac Lab is not installed ({why}); see https://isaac-sim.github.io/IsaacLab")
    from isaaclab.app import AppLauncher

    AppLauncher(headless=headless)  # must start before any other isaaclab import
    import gymnasium as gym
    import isaaclab_tasks  # noqa: F401  (registers the Isaac-* task ids)
    from isaaclab_tasks.utils import parse_env_cfg

    env_cfg = parse_env_cfg(task_id, device=device, num_envs=num_envs)
    env = gym.make(task_id, cfg=env_cfg)
    return GymVectorAdapter(env, task=task_id, device=device, **adapter_kwargs)
