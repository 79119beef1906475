"""The learning curve plots only the training episodes the learner received (after a resume, an actor's store
can hold episodes whose chunks were lost with a killed process)."""
from __future__ import annotations

import torch

from robot_rl.checkpoint import Checkpointer
from robot_rl.episode_store import EpisodeStore
from robot_rl.replay import ReplayBuffer
from robot_rl.sim.point_reach import PointReach, PointReachConfig
from robot_rl.specs import spec_hash
from robot_rl.train import plot_learning_curve, received_episodes
from robot_rl.types import Episode
from support import rollout


def _episodes(env, n_transitions):
    by_id: dict[int, list] = {}
    for tr in rollout(env, n_transitions, actor_id="actor-0"):
        by_id.setdefault(tr.episode_id, []).append(tr)
    sh = spec_hash(env.obs_spec, env.action_spec)
    return [Episode.from_transitions(trs, sh, success=bool(trs[-1].terminated)) for trs in by_id.values()
            if trs[-1].terminated or trs[-1].truncated]


def test_only_received_episodes_are_plotted(tmp_path):
    env = PointReach(PointReachConfig(max_episode_steps=20))
    episodes = _episodes(env, 200)
    assert len(episodes) >= 4
    store = EpisodeStore(tmp_path / "episodes" / "actor-0")
    for ep in episodes:
        store.write(ep)
    assert received_episodes(tmp_path) is None  # no checkpoint: nothing to tell, every episode is plotted
    replay = ReplayBuffer(env.obs_spec, env.action_spec, 10_000)
    for ep in episodes[:-2]:  # the last two never reached the learner
        replay.add_episode(ep)
    Checkpointer(tmp_path).save("ckpt-0000000001", {"updates": torch.zeros(1)}, {"replay_online": replay.save})
    received = received_episodes(tmp_path)
    assert [received("actor-0", ep.episode_id) for ep in episodes] == [True] * (len(episodes) - 2) + [False] * 2
    assert not received("actor-1", episodes[0].episode_id)
    assert plot_learning_curve(tmp_path).stat().st_size > 0


def test_wrapped_replay_still_counts_the_overwritten_episodes(tmp_path):
    env = PointReach(PointReachConfig(max_episode_steps=20))
    episodes = _episodes(env, 300)
    replay = ReplayBuffer(env.obs_spec, env.action_spec, 50)  # holds only the last few episodes
    for ep in episodes:
        replay.add_episode(ep)
    Checkpointer(tmp_path).save("ckpt-0000000001", {"updates": torch.zeros(1)}, {"replay_online": replay.save})
    received = received_episodes(tmp_path)
    assert all(received("actor-0", ep.episode_id) for ep in episodes)
    assert not received("actor-0", episodes[-1].episode_id + 1)
