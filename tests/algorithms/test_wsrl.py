"""WSRL (``algo=wsrl``): offline pre-train, warm-up rollouts without updates, then online RL on online data only."""
from __future__ import annotations

import pytest

from robot_rl.actor import Actor
from robot_rl.algorithms.wsrl import WSRL
from robot_rl.config import load_config
from robot_rl.learner import Learner
from robot_rl.sim.point_reach import PointReach, PointReachConfig
from robot_rl.types import Batch
from support import run_with_actor_thread
from test_sac import collect

pytestmark = pytest.mark.usefixtures("single_thread")


def test_wsrl_drops_the_offline_buffer_after_warm_up(tmp_path) -> None:
    warmup, max_steps, utd = 120, 320, 0.25
    cfg = load_config(["env=point_reach", "algo=wsrl", f"run_dir={tmp_path}", "logger.wandb=disabled",
                       "logger.progress=false", "algo.batch_size=32", "algo.num_critics=2",
                       "algo.critic_updates_per_actor_update=2", "algo.offline_pretrain_updates=5",
                       f"algo.warmup_env_steps={warmup}", "learner.warmup_transitions=64",
                       f"learner.max_env_steps={max_steps}", f"learner.utd={utd}", "learner.publish_every=10",
                       "replay.prefetch=0", "transport.kind=inproc", "transport.chunk_size=16"])
    learner = Learner(cfg)
    assert isinstance(learner.algo, WSRL) and not learner.algo.keeps_offline_data
    offline = Batch.from_transitions(collect(PointReach(PointReachConfig(), seed=1), 300, seed=1))
    learner.demo.add_batch(offline)  # the offline dataset
    old_demo = learner.demo
    assert len(old_demo) == 300
    seen: list[tuple[int, int, int]] = []  # (env steps, demo rows in the batch, demo buffer size) per update
    update = learner.algo.update

    def spy(batch, bc_only=False):
        if not bc_only:  # online updates only (the offline phase calls update(bc_only=True))
            seen.append((learner.online_transitions, int(batch.from_demo.sum()), len(learner.demo)))
        return update(batch, bc_only=bc_only)
    learner.algo.update = spy
    actor = Actor(cfg, learner.transport.connect(cfg.transport, "actor-0"))
    learned, _ = run_with_actor_thread(learner, actor, join_s=30)
    # Phase 1 ran on the offline data (5 BC/TD updates, not counted as online updates).
    assert learner.algo.num_critic_updates >= 5 * 2
    # Phase 2: no online update before the warm-up steps were in.
    assert seen and min(steps for steps, _, _ in seen) >= warmup
    # Phase 3: the offline buffer is gone and no online batch ever held an offline row.
    assert learner._offline_dropped and len(learner.demo) == 0 and learner.demo is not old_demo
    assert all(demo_rows == 0 and size == 0 for _, demo_rows, size in seen)
    # UTD counts from the end of the warm-up: utd x (env steps - warm-up) updates, not utd x env steps.
    # The run stops at the budget of max_env_steps (the actor may overshoot by a chunk or two meanwhile).
    assert learned["updates"] == int(utd * (max_steps - warmup)) < int(utd * max_steps)


def test_wsrl_needs_an_offline_phase() -> None:
    cfg = load_config(["env=point_reach", "algo=wsrl", "algo.offline_pretrain_updates=0"])
    env = PointReach(PointReachConfig())
    from robot_rl.registry import ALGORITHMS, POLICIES

    policy = POLICIES.make(cfg.policy.name, cfg.policy, env.obs_spec, env.action_spec)
    with pytest.raises(ValueError, match="offline_pretrain_updates"):
        ALGORITHMS.make("wsrl", cfg.algo, policy, env.obs_spec, env.action_spec, "cpu")
