"""Evaluate a policy: deterministic episodes on the task's env, success rate, optional mp4 video."""
from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from robot_rl.checkpoint import Checkpointer
from robot_rl.config import load_resolved
from robot_rl.config_errors import UsageError
from robot_rl.registry import ENVS, make_policy

log = logging.getLogger("robot_rl.eval")


class CheckpointNotFound(UsageError, FileNotFoundError):
    """``checkpoint=PATH`` names no checkpoint (``robot-rl`` prints it in one line, exit status 2)."""


def run_episodes(env: Any, policy: Any, episodes: int, seed: int, video_path: str | Path | None = None,
                 video_episodes: int = 3, camera: str = "front",
                 stop: threading.Event | None = None,
                 on_episode: Callable[[int], None] | None = None,
                 on_metrics: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """Deterministic rollouts; records the first ``video_episodes`` through ``env.render`` when asked.

    ``stop`` (the learner's SIGTERM/SIGINT event) ends the evaluation after the current step: a pixel eval takes
    minutes on a CPU and must not hold a shutdown. Only finished episodes count; ``episodes`` in the result says
    how many (0 gives NaN rates). ``on_episode(n)`` is called after each finished episode (progress display).
    ``on_metrics`` gets the figures before the video is encoded (``robot-rl train`` writes eval.json and the
    plot there); a video that cannot be rendered or written is a warning."""
    frames: list[np.ndarray] = []
    successes, returns = [], []
    can_render = video_path is not None and hasattr(env, "render")
    for ep in range(episodes):
        obs = env.reset(seed=seed + ep)
        policy.reset()
        total, success, finished = 0.0, False, False
        while not finished and not (stop is not None and stop.is_set()):
            if can_render and ep < video_episodes:
                try:
                    frames.append(env.render(camera=camera))
                except Exception as exc:  # e.g. no render_mode=rgb_array: skip the video, keep evaluating
                    log.warning("no video: %s", exc)
                    can_render, frames = False, []
            action = policy.act(obs, deterministic=True)
            result = env.step(action)
            total += result.reward
            obs = result.obs
            finished = result.terminated or result.truncated
            success = bool(finished and result.success)
        if not finished:
            break  # interrupted mid-episode: it does not count
        successes.append(success)
        returns.append(total)
        if on_episode is not None:
            on_episode(len(successes))
    done = len(successes)
    out: dict[str, Any] = {"episodes": done, "success_rate": float(np.mean(successes)) if done else float("nan"),
                           "mean_return": float(np.mean(returns)) if done else float("nan")}
    if on_metrics is not None:
        on_metrics(dict(out))
    if can_render and frames:
        try:
            import imageio.v2 as imageio

            Path(video_path).parent.mkdir(parents=True, exist_ok=True)
            imageio.mimwrite(str(video_path), frames, fps=int(getattr(env, "control_hz", 10)), macro_block_size=1)
            out["video"] = str(video_path)
        except Exception as exc:  # the figures above are what counts
            log.warning("video %s not written: %s", video_path, exc)
    return out


def find_checkpoint(path: str | Path) -> tuple[Path, Path]:
    """(checkpoint dir, run dir) for a run directory or a checkpoints/ckpt-* directory."""
    path = Path(path)
    if (path / "state.pt").exists():
        return path, path.parent.parent
    latest = Checkpointer(path).latest() if (path / "checkpoints").is_dir() else None
    if latest is None:
        what = "no checkpoint under" if path.is_dir() else "no such directory:"
        raise CheckpointNotFound(f"{what} {path} (give a run directory with checkpoints/ in it, or one of its "
                                 f"checkpoints/ckpt-* directories)")
    return latest, path


def evaluate_checkpoint(checkpoint: str | Path, episodes: int, video: str | None,
                        overrides: Sequence[str] = (), video_episodes: int = 3,
                        on_episode: Callable[[int], None] | None = None,
                        on_metrics: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """Deterministic episodes of a checkpoint's policy; ``video`` shows the first ``video_episodes``."""
    ckpt, run_dir = find_checkpoint(checkpoint)
    cfg = load_resolved(run_dir / "config_learner.yaml", overrides)
    env = ENVS.make(cfg.env.name, cfg.env, seed=cfg.env.seed + 12345)
    policy = make_policy(cfg, env.obs_spec, env.action_spec)
    state = Checkpointer.load_state(ckpt)
    policy.load_state_dict({k: torch.as_tensor(v) for k, v in state["policy"].items()})
    policy.eval()
    try:
        return run_episodes(env, policy, episodes, seed=10_000, video_path=video if video_episodes > 0 else None,
                            video_episodes=video_episodes, on_episode=on_episode, on_metrics=on_metrics)
    finally:
        env.close()
