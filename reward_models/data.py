"""Training data for reward models: episodes from the twin, progress labels, and pair batches with negatives.

Episodes are plain :class:`robot_rl.types.Episode` objects (from an episode store or generated here):

- ``expert``: the scripted expert, successful episodes only; ``meta["keyframes"]`` holds the steps where its
  phase changed (approach -> descend -> grasp -> lift), the sub-task boundaries of GRM-style step labels;
- failures: ``random`` (uniform random actions), ``no_grasp`` (the expert with the gripper held open: it
  reaches the cube but never lifts it) and ``drop`` (the expert, which lets go of the cube mid-lift); only
  unsuccessful episodes are kept. ``meta["failure"]`` names the kind.

Labels (per frame t of a successful episode with T steps): progress ``p(t) = t / T``, or with keyframes
``K_0 = 0 < ... < K_N = T`` the step-wise ``p(t) = (n + (t - K_n) / (K_{n+1} - K_n)) / N`` (each sub-task
one equal share). The pair label for frames ``i -> j`` is ``(p_j - p_i) / (1 - p_i)`` (``(j - i) / (T - i)``
for linear labels): the fraction of the remaining work done. Reversed / rewound pairs (``j -> i``, i < j)
get minus the forward label, static pairs (``i -> i``) 0; mismatched task text and random-policy episodes
get progress 0 everywhere; every frame of a failure is "not done".
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from robot_rl.types import Episode, Transition

FAILURE_KINDS = ("random", "no_grasp", "drop")


# ---------------------------------------------------------------------------------------------- labels
def progress_labels(num_steps: int, keyframes: Sequence[int] | None = None) -> np.ndarray:
    """float64 (T + 1,) progress of frames 0..T of a successful episode (linear, or step-wise by keyframes)."""
    if num_steps < 1:
        raise ValueError(f"an episode needs >= 1 step, got {num_steps}")
    t = np.arange(num_steps + 1, dtype=np.float64)
    if not keyframes:
        return t / num_steps
    k = np.asarray(sorted(set(int(x) for x in keyframes) | {0, num_steps}), np.float64)
    if k[0] < 0 or k[-1] > num_steps:
        raise ValueError(f"keyframes {list(keyframes)} outside 0..{num_steps}")
    n_seg = len(k) - 1
    seg = np.clip(np.searchsorted(k, t, side="right") - 1, 0, n_seg - 1)  # (T+1,) segment of each frame
    return (seg + (t - k[seg]) / (k[seg + 1] - k[seg])) / n_seg


def pair_labels(p: np.ndarray) -> np.ndarray:
    """(F, F) signed delta labels for all ordered pairs of frames with progress ``p`` (F,): entry [a, b] is
    the label of ``a -> b``: forward ``(p_b - p_a) / (1 - p_a)``, backward minus the mirrored forward label."""
    pa, pb = p[:, None], p[None, :]
    fwd = (pb - pa) / np.maximum(1.0 - pa, 1e-6)  # used where p_b >= p_a
    bwd = -(pa - pb) / np.maximum(1.0 - pb, 1e-6)  # used where p_b < p_a (mirror of b -> a)
    return np.clip(np.where(pb >= pa, fwd, bwd), -1.0, 1.0)


def apply_pair_label(p_a: float, d: float) -> float:
    """Progress of frame b given frame a's progress and the pair label ``d`` of a -> b (inverse of
    :func:`pair_labels`): forward ``p_a + (1 - p_a) d``; backward (d < 0) ``(p_a + d) / (1 + d)``."""
    d = float(np.clip(d, -1.0, 1.0))
    p_b = p_a + (1.0 - p_a) * d if d >= 0 else (p_a + d) / max(1.0 + d, 1e-6)
    return float(np.clip(p_b, 0.0, 1.0))


# ------------------------------------------------------------------------------------------ generation
class _Perturbed:
    """The scripted expert with a failure injected (``no_grasp`` or ``drop``)."""

    def __init__(self, expert: Any, kind: str, rng: np.random.Generator) -> None:
        self.expert, self.kind, self.rng = expert, kind, rng
        self.release_after = int(rng.integers(0, 4))  # drop: lift steps before letting go
        self._held = 0
        self._dropped = False

    def reset(self) -> None:
        self.expert.reset()
        self._held, self._dropped = 0, False

    def act(self, obs: dict[str, np.ndarray]) -> np.ndarray:
        action = np.asarray(self.expert.act(obs), np.float32).copy()
        if self.kind == "no_grasp":
            action[3] = -1.0
        elif self.kind == "drop":
            if self.expert.phase == "holding":
                self._held += 1
            if self._held > self.release_after or self._dropped:
                self._dropped = True
                action[3] = -1.0
        return action


class _Random:
    def __init__(self, rng: np.random.Generator, dim: int) -> None:
        self.rng, self.dim = rng, dim

    def reset(self) -> None:
        pass

    def act(self, obs: dict[str, np.ndarray]) -> np.ndarray:
        return self.rng.uniform(-1.0, 1.0, self.dim).astype(np.float32)


def _rollout(env: Any, policy: Any, seed: int, episode_id: int, track_phase: Any = None
             ) -> tuple[list[Transition], bool, list[int]]:
    obs = env.reset(seed=seed)
    policy.reset()
    transitions: list[Transition] = []
    keyframes: list[int] = []
    phase = getattr(track_phase, "phase", None)
    while True:
        action = np.asarray(policy.act(obs), np.float32)
        if track_phase is not None and track_phase.phase != phase:
            phase = track_phase.phase
            keyframes.append(len(transitions))
        result = env.step(action)
        transitions.append(Transition(obs, action, result.reward, result.obs, result.terminated, result.truncated,
                                      "reward-data", episode_id, len(transitions)))
        obs = result.obs
        if result.terminated or result.truncated:
            return transitions, bool(result.success), keyframes


def generate_episodes(env_cfg: Any, n_success: int, n_failure: int, seed: int,
                      failure_kinds: Sequence[str] = FAILURE_KINDS, max_attempts_factor: int = 4) -> list[Episode]:
    """``n_success`` successful expert episodes + ``n_failure`` failed ones (kinds cycled) from the twin.

    Every episode uses its own reset seed derived from ``seed``, so two calls with different seeds give
    disjoint held-out sets. Raises when the expert cannot produce enough successes.
    """
    from robot_rl.registry import ENVS
    from robot_rl.specs import spec_hash

    for kind in failure_kinds:
        if kind not in FAILURE_KINDS:
            raise ValueError(f"unknown failure kind {kind!r}; choose from {FAILURE_KINDS}")
    env = ENVS.make(env_cfg.name, env_cfg, seed=seed)
    if not hasattr(env, "expert"):
        raise ValueError(f"env {env_cfg.name!r} has no scripted expert to make reward-model data with")
    sh = spec_hash(env.obs_spec, env.action_spec)
    rng = np.random.default_rng(seed)
    episodes: list[Episode] = []
    try:
        attempts, made = 0, 0
        while made < n_success:
            if attempts >= n_success * max_attempts_factor:
                raise RuntimeError(f"expert succeeded only {made}/{attempts} times")
            expert = env.expert()
            ts, ok, keyframes = _rollout(env, expert, seed * 100_003 + attempts, len(episodes), expert)
            attempts += 1
            if ok:
                episodes.append(Episode.from_transitions(ts, sh, success=True, task=env.task, meta={
                    "source": "scripted_expert", "keyframes": keyframes, "seed": seed}))
                made += 1
        attempts, made = 0, 0
        while made < n_failure:
            if attempts >= n_failure * max_attempts_factor:
                raise RuntimeError(f"made only {made}/{n_failure} failures in {attempts} attempts")
            kind = failure_kinds[attempts % len(failure_kinds)]
            policy = _Random(rng, env.action_spec.dim) if kind == "random" else _Perturbed(env.expert(), kind, rng)
            ts, ok, _ = _rollout(env, policy, seed * 100_003 + 50_000 + attempts, len(episodes))
            attempts += 1
            if not ok:
                episodes.append(Episode.from_transitions(ts, sh, success=False, task=env.task, meta={
                    "source": "perturbed_expert" if kind != "random" else "random_policy", "failure": kind,
                    "seed": seed}))
                made += 1
    finally:
        env.close()
    return episodes


# ------------------------------------------------------------------------------------------- batches
@dataclass
class PairBatch:
    """E episode groups x F frames each; all F x F ordered pairs of a group are labelled."""

    frames: dict[str, np.ndarray]
    """obs key -> (E, F, ...) frames (images uint8 (E, F, H, W, 3), state float32 (E, F, S))."""
    first: dict[str, np.ndarray]
    """obs key -> (E, ...) the episode's first frame."""
    text: np.ndarray
    """float32 (E, 384) task-text embedding shown to the model (a distractor's for mismatched groups)."""
    phi: np.ndarray
    """float32 (E, F) progress labels."""
    phi_mask: np.ndarray
    """float32 (E, F) 1 where ``phi`` is a label (unknown for perturbed-expert failures)."""
    delta: np.ndarray
    """float32 (E, F, F) pair labels, [e, a, b] for frame a -> frame b."""
    delta_mask: np.ndarray
    """float32 (E, F, F)."""
    done: np.ndarray
    """float32 (E, F) 1 on a successful episode's final frame."""


