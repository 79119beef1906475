"""Action-sequence critic (``algo.sequence_critic=true``): chunks re-assembled from replay, the chunked TD target,
gradients to every action of the chunk, and DSRL / FQL / DPPO / ADPO trained on executed chunks through the learner
loop."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from robot_rl.actor import Actor
from robot_rl.algorithms.sequence_critic import chunk_td_target, flatten_chunk, make_sequence_critic, scored_actions
from robot_rl.config import load_config
from robot_rl.learner import Learner
from robot_rl.replay import ReplayBuffer
from robot_rl.sequence_replay import SequenceBatch, sample_sequences
from robot_rl.sim.point_reach import PointReach, PointReachConfig
from robot_rl.types import Batch
from support import run_with_actor_thread
from test_sac import collect

pytestmark = pytest.mark.usefixtures("single_thread")


def test_the_sequence_critics_gradient_reaches_every_action_of_the_chunk() -> None:
    torch.manual_seed(0)
    critic, _ = make_sequence_critic(feature_dim=6, horizon=4, action_dim=2, hidden=(32, 32), members=2,
                                     layer_norm=True, device=torch.device("cpu"))
    features = torch.randn(16, 6)
    chunk = torch.randn(16, 4, 2, requires_grad=True)  # (N, E, A)
    critic(features, flatten_chunk(chunk)).sum().backward()
    per_step = chunk.grad.abs().sum(dim=(0, 2))  # (E,): gradient mass on each executed step
    assert (per_step > 1e-6).all(), per_step
    # Changing only the last action changes Q: the critic scores the whole chunk, not its first action.
    later = chunk.detach().clone()
    later[:, 3] += 1.0
    with torch.no_grad():
        assert not torch.allclose(critic(features, flatten_chunk(chunk.detach())), critic(features, flatten_chunk(later)))


def test_chunk_td_target_discounts_rewards_and_bootstraps_after_the_chunk() -> None:
    reward = torch.tensor([[0.0, 0.0, 1.0], [0.0, 1.0, 0.0], [0.5, 0.0, 0.0]])
    valid = torch.tensor([[True, True, True], [True, True, False], [True, False, False]])
    terminated = torch.tensor([False, True, False])
    length = valid.sum(1)
    next_value = torch.tensor([2.0, 5.0, 3.0])
    y = chunk_td_target(reward, valid, terminated, length, next_value, gamma=0.9)
    expected = torch.tensor([0.81 * 1.0 + 0.729 * 2.0, 0.9 * 1.0, 0.5 + 0.9 * 3.0])  # terminated: no bootstrap
    assert torch.allclose(y, expected)


def test_sample_sequences_follows_episodes_and_stops_at_their_end() -> None:
    env = PointReach(PointReachConfig(), seed=0)
    transitions = collect(env, 400, seed=0)
    batch = Batch.from_transitions(transitions)
    buffer = ReplayBuffer(env.obs_spec, env.action_spec, 1000)
    buffer.add_batch(batch)
    seq = sample_sequences(buffer, 256, 5, np.random.default_rng(0))
    assert isinstance(seq, SequenceBatch) and seq.action.shape == (256, 5, 2) and seq.reward.shape == (256, 5)
    # Locate every chunk's start in the original stream by its first action, then compare step by step.
    lookup = {tuple(t.action): i for i, t in enumerate(transitions)}
    for row in range(256):
        i = lookup[tuple(seq.action[row, 0])]
        length = int(seq.length[row])
        assert 1 <= length <= 5 and seq.valid[row, :length].all() and not seq.valid[row, length:].any()
        for k in range(length):
            assert np.array_equal(seq.action[row, k], transitions[i + k].action)
            assert seq.reward[row, k] == transitions[i + k].reward
        last = transitions[i + length - 1]
        assert np.array_equal(seq.next_obs["state"][row], last.next_obs["state"])
        assert bool(seq.terminated[row]) == last.terminated
        if length < 5:  # a chunk only stops short at the end of its episode (or of the data)
            assert last.terminated or last.truncated or i + length == len(transitions)
            assert (seq.action[row, length:] == seq.action[row, length - 1]).all()  # padded with the last action
    assert (seq.length == 5).mean() > 0.5


@pytest.mark.parametrize("algo_name", ["dsrl", "fql", "dppo", "adpo"])
def test_the_sequence_critic_trains_through_the_learner(tmp_path, algo_name: str) -> None:
    # DPPO/ADPO: a short critic warm-up and short iterations, so PPO steps and OPE gates run within 50 updates.
    chain = ["algo.critic_warmup_updates=10", "algo.iteration_updates=5"] if algo_name in ("dppo", "adpo") else []
    cfg = load_config([*chain, "env=point_reach", "policy=flow", "policy.backbone=mlp", "policy.width=32", "policy.depth=2",
                       "policy.chunk_size=4", "policy.execute_steps=3", "policy.inference_steps=3",
                       "policy.noise_actor_hidden_dims=[32,32]", f"algo={algo_name}", "algo.sequence_critic=true",
                       "algo.batch_size=32", "algo.critic_hidden_dims=[32,32]", f"run_dir={tmp_path}",
                       "logger.wandb=disabled", "logger.progress=false", "learner.warmup_transitions=64",
                       "learner.max_env_steps=200", "learner.utd=0.25", "learner.publish_every=10",
                       "transport.kind=inproc", "transport.chunk_size=16"])
    learner = Learner(cfg)
    algo = learner.algo
    assert algo.sequence_horizon == 3  # the executed prefix, not the predicted chunk of 4
    seen = []
    update = algo.update

    def spy(batch):
        seen.append(batch)
        return update(batch)
    algo.update = spy
    actor = Actor(cfg, learner.transport.connect(cfg.transport, "actor-0"))
    learned, _ = run_with_actor_thread(learner, actor, join_s=30)
    assert learned["updates"] >= 0.25 * 200 - 1 and algo.updates == learned["updates"] == len(seen)
    assert all(isinstance(b, SequenceBatch) and b.action.shape == (32, 3, 2) for b in seen)
    assert any(bool((b.length > 1).any()) for b in seen)  # real multi-step chunks reached the critic
    # The learner fed the critic whole chunks: its first layer reads F + 3 x 2 inputs.
    critic = getattr(algo, {"dsrl": "q_action", "fql": "critic"}.get(algo_name, "q"))
    assert critic.layers[0].weight.shape[1] == algo.policy.encoder.output_dim + 3 * 2
    if algo_name in ("dppo", "adpo"):  # the chain policy gradient ran on the sequence critic's advantages
        assert algo.ppo_updates >= 30 and algo.accepted + algo.rejected >= 6


@pytest.mark.parametrize("algo_name", ["dppo", "adpo"])
def test_dppo_advantage_scores_every_executed_action(algo_name: str) -> None:
    """With the sequence critic, DPPO's advantage (and so its PPO step) sees the whole executed prefix: moving
    only the last executed action of the sampled chunk changes the score."""
    from robot_rl.registry import ALGORITHMS, POLICIES

    torch.manual_seed(0)
    cfg = load_config(["env=point_reach", "policy=flow", "policy.backbone=mlp", "policy.width=32",
                       "policy.depth=2", "policy.chunk_size=4", "policy.execute_steps=3", f"algo={algo_name}",
                       "algo.sequence_critic=true", "algo.critic_hidden_dims=[32,32]"])
    env = PointReach(PointReachConfig())
    policy = POLICIES.make("flow", cfg.policy, env.obs_spec, env.action_spec)
    algo = ALGORITHMS.make(algo_name, cfg.algo, policy, env.obs_spec, env.action_spec, "cpu")
    assert algo.sequence_horizon == 3
    cond = torch.randn(8, policy.encoder.output_dim)
    chunk = torch.rand(8, 4, 2) * 2 - 1  # (N, H, A) normalised
    moved = chunk.clone()
    moved[:, 2] = -moved[:, 2]  # the last executed action
    beyond = chunk.clone()
    beyond[:, 3] = -beyond[:, 3]  # predicted but never executed
    with torch.no_grad():
        q = algo.q(cond, scored_actions(chunk, 3))
        assert not torch.allclose(q, algo.q(cond, scored_actions(moved, 3)))
        assert torch.equal(q, algo.q(cond, scored_actions(beyond, 3)))
