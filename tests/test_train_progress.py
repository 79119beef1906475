"""``robot-rl train``'s progress: phases with their own counters, no overshoot, this session's updates/s, plain
lines when the output is not a terminal; evaluation videos hold the configured number of episodes."""
from __future__ import annotations

import io

import imageio.v3 as iio
import numpy as np

from robot_rl.config import load_config
from robot_rl.evaluate import run_episodes
from robot_rl.run_log import RunLogger
from robot_rl.sim.point_reach import PointReach, PointReachConfig
from robot_rl.train_progress import TrainProgress


def test_phases_from_the_learners_metrics_file_as_plain_lines(tmp_path):
    cfg = load_config(["env=point_reach", "logger.wandb=disabled", "logger.progress=false"])
    out = io.StringIO()  # not a terminal: plain lines, no bar, no control codes
    progress = TrainProgress(tmp_path, max_env_steps=3000, stream=out)
    assert not progress.live
    with progress:
        progress.set_phase("demos", 3, 20)
        logger = RunLogger(tmp_path, cfg.logger, "learner", {})  # the learner's own writer
        logger.phase("warm_start", step=0, done=300, total=1500)
        progress.refresh()
        logger.phase("online", step=0, total=3000)
        logger.log({"updates": 6000, "env_steps": 3140, "updates_per_s": 41.0}, step=3140)
        progress.refresh()
        logger.close()
    text = out.getvalue()
    assert "\x1b[" not in text and "\r" not in text
    lines = text.splitlines()
    assert any(line.endswith("recording demos: 3/20 demos") for line in lines), text
    assert any("warm start on the demos: 300/1500 updates" in line for line in lines), text
    # actors run a little past the budget: the count stops at it
    assert any("online training: 3000/3000 env steps  6000 updates (41/s)" in line for line in lines), text
    assert "3140/3000" not in text


def test_a_resumed_run_shows_only_this_sessions_records(tmp_path):
    cfg = load_config(["env=point_reach", "logger.wandb=disabled", "logger.progress=false"])
    earlier = RunLogger(tmp_path, cfg.logger, "learner", {})
    earlier.phase("online", step=0, total=3000)
    earlier.log({"updates": 99999, "env_steps": 2000, "updates_per_s": 3.2e8}, step=2000)
    earlier.close()
    progress = TrainProgress(tmp_path, max_env_steps=3000, stream=io.StringIO())
    progress.refresh()
    assert progress.phase == "starting" and "updates" not in progress.metrics


def test_learner_updates_per_s_counts_this_session(tmp_path):
    """After a resume the learner's rate is this session's updates over this session's time (the issue saw
    3.2e8/s: all updates since the run began over a few seconds)."""
    from robot_rl.learner import Learner

    cfg = load_config(["env=point_reach", "algo=sac", "logger.wandb=disabled", "logger.progress=false",
                       "transport.kind=inproc", f"run_dir={tmp_path}", "replay.prefetch=0"])
    learner = Learner(cfg)
    learner.updates = 50_000  # as if loaded from a checkpoint after this session began
    learner._updates_at_start = 50_000
    learner.updates += 100
    logger = RunLogger(tmp_path, cfg.logger, "probe", {})
    learner._log_progress(logger, {}, elapsed=10.0)
    logger.close()
    learner.close()
    record = (tmp_path / "metrics_probe.jsonl").read_text().splitlines()[-1]
    assert '"updates_per_s": 10.0' in record


def test_eval_video_holds_the_requested_episodes_and_point_reach_renders(tmp_path):
    from robot_rl.registry import POLICIES

    env = PointReach(PointReachConfig(max_episode_steps=20))
    cfg = load_config(["env=point_reach"])
    policy = POLICIES.make(cfg.policy.name, cfg.policy, env.obs_spec, env.action_spec)
    lengths = []
    for episodes in (1, 2):
        video = tmp_path / f"v{episodes}.mp4"
        result = run_episodes(env, policy, 3, seed=0, video_path=video, video_episodes=episodes)
        assert result["video"] == str(video)
        frames = np.stack(list(iio.imiter(video)))
        lengths.append(len(frames))
        assert frames.shape[1:3] == (128, 128)
    # deterministic episodes from the same seeds: two episodes' frames are more than one's
    assert lengths[1] > lengths[0] > 0 and lengths[0] <= 20
    none = run_episodes(env, policy, 2, seed=0, video_path=None)
    assert "video" not in none
