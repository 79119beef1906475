"""Actor loop + learner loop in one process over the in-process transport (the single-machine stand-in)."""

import numpy as np

from robot_rl.actor import Actor
from robot_rl.config import load_config
from robot_rl.learner import Learner
from support import run_with_actor_thread


def test_inproc_actor_learner_loop(tmp_path):
    cfg = load_config(["env=point_reach", "algo=sac", f"run_dir={tmp_path}", "logger.wandb=disabled",
                       "logger.progress=false", "learner.warmup_transitions=64", "algo.batch_size=32",
                       "learner.max_env_steps=600", "learner.utd=0.25", "learner.publish_every=10",
                       "replay.prefetch=0", "actor.num_envs=2", "transport.kind=inproc", "transport.chunk_size=16"])
    learner = Learner(cfg)
    actor = Actor(cfg, learner.transport.connect(cfg.transport, "actor-0"))
    learned, result = run_with_actor_thread(learner, actor, join_s=30)
    assert learned["env_steps"] >= 600 and learned["updates"] >= 0.25 * 600
    assert result["weights_version"] > 0  # weights flowed back to the actor
    ids = list(learner.online.iter_ids())
    assert len(ids) == len(set(ids)) and len(ids) <= result["steps"]
    # every episode is in the actor's local store, including the one cut by the stop
    assert sum(len(ep) for ep in actor.store.episodes()) == result["steps"]
    assert (np.asarray([e.actor_id for e in actor.store.episodes()]) == "actor-0").all()
