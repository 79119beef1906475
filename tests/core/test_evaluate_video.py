"""The final evaluation's figures never depend on its video: an env that renders nothing, or a video that cannot
be written, is a warning; `robot-rl train` writes eval.json and the learning curve (success and return) first."""
from __future__ import annotations

import json
import logging

import numpy as np
import pytest

from robot_rl.evaluate import run_episodes
from robot_rl.sim.gym_adapter import GymAdapter, GymEnvConfig
from robot_rl.sim.point_reach import PointReach


class _Zero:
    def reset(self) -> None:
        pass

    def act(self, obs, deterministic: bool = True) -> np.ndarray:
        return np.zeros(1, np.float32)


def test_env_without_rgb_frames_skips_the_video_with_a_warning(tmp_path, caplog):
    env = GymAdapter(GymEnvConfig(env_id="Pendulum-v1", max_episode_steps=5))  # no render_mode
    seen = []
    with caplog.at_level(logging.WARNING, logger="robot_rl.eval"):
        result = run_episodes(env, _Zero(), episodes=2, seed=0, video_path=tmp_path / "v.mp4",
                              on_metrics=seen.append)
    assert result["episodes"] == 2 and np.isfinite(result["mean_return"]) and "video" not in result
    assert seen == [result] and not (tmp_path / "v.mp4").exists()
    assert any("render_mode=rgb_array" in r.getMessage() for r in caplog.records)


def test_a_video_that_cannot_be_written_keeps_the_figures(tmp_path, caplog):
    env = GymAdapter(GymEnvConfig(env_id="InvertedPendulum-v5", max_episode_steps=5,
                                  kwargs={"render_mode": "rgb_array", "width": 32, "height": 32}))
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    order = []
    with caplog.at_level(logging.WARNING, logger="robot_rl.eval"):
        result = run_episodes(env, _Zero(), episodes=1, seed=0, video_path=blocker / "v.mp4",
                              on_metrics=lambda m: order.append(m))
    assert result["episodes"] == 1 and "video" not in result
    assert order == [result]  # reported before the video failed
    assert any("not written" in r.getMessage() for r in caplog.records)
    written = run_episodes(env, _Zero(), episodes=1, seed=0, video_path=tmp_path / "ok.mp4")
    assert written["video"] == str(tmp_path / "ok.mp4") and (tmp_path / "ok.mp4").stat().st_size > 0


def test_learning_curve_shows_success_and_return(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    from robot_rl.episode_store import EpisodeStore
    from robot_rl.train import episode_curves, plot_learning_curve
    from robot_rl.types import Episode, Transition

    env = PointReach()
    store = EpisodeStore(tmp_path / "episodes" / "actor-0")
    rewards = []
    for episode_id, reward in enumerate((-1.0, -0.5, 0.25)):
        obs = env.reset(seed=episode_id)
        transitions = [Transition(obs, np.zeros(2, np.float32), reward, obs, False, t == 2, "actor-0", episode_id, t)
                       for t in range(3)]
        store.write(Episode.from_transitions(transitions, "h", success=reward > 0))
        rewards.append(3 * reward)
    (tmp_path / "eval.json").write_text(json.dumps({"success_rate": 1.0, "mean_return": 0.75, "episodes": 1}))
    curves = episode_curves(tmp_path)
    np.testing.assert_allclose(curves["env_steps"], [3, 6, 9])
    np.testing.assert_allclose(curves["return"], rewards)
    np.testing.assert_allclose(curves["success"], [0, 0, 1])
    path = plot_learning_curve(tmp_path)
    assert path is not None and path.stat().st_size > 0
    assert plot_learning_curve(tmp_path / "nothing") is None


@pytest.mark.parametrize("has_store", [False, True])
def test_train_says_loudly_when_it_has_no_demos(tmp_path, caplog, has_store):
    from robot_rl.config import load_config
    from robot_rl.train import record_expert_demos

    overrides = ["env=gym", "env.env_id=Pendulum-v1", f"run_dir={tmp_path}"]
    if has_store:
        (tmp_path / "empty").mkdir()
        overrides.append(f"learner.demos={tmp_path / 'empty'}")
    with caplog.at_level(logging.WARNING, logger="robot_rl.train"):
        assert record_expert_demos(load_config(overrides), tmp_path) is None
    text = " ".join(r.getMessage() for r in caplog.records)
    assert "NO DEMONSTRATIONS" in text
    if not has_store:
        assert "robot-rl demos teleop=keyboard" in text and "env.expert" in text
