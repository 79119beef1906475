"""VLAC's graded human-in-the-loop protocol: how each episode starts and who drives it.

1. **Offline demo replay** (``demo_replay_episodes``): the first episodes reset to a recorded demo's start
   and replay its actions open loop. They are the operator's actions (``intervened=True``, the policy's
   proposal at each step kept), executed on today's robot/twin, so they reach the demo buffer as fresh data.
2. **Return-and-explore** (``return_prob``): an episode starts, with that chance, from a state where the
   policy failed: the states at which an operator had to take over. The policy explores from the hard part
   instead of from the start. The twin resets there exactly (``set_state``); a real robot cannot.
3. **Human-guided exploration** (``guided``): during the policy's episodes the operator may take over.
"""
from __future__ import annotations

import logging
from collections import deque
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger("robot_rl.teleop")

DEMO_REPLAY, RETURN_EXPLORE, EXPLORE = "demo_replay", "return_explore", "explore"


class GradedProtocol:
    def __init__(self, cfg: Any, demo_dir: str | Path | None, rng: np.random.Generator, spec_hash: str,
                 num_envs: int) -> None:
        if not 0.0 <= cfg.return_prob <= 1.0:
            raise ValueError(f"hil.protocol.return_prob must be in [0, 1], got {cfg.return_prob}")
        self.cfg, self.rng = cfg, rng
        self.demos: list[Any] = []
        if cfg.demo_replay_episodes > 0:
            from robot_rl.episode_store import EpisodeStore

            if not demo_dir or not Path(demo_dir).is_dir():
                raise ValueError(f"hil.protocol.demo_replay_episodes={cfg.demo_replay_episodes} needs demos; "
                                 f"no episode store at {demo_dir!r} (set hil.protocol.demos)")
            self.demos = list(EpisodeStore(demo_dir).episodes(spec_hash=spec_hash))
            if not self.demos:
                raise ValueError(f"no demos for this task's spec in {demo_dir}")
        self.failure_states: deque[np.ndarray] = deque(maxlen=max(cfg.failure_states, 1))
        self.episodes_started = 0
        self.mode = [EXPLORE] * num_envs
        self._replay: list[tuple[np.ndarray, int] | None] = [None] * num_envs

    def start_episode(self, j: int, env: Any, seed: int) -> dict[str, np.ndarray]:
        """Reset env ``j`` for its next episode according to the protocol; returns the first observation."""
        k = self.episodes_started
        self.episodes_started += 1
        if k < self.cfg.demo_replay_episodes:
            if not hasattr(env, "reset_like"):
                raise ValueError(f"demo replay needs an env with reset_like (the twins); {type(env).__name__} "
                                 "has none")
            demo = self.demos[k % len(self.demos)]
            self.mode[j], self._replay[j] = DEMO_REPLAY, (demo.action, 0)
            return env.reset_like(demo.frames["state"][0], seed=seed)
        self._replay[j] = None
        if self.failure_states and self.rng.random() < self.cfg.return_prob:
            state = self.failure_states[int(self.rng.integers(len(self.failure_states)))]
            env.reset(seed=seed)  # this episode's randomised model, then the failure state on top
            self.mode[j] = RETURN_EXPLORE
            return env.set_state(state)
        self.mode[j] = EXPLORE
        return env.reset(seed=seed)

    def replay_action(self, j: int) -> np.ndarray | None:
        """Next recorded action of env ``j``'s demo replay (None when not replaying)."""
        replay = self._replay[j]
        if replay is None:
            return None
        actions, i = replay
        if i >= len(actions):
            return None
        self._replay[j] = (actions, i + 1)
        return np.asarray(actions[i], np.float32)

    def replay_finished(self, j: int) -> bool:
        replay = self._replay[j]
        return replay is not None and replay[1] >= len(replay[0])

    def remember_failure(self, env: Any) -> None:
        """The operator had to take over here: a state worth returning to."""
        if self.cfg.return_prob > 0.0:
            if not hasattr(env, "get_state"):
                raise ValueError(f"return-and-explore needs an env with get_state/set_state (the twins); "
                                 f"{type(env).__name__} has none")
            self.failure_states.append(env.get_state())
