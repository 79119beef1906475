"""Evaluation obeys the learner's stop event: a SIGTERM during a (possibly minutes-long, pixel) evaluation ends it
after the current step, and an interrupted episode never counts towards the success rate."""
import math
import threading

import numpy as np

from robot_rl.config import load_config
from robot_rl.evaluate import run_episodes
from robot_rl.learner import Learner
from robot_rl.sim.point_reach import PointReach


class _StopAfter:
    """A zero-action policy that sets ``stop`` after ``n`` actions (the signal arriving mid-evaluation)."""

    def __init__(self, stop: threading.Event, n: int) -> None:
        self.stop, self.n, self.calls = stop, n, 0

    def reset(self) -> None:
        pass

    def act(self, obs, deterministic: bool = True) -> np.ndarray:
        self.calls += 1
        if self.calls >= self.n:
            self.stop.set()
        return np.zeros(2, np.float32)


def test_run_episodes_counts_only_finished_episodes_when_stopped():
    env = PointReach()
    full = run_episodes(env, _StopAfter(threading.Event(), 10**9), episodes=2, seed=0)
    assert full["episodes"] == 2
    steps_per_episode = env.max_episode_steps  # zero actions never reach the goal: every episode runs to the limit

    stop = threading.Event()
    policy = _StopAfter(stop, steps_per_episode + 3)  # the signal lands 3 steps into the second episode
    result = run_episodes(env, policy, episodes=5, seed=0, stop=stop)
    assert policy.calls == steps_per_episode + 3  # nothing ran after the stop
    assert result["episodes"] == 1 and result["success_rate"] == full["success_rate"]

    stop = threading.Event()
    stop.set()
    nothing = run_episodes(env, _StopAfter(stop, 1), episodes=5, seed=0, stop=stop)
    assert nothing["episodes"] == 0 and math.isnan(nothing["success_rate"])


def test_stopped_learner_skips_evaluation(tmp_path):
    cfg = load_config(["env=point_reach", "algo=sac", f"run_dir={tmp_path}", "logger.wandb=disabled",
                       "logger.progress=false", "transport.kind=inproc", "learner.eval_episodes=50"])
    learner = Learner(cfg)
    try:
        assert learner.evaluate()["eval/episodes"] == 50
        learner.stop()
        assert learner.evaluate()["eval/episodes"] == 0
    finally:
        learner.close()
