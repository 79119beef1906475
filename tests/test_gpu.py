"""GPU path of the learner: prefetched batches on CUDA and SAC/RLPD updates on the device.

Skipped with a reason where no CUDA device is present (the development machines and CI have none)."""
import numpy as np
import pytest
import torch

from robot_rl.config import load_config
from robot_rl.registry import ALGORITHMS, POLICIES
from robot_rl.replay import MixedSampler, ReplayBuffer
from robot_rl.sim.point_reach import PointReach, PointReachConfig
from robot_rl.types import Batch
from support import rollout

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")]


def test_sac_updates_on_cuda_from_prefetched_batches():
    env = PointReach(PointReachConfig(obs="pixels", image_size=32))
    cfg = load_config(["env=point_reach", "env.obs=pixels", "env.image_size=32", "algo=rlpd", "policy.encoder=drq",
                       "algo.batch_size=32", "algo.critic_updates_per_actor_update=2"])
    device = torch.device("cuda")
    policy = POLICIES.make("gaussian", cfg.policy, env.obs_spec, env.action_spec).to(device)
    algo = ALGORITHMS.make("rlpd", cfg.algo, policy, env.obs_spec, env.action_spec, device)
    online = ReplayBuffer(env.obs_spec, env.action_spec, 1000)
    online.add_batch(Batch.from_transitions(rollout(env, 300)))
    sampler = MixedSampler(online, None, algo.batch_size_per_update, 0.0, device=device, prefetch=2)
    try:
        for _ in range(5):
            batch = sampler.next()
            assert batch.obs["images/top"].device.type == "cuda" and batch.obs["images/top"].dtype == torch.uint8
            metrics = algo.update(batch)
            assert np.isfinite(list(metrics.values())).all()
    finally:
        sampler.close()
    weights = algo.policy_weights()
    assert all(v.device.type == "cpu" for v in weights.values())  # what actors receive
