"""The environment interface every twin, adapter and real robot implements.

It is Gymnasium-shaped but typed: ``step`` returns a :class:`StepResult` with named fields (``success`` is a
first-class field, not an ``info`` key), observations follow the env's :class:`ObsSpec`, and actions are
float32 vectors inside the :class:`ActionSpec` bounds. Real robots and their MuJoCo twins share one spec.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np

from robot_rl.specs import ActionSpec, ObsSpec

Obs = dict[str, np.ndarray]


@dataclass
class StepResult:
    obs: Obs
    """Observation after the action."""
    reward: float
    """Task reward (sparse success reward for the twins)."""
    terminated: bool
    """MDP ended (success or unrecoverable failure)."""
    truncated: bool
    """Time limit reached (or an external reset): bootstrapping from ``obs`` stays valid."""
    success: bool
    """The task's success condition holds at ``obs``."""


@runtime_checkable
class RobotEnv(Protocol):
    obs_spec: ObsSpec
    action_spec: ActionSpec
    control_hz: float
    """Control rate the actor steps this env at (real time for robots; as fast as possible in sim)."""
    max_episode_steps: int
    task: str
    """Natural-language task description."""

    def reset(self, *, seed: int | None = None) -> Obs: ...

    def step(self, action: np.ndarray) -> StepResult: ...

    def close(self) -> None: ...

    # Optional: ``expert() -> ScriptedPolicy`` for envs with a scripted expert (sim twins), and
    # ``render(camera: str) -> np.ndarray`` (uint8 HxWx3) for videos.


class ScriptedPolicy(Protocol):
    """A scripted expert (or any non-learned controller) with the policy's act interface."""

    def reset(self) -> None: ...

    def act(self, obs: Obs) -> np.ndarray: ...
