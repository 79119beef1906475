"""Small synthetic episodes with smooth, moving camera images (what a codec sees on a real robot), plus the
specs they follow; shared by the dataset tests and benchmarks/datasets.py."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from robot_rl.episode_store import EpisodeStore
from robot_rl.specs import ActionSpec, ArraySpec, ObsSpec, spec_hash
from robot_rl.types import Episode

TASKS = ("pick up the red cube", "push the block to the left")


def specs(image_size: int = 32, cameras: tuple[str, ...] = ("front", "wrist"), state_dim: int = 6,
          action_dim: int = 3) -> tuple[ObsSpec, ActionSpec]:
    fields = {"state": ArraySpec((state_dim,), "float32")}
    fields.update({f"images/{c}": ArraySpec((image_size, image_size, 3), "uint8") for c in cameras})
    names = tuple(f"u{i}" for i in range(action_dim))
    return ObsSpec(fields), ActionSpec((action_dim,), (-1.0,), (1.0,), names)


def frame(size: int, t: float, camera: int) -> np.ndarray:
    """A smooth scene: colour gradients plus a soft blob moving with ``t`` (uint8 (size, size, 3))."""
    yy, xx = np.mgrid[0:size, 0:size] / size
    cx, cy = 0.25 + 0.5 * (0.5 + 0.5 * np.sin(t + camera)), 0.5 + 0.3 * np.cos(0.7 * t)
    blob = np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / 0.02)
    img = np.stack([60 + 120 * xx + 70 * blob, 50 + 140 * yy + 30 * camera, 40 + 180 * blob], axis=-1)
    return np.clip(img, 0, 255).astype(np.uint8)


def episode(obs_spec: ObsSpec, action_spec: ActionSpec, episode_id: int, steps: int, seed: int = 0,
            actor_id: str = "actor-0") -> Episode:
    rng = np.random.default_rng(seed + 1000 * episode_id)
    frames: dict[str, np.ndarray] = {}
    for key, spec in obs_spec.fields.items():
        if key.startswith("images/"):
            cam = sorted(obs_spec.image_keys).index(key)
            frames[key] = np.stack([frame(spec.shape[0], 0.3 * t + episode_id, cam) for t in range(steps + 1)])
        else:
            frames[key] = rng.normal(size=(steps + 1, *spec.shape)).astype(np.float32)
    action = rng.uniform(-1, 1, (steps, *action_spec.shape)).astype(np.float32)
    intervened = np.zeros(steps, bool)
    intervened[steps // 3: steps // 2] = True
    policy_action = np.where(intervened[:, None], rng.uniform(-1, 1, action.shape), action).astype(np.float32)
    success = episode_id % 2 == 0
    reward = np.zeros(steps, np.float32)
    terminated, truncated = np.zeros(steps, bool), np.zeros(steps, bool)
    if success:
        reward[-1], terminated[-1] = 1.0, True
    else:
        truncated[-1] = True
    return Episode(frames=frames, action=action, policy_action=policy_action, reward=reward, terminated=terminated,
                   truncated=truncated, intervened=intervened, actor_id=actor_id, episode_id=episode_id,
                   spec_hash=spec_hash(obs_spec, action_spec), success=success, task=TASKS[episode_id % 2])


def write_run(run_dir: Path, obs_spec: ObsSpec, action_spec: ActionSpec, episodes: int = 3, steps: int = 12,
              seed: int = 0) -> list[Episode]:
    """A run directory as actors leave it: ``run_dir/episodes/<actor>/*.npz``."""
    store = EpisodeStore(Path(run_dir) / "episodes" / "actor-0", fsync=False)
    eps = [episode(obs_spec, action_spec, i, steps + i, seed) for i in range(episodes)]
    for ep in eps:
        store.write(ep)
    return eps
