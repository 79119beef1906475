"""DSRL, FQL, DPPO and ADPO each improve a weak BC policy on a small task within a small budget (fixed seeds).

The task is a contextual bandit built from PointReach states: the best action is the unit vector towards the
goal, reward ``-|a - a*|^2``, one-step episodes. The weak BC policy imitates demos of which half head 100 degrees
off, so it is bimodal; each algorithm must move the policy's (stochastic) actions towards the good mode, through
the learner-facing ``update(batch)`` interface on replay of the policy's own actions.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from robot_rl.algorithms.dsrl import DSRL
from robot_rl.config import load_config
from robot_rl.policies.chunking import ChunkBatch
from robot_rl.registry import ALGORITHMS, POLICIES
from robot_rl.sim.point_reach import PointReach, PointReachConfig
from robot_rl.types import Batch

pytestmark = pytest.mark.usefixtures("single_thread")

ENV = PointReach(PointReachConfig())


def states(n: int, g: torch.Generator) -> torch.Tensor:
    s = torch.rand(n, 6, generator=g)
    s[:, 4:6] = s[:, 2:4] - s[:, 0:2]
    return s


def best(s: torch.Tensor) -> torch.Tensor:
    d = s[:, 4:6]
    return d / d.norm(dim=-1, keepdim=True).clamp_min(1e-6)


def reward(s: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
    return -(a - best(s)).square().sum(-1)


def weak_bc_policy(name: str, g: torch.Generator):
    cfg = load_config(["env=point_reach", f"policy={name}", "policy.backbone=mlp", "policy.width=64",
                       "policy.depth=2", "policy.chunk_size=1", "policy.inference_steps=5",
                       "policy.noise_actor_hidden_dims=[64,64]", "algo=bc"])
    policy = POLICIES.make(name, cfg.policy, ENV.obs_spec, ENV.action_spec)
    bc = ALGORITHMS.make("bc", cfg.algo, policy, ENV.obs_spec, ENV.action_spec, "cpu")
    s = states(512, g)
    a = best(s)
    angle = 1.75
    rotated = torch.stack([np.cos(angle) * a[:, 0] - np.sin(angle) * a[:, 1],
                           np.sin(angle) * a[:, 0] + np.cos(angle) * a[:, 1]], -1)
    a = torch.where((torch.rand(512, generator=g) < 0.5)[:, None], rotated, a)
    for _ in range(400):
        rows = torch.randint(0, 512, (128,), generator=g)
        bc.update(ChunkBatch({"state": s[rows]}, a[rows, None]))
    policy.load_state_dict(bc.ema.state_dict())
    return policy


def score(policy, test: torch.Tensor) -> float:
    policy.eval()
    with torch.no_grad():
        return reward(test, policy.forward_act({"state": test}, False)[:, 0]).mean().item()


def bandit_batch(s: torch.Tensor, a: torch.Tensor, r: torch.Tensor) -> Batch:
    n = len(s)
    return Batch(obs={"state": s}, action=a, reward=r, next_obs={"state": s},
                 terminated=torch.ones(n, dtype=torch.bool), truncated=torch.zeros(n, dtype=torch.bool),
                 intervened=torch.zeros(n, dtype=torch.bool), policy_action=a,
                 episode_id=torch.zeros(n, dtype=torch.long), step=torch.zeros(n, dtype=torch.long))


def finetune(algo, policy, updates: int, g: torch.Generator) -> None:
    buf_s, buf_a, buf_r = [], [], []
    for _ in range(updates):
        with torch.no_grad():  # act with the current policy, store, sample a replay batch
            s = states(8, g)
            policy.eval()
            a = policy.forward_act({"state": s}, False)[:, 0]
        buf_s.append(s), buf_a.append(a), buf_r.append(reward(s, a))
        big_s, big_a, big_r = torch.cat(buf_s), torch.cat(buf_a), torch.cat(buf_r)
        rows = torch.randint(0, len(big_s), (64,), generator=g)
        algo.update(bandit_batch(big_s[rows], big_a[rows], big_r[rows]))


@pytest.mark.parametrize("algo_name,policy_name,overrides,updates,gain", [
    ("dsrl", "flow", ["algo.actor_lr=1e-3", "algo.critic_lr=1e-3"], 250, 0.4),
    ("fql", "flow", ["algo.alpha=1.0", "algo.actor_lr=1e-3", "algo.critic_lr=1e-3"], 250, 0.3),
    ("dppo", "diffusion", ["algo.critic_warmup_updates=60", "algo.actor_lr=3e-4", "algo.critic_lr=1e-3",
                           "algo.iteration_updates=10"], 250, 0.3),
    ("adpo", "diffusion", ["algo.critic_warmup_updates=60", "algo.actor_lr=3e-4", "algo.critic_lr=1e-3",
                           "algo.iteration_updates=10"], 250, 0.3),
])
def test_algorithm_improves_weak_bc_policy(algo_name: str, policy_name: str, overrides: list[str], updates: int,
                                           gain: float) -> None:
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    policy = weak_bc_policy(policy_name, g)
    test = states(512, torch.Generator().manual_seed(1))
    before = score(policy, test)
    cfg = load_config(["env=point_reach", f"policy={policy_name}", f"algo={algo_name}",
                       "algo.critic_hidden_dims=[64,64]", *overrides]).algo
    algo = ALGORITHMS.make(algo_name, cfg, policy, ENV.obs_spec, ENV.action_spec, "cpu")
    finetune(algo, policy, updates, g)
    after = score(policy, test)
    assert after > before + gain, f"{algo_name}: mean reward {before:.3f} -> {after:.3f}"
    # The published weights load strictly into an actor-side copy built from the config and act identically.
    actor_cfg = load_config(["env=point_reach", f"policy={policy_name}", "policy.backbone=mlp", "policy.width=64",
                             "policy.depth=2", "policy.chunk_size=1", "policy.inference_steps=5",
                             "policy.noise_actor_hidden_dims=[64,64]"]).policy
    actor_policy = POLICIES.make(policy_name, actor_cfg, ENV.obs_spec, ENV.action_spec)
    actor_policy.load_state_dict(algo.policy_weights(), strict=True)
    actor_policy.eval()
    with torch.no_grad():
        assert torch.equal(actor_policy.forward_act({"state": test[:8]}, True),
                           policy.forward_act({"state": test[:8]}, True))
    # Checkpoint round trip: a fresh algorithm restored from state_dict publishes the same weights.
    restored = ALGORITHMS.make(algo_name, cfg, POLICIES.make(policy_name, actor_cfg, ENV.obs_spec, ENV.action_spec),
                               ENV.obs_spec, ENV.action_spec, "cpu")
    restored.load_state_dict(algo.state_dict())
    for k, v in algo.policy_weights().items():
        assert torch.equal(v, restored.policy_weights()[k]), k


def test_dsrl_rejects_a_gaussian_policy_and_bad_batches() -> None:
    cfg = load_config(["env=point_reach", "policy=gaussian", "algo=dsrl"])
    gaussian = POLICIES.make("gaussian", cfg.policy, ENV.obs_spec, ENV.action_spec)
    with pytest.raises(TypeError, match="noise_actor"):
        DSRL(cfg.algo, gaussian, ENV.obs_spec, ENV.action_spec)
    g = torch.Generator().manual_seed(0)
    flow_cfg = load_config(["env=point_reach", "policy=flow", "policy.chunk_size=1", "policy.backbone=mlp",
                            "policy.width=32", "algo=dsrl", "algo.critic_hidden_dims=[32]"])
    algo = DSRL(flow_cfg.algo, POLICIES.make("flow", flow_cfg.policy, ENV.obs_spec, ENV.action_spec),
                ENV.obs_spec, ENV.action_spec)
    s = states(4, g)
    with pytest.raises(FloatingPointError):
        algo.update(bandit_batch(s, torch.full((4, 2), float("nan")), torch.zeros(4)))
    with pytest.raises(ValueError, match="actions"):
        algo.update(bandit_batch(s, torch.zeros(4, 3), torch.zeros(4)))
