"""Evaluate a policy: deterministic episodes on the task's env, success rate, optional mp4 video."""
from __future__ import annotations

import logging
import threading
from collections import Counter
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
    The result's ``per_episode`` lists each finished episode's seed, success, return, steps and, where the env
    has ``start_features()``, its ``start`` vector; where it has ``episode_outcome()`` (the Panda twins: the
    stage a failure stopped at, :mod:`robot_rl.sim.episode_outcome`), its ``outcome``, and ``outcomes`` counts
    the stages over the episodes.

    ``stop`` (the learner's SIGTERM/SIGINT event) ends the evaluation after the current step: a pixel eval takes
    minutes on a CPU and must not hold a shutdown. Only finished episodes count; ``episodes`` in the result says
    how many (0 gives NaN rates). ``on_episode(n)`` is called after each finished episode (progress display).
    ``on_metrics`` gets the result before the video is encoded and may add to it (``robot-rl train`` writes
    eval.json and the plot there); a video that cannot be rendered or written is a warning."""
    frames: list[np.ndarray] = []
    successes, returns = [], []
    per_episode: list[dict[str, Any]] = []
    can_render = video_path is not None and hasattr(env, "render")
    for ep in range(episodes):
        obs = env.reset(seed=seed + ep)
        # Where it started (the twin's cube pose), so that failures can be placed: robot_rl.eval_starts.
        start = np.asarray(env.start_features(), np.float64).reshape(-1).tolist() \
            if hasattr(env, "start_features") else None
        policy.reset()
        total, success, finished, steps = 0.0, False, False, 0
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
            steps += 1
            finished = result.terminated or result.truncated
            success = bool(finished and result.success)
        if not finished:
            break  # interrupted mid-episode: it does not count
        successes.append(success)
        returns.append(total)
        record = {"seed": seed + ep, "success": success, "return": float(total), "steps": steps}
        if start is not None:
            record["start"] = start
        if hasattr(env, "episode_outcome"):
            record["outcome"] = env.episode_outcome()
        per_episode.append(record)
        if on_episode is not None:
            on_episode(len(successes))
    done = len(successes)
    out: dict[str, Any] = {"episodes": done, "success_rate": float(np.mean(successes)) if done else float("nan"),
                           "mean_return": float(np.mean(returns)) if done else float("nan"),
                           "per_episode": per_episode}
    stages = [r["outcome"]["stage"] for r in per_episode if "outcome" in r]
    if stages:
        out["outcomes"] = dict(Counter(stages).most_common())
    if on_metrics is not None:
        on_metrics(out)
    if can_render and frames:
        try:
            import imageio.v2 as imageio

            Path(video_path).parent.mkdir(parents=True, exist_ok=True)
            imageio.mimwrite(str(video_path), frames, fps=int(getattr(env, "control_hz", 10)), macro_block_size=1)
            out["video"] = str(video_path)
        except Exception as exc:  # the figures above are what counts
            log.warning("video %s not written: %s", video_path, exc)
    return out


def describe_failures(result: dict[str, Any]) -> str | None:
    """One line naming the stages the failed episodes stopped at, most common first, e.g. ``failures by stage:
    closed_off_object 18 (closed a median 3.1 cm from the object), never_closed 2``; None without outcomes or
    failures."""
    failed = [r["outcome"] for r in result.get("per_episode", []) if "outcome" in r and not r["success"]]
    if not failed:
        return None
    parts = []
    for stage, n in Counter(o["stage"] for o in failed).most_common():
        part = f"{stage} {n}"
        if stage == "closed_off_object":  # how far off: the policy's aim
            errors = [o["nearest_close_xy_m"] for o in failed
                      if o["stage"] == stage and o.get("nearest_close_xy_m") is not None]
            if errors:
                part += f" (closed a median {100 * float(np.median(errors)):.1f} cm from the object)"
        parts.append(part)
    return "failures by stage: " + ", ".join(parts)


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
                        on_metrics: Callable[[dict[str, Any]], None] | None = None,
                        starts_map: str | None = None) -> dict[str, Any]:
    """Deterministic episodes of a checkpoint's policy; ``video`` shows the first ``video_episodes``. Where the
    env has start features, ``starts`` in the result places the failures against the run's demo starts
    (:func:`robot_rl.eval_starts.start_report`) and ``starts_map`` names a PNG of them."""
    from robot_rl.eval_starts import demo_start_vectors, plot_start_map, start_report

    ckpt, run_dir = find_checkpoint(checkpoint)
    cfg = load_resolved(run_dir / "config_learner.yaml", overrides)
    env = ENVS.make(cfg.env.name, cfg.env, seed=cfg.env.seed + 12345)
    names = env.start_feature_names() if hasattr(env, "start_feature_names") else None
    policy = make_policy(cfg, env.obs_spec, env.action_spec)
    state = Checkpointer.load_state(ckpt)
    policy.load_state_dict({k: torch.as_tensor(v) for k, v in state["policy"].items()})
    policy.eval()
    demo_dir = cfg.learner.demos or (run_dir / "demos")  # robot-rl train caches its scripted demos there

    def with_starts(result: dict[str, Any]) -> None:
        demos: list = []
        report: dict[str, Any] = {}
        if any("start" in r for r in result["per_episode"]):  # an env without start features: no demo I/O
            try:
                demos = demo_start_vectors(demo_dir)
                report = start_report(result["per_episode"], demos, names)
            except Exception as exc:  # e.g. an unreadable demo store: the success rate is what counts
                log.warning("no start report: %s", exc)
                demos, report = [], {}
        if report:
            result["starts"] = report
        if starts_map is not None:
            try:
                written = plot_start_map(result["per_episode"], starts_map, demos, names)
            except Exception as exc:  # like the video: the figures are what counts
                log.warning("start map %s not written: %s", starts_map, exc)
                written = None
            if written is not None:
                result["starts_map"] = str(written)
        if on_metrics is not None:
            on_metrics(result)

    try:
        return run_episodes(env, policy, episodes, seed=10_000, video_path=video if video_episodes > 0 else None,
                            video_episodes=video_episodes, on_episode=on_episode, on_metrics=with_starts)
    finally:
        env.close()
