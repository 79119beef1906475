"""Scripted-expert demonstrations written to an episode store (``robot-rl demos``, and before ``train``)."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from robot_rl.actor import env_seed
from robot_rl.episode_store import EpisodeStore
from robot_rl.registry import ENVS
from robot_rl.specs import spec_hash
from robot_rl.types import Episode, Transition

log = logging.getLogger("robot_rl.demos")


def record_episode(env: Any, policy: Any, seed: int, actor_id: str, episode_id: int,
                   on_start: Callable[[dict[str, np.ndarray]], None] | None = None) -> tuple[list[Transition], bool]:
    """One episode of ``policy`` from ``env.reset(seed=seed)``: its transitions and whether it succeeded.
    ``on_start(obs)`` runs right after the reset (the env is then in its start state)."""
    obs = env.reset(seed=seed)
    if on_start is not None:
        on_start(obs)
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

    Appends to an existing store (ids continue), so an interrupted run can simply be repeated. With
    ``cfg.demo_spread`` the start states are chosen to cover the randomization range (see ``spread_order``)
    instead of taken as they come.
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
    spread = bool(getattr(cfg, "demo_spread", False)) and n > 0
    # Spreading picks from a larger pool of start states (8 per demo, at least 256): the k-median fits the
    # pool, and a pool of 48 for 3 demos is lumpy enough to leave a corner uncovered (benchmarks/demo_cover.py:
    # 20% of evaluation starts beyond 1.25 start-spreads from every demo with 48, 13% with 256; 32% for the
    # farthest-point choice of before, from 48).
    candidates = max(n * max(max_attempts_factor, 8) + 24, 256) if spread else n * max_attempts_factor
    seeds = [env_seed(cfg.env.seed, "expert", i + episode_id) for i in range(candidates)]
    if spread:
        recorded = recorded_starts(out, sh)
        seeds = [seeds[i] for i in spread_order(env, seeds, recorded, n)]
    while written < n and attempts < n * max_attempts_factor:
        start: list[np.ndarray] = []  # where this demo started, for a later spread to continue from
        on_start = (lambda obs: start.append(_start_vector(env, obs))) if hasattr(env, "start_features") else None
        transitions, success = record_episode(env, expert, seeds[attempts], "expert", episode_id, on_start)
        attempts += 1
        if success or not successful_only:
            meta: dict[str, Any] = {"source": "scripted_expert"}
            if start:
                meta["start_features"] = start[0].tolist()
            store.write(Episode.from_transitions(transitions, sh, success=success, task=env.task, meta=meta))
            written += 1
            episode_id += 1
            if on_episode is not None:
                on_episode(written)
        successes += int(success)
    env.close()
    if written < n:
        log.warning("only %d of %d demos succeeded after %d attempts", written, n, attempts)
    return {"episodes": written, "successes": successes, "attempts": attempts}


def _start_features(obs: dict[str, np.ndarray], stacked: bool = False) -> np.ndarray:
    """The low-dimensional part of a start observation (images left out), flattened: shape (D,). ``stacked``:
    ``obs`` is an episode's frames (T + 1 per key), of which the first is the start."""
    parts = []
    for key in sorted(obs):
        value = np.asarray(obs[key])
        if value.dtype == np.uint8:  # camera frames: the object pose they show is in the state vector
            continue
        parts.append((value[0] if stacked else value).reshape(-1))
    return np.concatenate(parts).astype(np.float64) if parts else np.zeros(0)


def _reset_start(env: Any, seed: int) -> np.ndarray:
    """The start state ``env.reset(seed=seed)`` gives, as a flat vector (D,): the env's own
    ``start_features()`` (ground truth from the simulator: the twin's cube pose) where it has one, else the
    low-dim part of the start observation."""
    return _start_vector(env, env.reset(seed=seed))


def _start_vector(env: Any, obs: dict[str, np.ndarray]) -> np.ndarray:
    """:func:`_reset_start`'s vector (D,) of an env just reset, whose start observation is ``obs``."""
    if hasattr(env, "start_features"):
        return np.asarray(env.start_features(), np.float64).reshape(-1)
    return _start_features(obs)


def recorded_starts(directory: str | Path, spec_hash: str | None = None) -> list[np.ndarray]:
    """Where each episode in the store at ``directory`` started (those recorded under ``spec_hash`` where
    given), in name order and in :func:`_reset_start`'s terms: the ``start_features`` the scripted expert stored
    in its meta, read without loading the episode's arrays; else the low-dim part of its first observation
    (episodes recorded before the meta existed, or by hand), which needs the whole episode. ``spread_order``
    ignores a vector of another length. An unreadable episode is logged and skipped, as
    ``EpisodeStore.episodes`` does."""
    starts = []
    for path in EpisodeStore(directory).paths():
        try:
            meta = EpisodeStore.read_meta(path)
            if spec_hash is not None and meta.get("spec_hash") != spec_hash:
                continue
            features = (meta.get("meta") or {}).get("start_features")
            starts.append(np.asarray(features, np.float64).reshape(-1) if features is not None
                          else _start_features(EpisodeStore.read(path).frames, stacked=True))
        except Exception as exc:
            log.error("skipping unreadable episode %s: %s", path, exc)
    return starts


