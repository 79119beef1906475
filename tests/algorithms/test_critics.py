"""SimbaV2 critic and HL-Gauss value loss (``algo.critic``, ``algo.value_loss``): their defining mechanisms, and one
real run of each through the learner loop."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from robot_rl.actor import Actor
from robot_rl.algorithms.simbav2 import SimbaV2EnsembleCritic
from robot_rl.algorithms.value_heads import HLGaussValue
from robot_rl.config import load_config
from robot_rl.learner import Learner
from robot_rl.sequence_replay import SequenceBatch, n_step_rows
from robot_rl.sim.point_reach import PointReach, PointReachConfig
from support import run_with_actor_thread
from test_sac import build, collect, torch_batch

pytestmark = pytest.mark.usefixtures("single_thread")


def test_hl_gauss_targets_sum_to_one_and_recover_the_scalar() -> None:
    head = HLGaussValue(bins=51, v_min=-1.0, v_max=1.0)
    y = torch.tensor([-0.9, -0.37, 0.0, 0.123, 0.5, 0.88])
    probs = head.target_probs(y)  # (6, 51)
    assert torch.allclose(probs.sum(-1), torch.ones(6), atol=1e-6)
    assert (probs >= 0).all()
    # The target's mean is the scalar (to within a small fraction of a bin for points inside the support) ...
    assert torch.allclose(probs @ head.centers, y, atol=2e-3)
    # ... and logits equal to the target's log-probs decode back to it through value().
    assert torch.allclose(head.value(probs.clamp_min(1e-30).log()[None]), y[None], atol=2e-3)
    # Out-of-support targets are clipped to the edge, not lost.
    edge = head.target_probs(torch.tensor([5.0]))
    assert edge.argmax() == 50 and abs(float(edge.sum()) - 1) < 1e-6


def test_hl_gauss_loss_is_minimised_at_the_target() -> None:
    head = HLGaussValue(bins=21, v_min=0.0, v_max=1.0)
    logits = torch.zeros(1, 4, 21, requires_grad=True)  # (E, N, B)
    target = torch.tensor([0.1, 0.4, 0.75, 0.95])
    opt = torch.optim.Adam([logits], lr=0.1)
    for _ in range(300):
        opt.zero_grad()
        head.loss(logits, target).backward()
        opt.step()
    assert torch.allclose(head.value(logits.detach())[0], target, atol=0.01)


def test_simbav2_weights_stay_on_the_unit_sphere_after_an_update() -> None:
    env = PointReach(PointReachConfig(), seed=0)
    algo = build(["algo=rlpd_cpu", "algo.critic=simbav2", "algo.critic_hidden_dims=[64,64]"], env)
    assert isinstance(algo.critic, SimbaV2EnsembleCritic)
    before = [w.detach().clone() for w in algo.critic.normalized_weights()]
    algo.update(torch_batch(collect(env, 512, 0)))
    for w, w0 in zip(algo.critic.normalized_weights(), before):
        assert not torch.equal(w, w0)  # the update moved them ...
        norms = w.detach().norm(dim=1)  # (E, out): every output unit's weight vector
        assert torch.allclose(norms, torch.ones_like(norms), atol=1e-5)  # ... and they are back on the sphere
    # Without the projection an Adam step leaves the sphere: the check above is not vacuous.
    critic = algo.critic
    opt = torch.optim.Adam(critic.parameters(), lr=1e-2)
    x, a = torch.randn(32, critic.embed.shape[1] - 1 - 2), torch.randn(32, 2)
    critic(x, a).square().mean().backward()
    opt.step()
    assert not torch.allclose(critic.embed.detach().norm(dim=1), torch.ones(1), atol=1e-3)


def test_simbav2_features_are_unit_norm_and_members_select() -> None:
    critic = SimbaV2EnsembleCritic(input_dim=6, hidden_dim=16, num_blocks=2, num_members=3, out_features=5)
    x, a = torch.randn(7, 4), torch.randn(7, 2)
    assert critic(x, a).shape == (3, 7, 5)
    subset = critic(x, a, members=torch.tensor([2, 0]))
    full = critic(x, a)
    assert torch.allclose(subset, full[[2, 0]])


def learner_run(tmp_path, overrides: list[str]) -> Learner:
    cfg = load_config(["env=point_reach", f"run_dir={tmp_path}", "logger.wandb=disabled", "logger.progress=false",
                       "learner.warmup_transitions=64", "algo.batch_size=32", "learner.max_env_steps=240",
                       "learner.utd=0.25", "learner.publish_every=10", "replay.prefetch=0",
                       "transport.kind=inproc", "transport.chunk_size=16", *overrides])
    learner = Learner(cfg)
    actor = Actor(cfg, learner.transport.connect(cfg.transport, "actor-0"))
    learned, _ = run_with_actor_thread(learner, actor, join_s=30)
    assert learned["updates"] >= 0.25 * 240 - 1
    return learner


@pytest.mark.parametrize("overrides", [
    ["algo=rlpd_cpu", "algo.offline_pretrain_updates=0", "algo.critic=simbav2", "algo.critic_hidden_dims=[32,32]"],
    ["algo=rlpd_cpu", "algo.offline_pretrain_updates=0", "algo.value_loss=hl_gauss", "algo.value_bins=11"],
    ["algo=rlpd_cpu", "algo.offline_pretrain_updates=10", "algo.n_step=3"],
], ids=["simbav2", "hl_gauss", "n_step"])
def test_learner_trains_with_the_new_critics(tmp_path, overrides) -> None:
    learner = learner_run(tmp_path, overrides)
    algo = learner.algo
    assert algo.num_critic_updates >= 2 * 60
    if algo.cfg.n_step > 1:  # the learner sampled executed sequences for the n-step target
        from robot_rl.sequence_replay import SequenceSampler

        assert isinstance(learner.sampler, SequenceSampler) and learner.sampler.horizon == 3
    elif algo.cfg.critic == "simbav2":
        for w in algo.critic.normalized_weights():
            assert torch.allclose(w.detach().norm(dim=1), torch.ones(1), atol=1e-5)
    elif algo.cfg.value_loss == "hl_gauss":
        assert algo.critic.out_features == 11  # logits over the bins, not a scalar
    # Q-values decode into the HL-Gauss support / stay finite, and the checkpoint holds the critic.
    q = algo._q(algo.critic(torch.zeros(4, algo.encoder.output_dim), torch.zeros(4, 2)))
    assert q.shape == (2, 4) and torch.isfinite(q).all()
    assert np.isfinite(list(algo.state_dict()["critic"].values())[0].numpy()).all()


@pytest.mark.parametrize("critic", ["mlp", "simbav2"])
def test_hl_gauss_critics_start_at_zero_like_the_scalar_critic(critic: str) -> None:
    """A mid-support start (Q = 0.5 on [-0.25, 1.25]) is optimistic for a 0/1 reward and decays only by gamma per
    backup; the output bias starts the HL-Gauss critic (and its target) at Q = 0."""
    env = PointReach(PointReachConfig(), seed=0)
    algo = build(["algo=rlpd_cpu", f"algo.critic={critic}", "algo.value_loss=hl_gauss", "algo.value_min=-0.25",
                  "algo.value_max=1.25", "algo.value_bins=61"], env)
    features = torch.randn(64, algo.encoder.output_dim)
    action = torch.rand(64, 2) * 2 - 1
    with torch.no_grad():
        for net in (algo.critic, algo.target_critic):
            q = algo._q(net(features, action))  # (E, 64)
            assert q.abs().max() < 0.05, q.abs().max()


def _sequence_batch(reward: list[list[float]], length: list[int], terminated: list[bool], obs_dim: int,
                    action_dim: int) -> SequenceBatch:
    n, horizon = len(reward), len(reward[0])
    valid = torch.arange(horizon)[None] < torch.tensor(length)[:, None]  # (N, H)
    return SequenceBatch(obs={"state": torch.randn(n, obs_dim)}, action=torch.rand(n, horizon, action_dim) * 2 - 1,
                         reward=torch.tensor(reward), valid=valid, next_obs={"state": torch.randn(n, obs_dim)},
                         terminated=torch.tensor(terminated), length=torch.tensor(length),
                         from_demo=torch.tensor([True] * (n // 2) + [False] * (n - n // 2)))


def test_n_step_rows_discount_the_sequence_and_bootstrap_with_gamma_to_the_length() -> None:
    """Row 0: success on the 3rd step (reward gamma^2, no bootstrap); row 1: an episode truncated after 2 steps
    (reward 0, bootstrap gamma^2 V); row 2: 3 steps of 0.5 rewards (0.5 (1 + g + g^2), bootstrap gamma^3)."""
    env = PointReach(PointReachConfig(), seed=0)
    algo = build(["algo=rlpd_cpu", "algo.n_step=3", "algo.gamma=0.9"], env)
    assert algo.sequence_horizon == 3
    obs_dim = env.obs_spec.fields["state"].shape[0]
    seq = _sequence_batch([[0, 0, 1], [0, 0, 0], [0.5, 0.5, 0.5]], [3, 2, 3], [True, False, False], obs_dim, 2)
    rows, bootstrap = n_step_rows(seq, algo.cfg.gamma)
    g = 0.9
    assert torch.allclose(rows.reward, torch.tensor([g ** 2, 0.0, 0.5 * (1 + g + g ** 2)]))
    # gamma * bootstrap * (1 - terminated) is the weight of V(s_{t+L}) in the target.
    weight = g * bootstrap * torch.logical_not(rows.terminated).float()
    assert torch.allclose(weight, torch.tensor([0.0, g ** 2, g ** 3]))
    assert torch.equal(rows.action, seq.action[:, 0]) and torch.equal(rows.from_demo, seq.from_demo)


def test_n_step_critic_regresses_onto_the_n_step_target() -> None:
    """Repeated updates on one terminal 3-step sequence batch drive Q(s, a_0) to sum_k gamma^k r_k."""
    env = PointReach(PointReachConfig(), seed=0)
    algo = build(["algo=sac", "algo.n_step=3", "algo.gamma=0.9", "algo.batch_size=4", "algo.critic_lr=3e-3"], env)
    obs_dim = env.obs_spec.fields["state"].shape[0]
    seq = _sequence_batch([[0, 0, 1], [0, 1, 0], [1, 0, 0], [0, 0, 0]], [3, 2, 1, 3], [True, True, True, True],
                          obs_dim, 2)
    for _ in range(400):
        algo.update(seq)
    with torch.no_grad():
        q = algo._q(algo.critic(algo.encoder(seq.obs), seq.action[:, 0])).mean(0)
    assert torch.allclose(q, torch.tensor([0.81, 0.9, 1.0, 0.0]), atol=0.05), q
