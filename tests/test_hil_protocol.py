"""The graded HIL protocol on the Panda twin: reset-to-state, offline demo replay, return-and-explore."""
from __future__ import annotations

import numpy as np
import pytest

from robot_rl.actor import Actor
from robot_rl.config import load_config
from robot_rl.demos import generate_demos
from robot_rl.learner import Learner
from robot_rl.registry import ENVS

COMMON = ["env=panda_pick_cube_random", "algo=sac", "logger.wandb=disabled", "logger.progress=false",
          "replay.prefetch=0", "transport.kind=inproc", "actor.pace=false", "hil=virtual"]


def actor_run(cfg, steps):
    learner = Learner(cfg)
    learner.transport.start()
    actor = Actor(cfg, learner.transport.connect(cfg.transport, "actor-0"))
    try:
        actor.run(max_steps=steps)
        learner.transport.wait_idle()
    finally:
        learner.close()
    return learner, list(actor.store.episodes())


def test_twin_state_round_trip_continues_the_same_trajectory():
    cfg = load_config(["env=panda_pick_cube_random"])
    env = ENVS.make("panda_pick_cube", cfg.env, seed=3)
    obs, expert = env.reset(seed=3), env.expert()
    for _ in range(12):
        obs = env.step(expert.act(obs)).obs
    state = env.get_state()
    actions = [expert.act(obs)]
    original = []
    for _ in range(8):
        original.append(env.step(actions[-1]).obs["state"])
        actions.append(expert.act({"state": original[-1]}))
    env.reset(seed=99)  # somewhere else entirely
    restored = env.set_state(state)
    np.testing.assert_allclose(restored["state"], obs["state"], atol=1e-6)
    replayed = [env.step(a).obs["state"] for a in actions[:8]]
    np.testing.assert_allclose(np.stack(replayed), np.stack(original), atol=1e-4)
    with pytest.raises(ValueError, match="entries"):
        env.set_state(state[:-1])
    env.close()


def test_demo_replay_episodes_reach_the_demo_buffer_as_operator_actions(tmp_path):
    cfg = load_config([*COMMON, f"run_dir={tmp_path / 'run'}"])
    generate_demos(cfg, 1, tmp_path / "demos")
    cfg = load_config([*COMMON, f"run_dir={tmp_path / 'run'}", "hil.protocol.demo_replay_episodes=1",
                       f"hil.protocol.demos={tmp_path / 'demos'}"])
    from robot_rl.episode_store import EpisodeStore

    demo = next(EpisodeStore(tmp_path / "demos").episodes())
    learner, episodes = actor_run(cfg, len(demo) + 5)
    replayed = episodes[0]
    assert replayed.meta["protocol_mode"] == "demo_replay"
    assert replayed.success and replayed.meta["label"] == "success"  # open-loop replay from the demo's start
    np.testing.assert_allclose(replayed.frames["state"][0], demo.frames["state"][0], atol=1e-5)
    np.testing.assert_array_equal(replayed.action, demo.action)
    assert replayed.intervened.all() and replayed.meta["intervention_rate"] == 1.0
    assert not np.allclose(replayed.policy_action, replayed.action)  # the policy's proposals kept
    assert len(learner.demo) >= len(demo)
    assert episodes[1].meta["protocol_mode"] != "demo_replay"


def test_return_and_explore_starts_episodes_where_the_operator_had_to_take_over(tmp_path):
    cfg = load_config([*COMMON, f"run_dir={tmp_path}", "hil.protocol.return_prob=1.0", "env.max_episode_steps=40",
                       "hil.virtual.window=4", "hil.virtual.takeover_steps=8"])
    _, episodes = actor_run(cfg, 200)
    modes = [ep.meta["protocol_mode"] for ep in episodes]
    assert modes[0] == "explore" and episodes[0].meta["takeovers"] > 0
    assert all(m == "return_explore" for m in modes[1:]) and len(modes) >= 3
    home_tcp = episodes[0].frames["state"][0][:3]
    starts = np.stack([ep.frames["state"][0][:3] for ep in episodes[1:]])
    # they start mid-task (where the policy was stuck), not at the home pose of a fresh reset
    assert (np.linalg.norm(starts - home_tcp, axis=1) > 0.005).all()