class PairSampler:
    """Draws :class:`PairBatch` es from successful and failed episodes (see the module docstring)."""

    def __init__(self, episodes: Sequence[Episode], views: Sequence[str], task_embedding: dict[str, np.ndarray],
                 distractor_embedding: np.ndarray, frames_per_episode: int = 8, mismatch_prob: float = 0.2,
                 failure_prob: float = 0.25, seed: int = 0, weights: Sequence[float] | None = None) -> None:
        if weights is not None and len(weights) != len(episodes):
            raise ValueError(f"{len(weights)} sampling weights for {len(episodes)} episodes")
        w = [1.0] * len(episodes) if weights is None else [float(x) for x in weights]
        if any(not np.isfinite(x) or x < 0 for x in w):
            raise ValueError(f"sampling weights must be finite and >= 0, got {w}")
        self.success = [e for e in episodes if e.success]
        # Relative draw probability of each successful episode (uniform unless ``weights``: one-shot
        # adaptation gives its single new demo as much weight as all the old successes together).
        self.success_p = np.asarray([x for x, e in zip(w, episodes) if e.success], np.float64)
        self.uniform = weights is None
        if self.success and self.success_p.sum() <= 0:
            raise ValueError("the successful episodes' sampling weights sum to 0")
        self.failure = [e for e in episodes if not e.success]
        if not self.success:
            raise ValueError("reward-model training needs at least one successful episode")
        for e in episodes:
            missing = [v for v in views if v not in e.frames]
            if missing:
                raise ValueError(f"episode {e.actor_id}/{e.episode_id} lacks views {missing}")
            if e.task not in task_embedding:
                raise ValueError(f"no text embedding for task {e.task!r}")
        if frames_per_episode < 2:
            raise ValueError("frames_per_episode must be >= 2")
        self.views = list(views)
        self.task_embedding = task_embedding
        self.distractors = np.asarray(distractor_embedding, np.float32)  # (D, 384)
        self.labels = {id(e): progress_labels(len(e), e.meta.get("keyframes")) for e in self.success}
        self.F = int(frames_per_episode)
        self.mismatch_prob, self.failure_prob = float(mismatch_prob), float(failure_prob)
        self.rng = np.random.default_rng(seed)

    def _draw_success(self) -> int:
        if self.uniform:  # the same random stream as before weights existed: old runs reproduce
            return int(self.rng.integers(len(self.success)))
        return int(self.rng.choice(len(self.success), p=self.success_p / self.success_p.sum()))

    def _frame_ids(self, episode: Episode, include_last: bool) -> np.ndarray:
        T, F = len(episode), self.F
        fixed = [0, T] if include_last else [0]
        k = F - len(fixed)
        others = self.rng.choice(np.arange(1, T if include_last else T + 1), size=k, replace=k > T - 1)
        return np.sort(np.concatenate([fixed, others]).astype(np.int64))

    def sample(self, n_episodes: int) -> PairBatch:
        E, F = n_episodes, self.F
        frames = {v: [] for v in self.views}
        first = {v: [] for v in self.views}
        text = np.zeros((E, self.distractors.shape[1]), np.float32)
        phi, phi_mask = np.zeros((E, F), np.float32), np.zeros((E, F), np.float32)
        delta, delta_mask = np.zeros((E, F, F), np.float32), np.zeros((E, F, F), np.float32)
        done = np.zeros((E, F), np.float32)
        for g in range(E):
            use_failure = bool(self.failure) and self.rng.random() < self.failure_prob
            ep = self.failure[self.rng.integers(len(self.failure))] if use_failure else \
                self.success[self._draw_success()]
            ids = self._frame_ids(ep, include_last=not use_failure)
            for v in self.views:
                frames[v].append(ep.frames[v][ids])
                first[v].append(ep.frames[v][0])
            mismatched = self.rng.random() < self.mismatch_prob
            if mismatched:
                text[g] = self.distractors[self.rng.integers(len(self.distractors))]
            else:
                text[g] = self.task_embedding[ep.task]
            if mismatched or (use_failure and ep.meta.get("failure") == "random"):
                phi_mask[g] = 1.0  # no progress towards this text: phi 0, every pair 0, never done
                delta_mask[g] = 1.0
            elif not use_failure:
                p = self.labels[id(ep)][ids]
                phi[g], phi_mask[g] = p, 1.0
                delta[g], delta_mask[g] = pair_labels(p), 1.0
                done[g] = (ids == len(ep)).astype(np.float32)
            # perturbed-expert failures: progress unknown (masked), every frame "not done"
        return PairBatch(frames={v: np.stack(x) for v, x in frames.items()},
                         first={v: np.stack(x) for v, x in first.items()}, text=text, phi=phi, phi_mask=phi_mask,
                         delta=delta, delta_mask=delta_mask, done=done)

