"""A learner with no checkpoint to resume from rebuilds online replay from the run's episode stores, says so,
and keeps each transition once when the actors resend chunks of those same episodes."""
from __future__ import annotations

import logging

import pytest

from robot_rl.actor import Actor
from robot_rl.config import load_config
from robot_rl.episode_store import EpisodeStore
from robot_rl.learner import Learner

pytestmark = pytest.mark.usefixtures("single_thread")

COMMON = ["env=point_reach", "algo=sac", "logger.wandb=disabled", "logger.progress=false", "replay.prefetch=0",
          "transport.kind=inproc", "transport.chunk_size=8", "actor.pace=false", "num_demos=0"]


def _stored_ids(run_dir):
    ids = []
    for ep in EpisodeStore(run_dir / "episodes" / "actor-0").episodes():
        ids += [(ep.actor_id, ep.episode_id, s) for s in range(len(ep))]
    return ids


def test_no_checkpoint_rebuilds_replay_from_episode_store_once(tmp_path, caplog):
    cfg = load_config([*COMMON, f"run_dir={tmp_path}"])
    first = Learner(cfg)
    first.transport.start()
    actor = Actor(cfg, first.transport.connect(cfg.transport, "actor-0"))
    actor.run(max_steps=300)  # episodes land in run_dir/episodes/actor-0; the learner never checkpoints
    first.transport.wait_idle()
    first.close()
    assert first.checkpointer.latest() is None
    stored = _stored_ids(tmp_path)
    assert len(stored) >= 250

    caplog.set_level(logging.INFO, logger="robot_rl.learner")
    second = Learner(cfg)
    n_episodes = len(EpisodeStore(tmp_path / "episodes" / "actor-0"))
    assert f"rebuilt replay from {n_episodes} episodes ({len(stored)} transitions)" in caplog.text
    assert len(second.online) == len(stored) and second.online_transitions == len(stored)
    assert sorted(second.online.iter_ids()) == sorted(stored)

    # The actor resends what it had not seen committed (its spill directory): the same episodes again, plus
    # an episode the store does not hold yet. Only the new one may be added.
    second.transport.start()
    client = second.transport.connect(cfg.transport, "actor-0")
    episodes = list(EpisodeStore(tmp_path / "episodes" / "actor-0").episodes())
    for ep in episodes[:3]:
        for tr in ep.transitions():
            client.send(tr)
    fresh = list(episodes[0].transitions())
    for tr in fresh:
        client.send(type(tr)(**{**tr.__dict__, "episode_id": 10_000}))
    client.flush()
    second.transport.wait_idle()
    ids = list(second.online.iter_ids())
    assert len(ids) == len(set(ids)), "a rebuilt transition was added a second time"
    assert len(ids) == len(stored) + len(fresh)
    second.save_checkpoint()
    second.close()

    # Resumed from that checkpoint, the learner still knows which episodes came from the store: an actor that
    # was offline until now resends one of them, and it is still not added twice.
    third = Learner(cfg)
    assert third.checkpointer.latest() is not None and len(third.online) == len(ids)
    third.transport.start()
    client = third.transport.connect(cfg.transport, "actor-0")
    for tr in episodes[4].transitions():
        client.send(tr)
    client.flush()
    third.transport.wait_idle()
    assert len(third.online) == len(ids)
    third.close()


def test_resume_false_starts_fresh_even_with_episodes(tmp_path, caplog):
    cfg = load_config([*COMMON, f"run_dir={tmp_path}"])
    learner = Learner(cfg)
    learner.transport.start()
    Actor(cfg, learner.transport.connect(cfg.transport, "actor-0")).run(max_steps=60)
    learner.transport.wait_idle()
    learner.close()
    caplog.set_level(logging.INFO, logger="robot_rl.learner")
    fresh = Learner(load_config([*COMMON, f"run_dir={tmp_path}", "learner.resume=false"]))
    assert len(fresh.online) == 0 and "learner.resume=false: starting fresh" in caplog.text
    fresh.close()
