"""WSRL (``algo=wsrl``): offline pre-train, warm-up rollouts without updates, then online RL on online data only."""
from __future__ import annotations

import numpy as np
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


@pytest.mark.parametrize("cql_weight", [0.0, 1.0])
def test_conservative_pretrain_ranks_the_demo_actions_above_the_rest(cql_weight: float) -> None:
    """WSRL's phase 1 with CQL's penalty: Q(s, a_demo) ends well above Q(s, a_uniform) on the demo states, which
    plain TD pre-training (cql_weight=0) does not do; the actor is behaviour-cloned either way."""
    import torch

    from test_sac import build, expert_transitions

    env = PointReach(PointReachConfig(), seed=0)
    algo = build(["algo=wsrl", "algo.num_critics=2", "algo.critic_updates_per_actor_update=1", "algo.batch_size=64",
                  f"algo.cql_weight={cql_weight}"], env)
    demos = Batch.from_transitions(expert_transitions(env, 400, seed=0))
    rng = np.random.default_rng(0)

    def sample() -> Batch:  # ~64 demo rows, as the learner's sample_demo hands them in
        rows = demos.select(rng.random(len(demos)) < 64 / len(demos)).to_torch("cpu")
        rows.from_demo = torch.ones(len(rows), dtype=torch.bool)
        return rows

    metrics = algo.pretrain_offline(sample, 300)
    states = demos.to_torch("cpu")
    with torch.no_grad():
        features = algo.encoder(states.obs)
        q_demo = algo._q(algo.critic(features, states.action)).mean()
        q_uniform = algo._q(algo.critic(features, torch.rand_like(states.action) * 2 - 1)).mean()
    gap = float(q_demo - q_uniform)
    print(f"cql_weight {cql_weight}: Q(demo a) {float(q_demo):.3f} Q(uniform a) {float(q_uniform):.3f}")
    assert q_demo < 1.1  # 0/1 reward: no inflation of the data actions' Q beyond the reachable return
    assert algo.num_critic_updates == 300 and metrics["bc_loss"] < 0.2
    if cql_weight > 0:
        assert "cql_penalty" in metrics and gap > 0.3, gap
    else:
        assert gap < 0.3, gap