def spread_order(env: Any, seeds: Sequence[int], recorded: Sequence[np.ndarray] = (), n: int | None = None
                 ) -> list[int]:
    """Indices into ``seeds`` (a permutation) whose first ``n`` start states cover the candidates' start states
    best, the ``recorded`` demos' starts counted too: the smallest mean distance from a candidate to its nearest
    demo (k-median over :func:`_reset_start`'s vectors: the env's ``start_features()`` where it has one, else the
    start observations' low-dim part; each varying dimension scaled by its spread over the candidates). The
    rest follow by farthest-point order: the fallbacks for an expert attempt that fails. ``n=None``: all of
    them by farthest-point order from the most central candidate.

    Why: a handful of demos drawn at random can all start on one side of the workspace (3 pick-cube demos
    with seed 1 all put the cube at y < -0.039 of a +-0.05 range), and a policy learning from them never
    sees the other side. An operator recording demos by hand places the object across the range; this is
    the scripted expert doing the same. Falls back to the given order when the start states do not vary.

    Why the mean distance (k-median) rather than farthest-point alone: a policy from 3 demos succeeds where a
    start is near a demo's and fails away from them, in both reward arms (README, "Where the policies fail").
    Farthest-point from the centre (this function's choice before) puts 3 demos at the centre and two opposite
    corners and leaves the other two corners uncovered: on the twin 32% of evaluation starts lay more than 1.25
    start-spreads from every demo, 13% with the k-median of ``generate_demos``' pool of at least 256 candidates
    (medians over 10 env seeds, ``benchmarks/demo_cover.py``)."""
    starts = np.stack([_reset_start(env, s) for s in seeds])  # (N, D)
    spread = starts.std(axis=0)
    varying = spread > 1e-9
    if not varying.any():
        return list(range(len(seeds)))
    centre, scale = starts[:, varying].mean(axis=0), spread[varying]
    points = (starts[:, varying] - centre) / scale  # (N, K)
    chosen = [(np.asarray(r)[varying] - centre) / scale for r in recorded if np.asarray(r).shape == starts.shape[1:]]
    if len(chosen) < len(recorded):  # e.g. demos recorded before they stored their start_features
        log.warning("demo_spread: %d of %d recorded demos give no start state comparable to this env's; the new "
                    "demos are spread without them", len(recorded) - len(chosen), len(recorded))
    distance = np.linalg.norm(points[:, None] - points[None], axis=-1)  # (N, N)
    nearest = np.full(len(seeds), np.inf)  # distance of each candidate to its nearest recorded demo
    for c in chosen:
        nearest = np.minimum(nearest, np.linalg.norm(points - c, axis=1))
    if n is None:
        order = [] if chosen else [int(np.argmin(np.linalg.norm(points, axis=1)))]
    else:
        order = _k_median(distance, nearest, min(max(n, 0), len(seeds)))
    for i in order:
        nearest = np.minimum(nearest, distance[i])
    taken = np.zeros(len(seeds), bool)
    taken[order] = True
    while not taken.all():
        i = int(np.argmax(np.where(taken, -np.inf, nearest)))
        order.append(i)
        taken[i] = True
        nearest = np.minimum(nearest, distance[i])
    return order


def _k_median(distance: np.ndarray, nearest: np.ndarray, k: int, max_passes: int = 50) -> list[int]:
    """``k`` candidate indices that (locally) minimise the mean over the candidates of the distance to the nearest
    chosen one or recorded demo: greedy additions, then single swaps until none improves (PAM-style).
    ``distance (N, N)`` between candidates; ``nearest (N,)`` to the nearest recorded demo (inf: none)."""
    chosen: list[int] = []
    for _ in range(k):
        cost = np.minimum(nearest[None], distance).mean(axis=1)  # (N,) mean nearest distance if i were added
        cost[chosen] = np.inf
        chosen.append(int(np.argmin(cost)))
    for _ in range(max_passes):
        improved = False
        for slot in range(k):
            others = [c for j, c in enumerate(chosen) if j != slot]
            base = np.minimum(nearest, distance[others].min(axis=0)) if others else nearest  # (N,)
            cost = np.minimum(base[None], distance).mean(axis=1)  # (N,) with candidate i in this slot
            current = cost[chosen[slot]]
            cost[others] = np.inf
            best = int(np.argmin(cost))
            if cost[best] < current - 1e-12:
                chosen[slot], improved = best, True
        if not improved:
            break
    return chosen
