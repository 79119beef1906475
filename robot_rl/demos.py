"""Scripted-expert demonstrations written to an episode store (``robot-rl demos``, and before ``train``)."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Callable

import numpy as np

from robot_rl.actor import env_seed
from robot_rl.episode_store import EpisodeStore
from robot_rl.registry import ENVS
from robot_rl.specs import spec_hash
from robot_rl.types import Episode, Transition

log = logging.getLogger("robot_rl.demos")


def record_episode(env: Any, policy: Any, seed: int, actor_id: str, episode_id: int) -> tuple[list[Transition], bool]:
    obs = env.reset(seed=seed)
    policy.reset()
    transitions: list[Transition] = []
    while True:
        action = np.asarray(policy.act(obs), np.float32)
        result = env.step(action)
        transitions.append(Transition(obs, action, result.reward, result.obs, result.terminated,
                                      result.truncated, actor_id, episode_id, len(transitions)))
        obs = result.obs
        if result.terminated or result.truncated:
            return transitions, result.success


def generate_demos(cfg: Any, n: int, out: str | Path, successful_only: bool = True,
                   max_attempts_factor: int = 3, on_episode: Callable[[int], None] | None = None) -> dict[str, int]:
    """Record ``n`` expert episodes (only successful ones by default) into ``out``; ``on_episode(written)``
    after each one kept (progress display).

    Appends to an existing store (ids continue), so an interrupted run can simply be repeated.
    """
    env = ENVS.make(cfg.env.name, cfg.env, seed=cfg.env.seed)
    if not hasattr(env, "expert"):
        raise ValueError(f"env {cfg.env.name!r} has no scripted expert: record demos by hand with "
                         f"`robot-rl demos teleop=keyboard|spacemouse|gamepad ...`, or (env=gym) name one with "
                         f"env.expert=package.module:make_expert")
    store = EpisodeStore(out)
    expert = env.expert()
    sh = spec_hash(env.obs_spec, env.action_spec)
    written = successes = attempts = 0
    episode_id = store.next_episode_id("expert")
    while written < n and attempts < n * max_attempts_factor:
        transitions, success = record_episode(env, expert, env_seed(cfg.env.seed, "expert", attempts + episode_id),
                                              "expert", episode_id)
        attempts += 1
        if success or not successful_only:
            store.write(Episode.from_transitions(transitions, sh, success=success, task=env.task,
                                                 meta={"source": "scripted_expert"}))
            written += 1
            episode_id += 1
            if on_episode is not None:
                on_episode(written)
        successes += int(success)
    env.close()
    if written < n:
        log.warning("only %d of %d demos succeeded after %d attempts", written, n, attempts)
    return {"episodes": written, "successes": successes, "attempts": attempts}
