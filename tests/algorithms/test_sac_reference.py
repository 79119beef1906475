"""The speed-tuned SAC update (batched critic ensemble, fused Adam, foreach Polyak, merged actor/temperature
step, cheap metrics; both the autograd path and the hand-written one of ``sac_handwritten.py``) computes the
same SAC update as a straightforward textbook implementation: per-member ``nn.Linear``-style MLP critics in a
Python loop, plain (non-fused, non-foreach) ``torch.optim.Adam`` per network, a Polyak loop, separate actor and
temperature losses and backward passes.

Both start from the same weights and draw the policy noise from the same seeded generator in the same order
(next-state action first, then the actor's action), so after several updates every parameter, target and
the temperature must agree to float32 round-off.
"""
from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from robot_rl.algorithms.sac import SAC
from robot_rl.config import load_config
from robot_rl.registry import ALGORITHMS, POLICIES
from robot_rl.specs import ActionSpec, ArraySpec, ObsSpec
from robot_rl.types import Batch

pytestmark = pytest.mark.usefixtures("single_thread")

STATE_DIM, ACTION_DIM, BATCH = 11, 3, 64
OBS_SPEC = ObsSpec({"state": ArraySpec((STATE_DIM,), "float32")})
ACTION_SPEC = ActionSpec((ACTION_DIM,), [-1.0, -2.0, 0.0], [1.0, 2.0, 0.5])  # non-unit bounds: scale and bias


def build(overrides: list[str]) -> SAC:
    cfg = load_config(["algo=sac", f"algo.batch_size={BATCH}", "algo.critic_hidden_dims=[32,32]",
                       "policy.hidden_dims=[32,32]", "algo.init_temperature=0.5",
                       # Large steps and a fast target: a slip anywhere (a tau, a learning rate, a term of a
                       # loss) moves the weights well beyond float32 round-off within the few updates compared.
                       "algo.tau=0.3", "algo.actor_lr=1e-2", "algo.critic_lr=1e-2", "algo.temperature_lr=1e-2",
                       *overrides])
    policy = POLICIES.make("gaussian", cfg.policy, OBS_SPEC, ACTION_SPEC)
    return ALGORITHMS.make("sac", cfg.algo, policy, OBS_SPEC, ACTION_SPEC, "cpu")


def random_batch(rng: np.random.Generator, batch: int = BATCH, state_dim: int = STATE_DIM,
                 action_spec: ActionSpec = ACTION_SPEC) -> Batch:
    """A state-only batch with actions inside ``action_spec``'s bounds and 20% terminal rows."""
    low, high = np.array(action_spec.low, np.float32), np.array(action_spec.high, np.float32)
    action_dim = len(low)
    return Batch.from_arrays({
        "obs/state": rng.normal(1.0, 2.0, (batch, state_dim)).astype(np.float32),
        "next_obs/state": rng.normal(1.0, 2.0, (batch, state_dim)).astype(np.float32),
        "action": rng.uniform(low, high, (batch, action_dim)).astype(np.float32),
        "policy_action": np.zeros((batch, action_dim), np.float32),
        "reward": rng.normal(size=batch).astype(np.float32),
        "terminated": rng.random(batch) < 0.2,
        "truncated": np.zeros(batch, bool), "intervened": np.zeros(batch, bool),
        "episode_id": np.zeros(batch, np.int64), "step": np.zeros(batch, np.int64),
    }).to_torch("cpu")


class ReferenceSAC:
    """Textbook SAC on copies of ``algo``'s initial networks; the weights are re-laid out per member."""

    def __init__(self, algo: SAC) -> None:
        cfg = algo.cfg
        self.cfg, self.target_entropy = cfg, algo.target_entropy
        policy = algo.policy
        self.state_mean = policy.encoder.state_mean.clone()
        self.state_std = policy.encoder.state_std.clone()
        self.scale, self.bias = policy.action_scale.clone(), policy.action_bias.clone()
        self.log_std_min, self.log_std_max = policy.cfg.log_std_min, policy.cfg.log_std_max
        self.actor = [p.detach().clone().requires_grad_(True) for p in policy.actor_parameters()]  # W, b, ...
        # Member e's layers as [weight (in, out), bias (1, out), ...], one list per member.
        self.critics = [[p.clone() for p in member_params(algo.critic, e)] for e in range(cfg.num_critics)]
        for member in self.critics:
            for p in member:
                p.requires_grad_(True)
        self.targets = [[p.detach().clone() for p in member] for member in self.critics]
        self.log_alpha = torch.tensor(math.log(cfg.init_temperature), requires_grad=True)
        plain = dict(foreach=False, fused=False)
        self.actor_opt = torch.optim.Adam(self.actor, lr=cfg.actor_lr, **plain)
        self.critic_opt = torch.optim.Adam([p for m in self.critics for p in m], lr=cfg.critic_lr, **plain)
        self.alpha_opt = torch.optim.Adam([self.log_alpha], lr=cfg.temperature_lr, **plain)

    def features(self, state: torch.Tensor) -> torch.Tensor:
        return ((state - self.state_mean) / self.state_std).clamp(-10.0, 10.0)

    def sample(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = features
        for i in range(0, len(self.actor) - 2, 2):
            x = torch.relu(F.linear(x, self.actor[i], self.actor[i + 1]))
        mean, raw = F.linear(x, self.actor[-2], self.actor[-1]).chunk(2, dim=-1)
        log_std = self.log_std_min + 0.5 * (self.log_std_max - self.log_std_min) * (torch.tanh(raw) + 1.0)
        u = mean + log_std.exp() * torch.randn_like(mean)
        normal = torch.distributions.Normal(mean, log_std.exp())
        # log(1 - tanh(u)^2) written stably; the textbook log(1 - tanh^2 + eps) would differ by the eps.
        log_prob = (normal.log_prob(u) - 2.0 * (math.log(2.0) - u - F.softplus(-2.0 * u))).sum(-1)
        return torch.tanh(u) * self.scale + self.bias, log_prob

    @staticmethod
    def q(member: list[torch.Tensor], features: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        x = torch.cat([features, action], -1)
        for i in range(0, len(member) - 2, 2):
            x = torch.relu(x @ member[i] + member[i + 1])
        return (x @ member[-2] + member[-1]).squeeze(-1)  # (n,)

    def update(self, batch: Batch) -> None:
        cfg = self.cfg
        alpha = self.log_alpha.detach().exp()
        obs, next_obs = self.features(batch.obs["state"]), self.features(batch.next_obs["state"])
        with torch.no_grad():
            next_action, next_log_prob = self.sample(next_obs)
            next_v = torch.stack([self.q(m, next_obs, next_action) for m in self.targets]).min(0).values
            if cfg.backup_entropy:
                next_v = next_v - alpha * next_log_prob
            target = batch.reward + cfg.gamma * (~batch.terminated).float() * next_v
        critic_loss = sum(0.5 * ((self.q(m, obs, batch.action) - target) ** 2).mean() for m in self.critics)
        self.critic_opt.zero_grad()
        critic_loss.backward()
        self.critic_opt.step()
        with torch.no_grad():
            for member, target_member in zip(self.critics, self.targets):
                for p, tp in zip(member, target_member):
                    tp.mul_(1.0 - cfg.tau).add_(cfg.tau * p)
        action, log_prob = self.sample(obs)
        qs = torch.stack([self.q([p.detach() for p in m], obs, action) for m in self.critics])
        q_pi = qs.min(0).values if cfg.actor_q_reduction == "min" else qs.mean(0)
        actor_loss = (alpha * log_prob - q_pi).mean()
        self.actor_opt.zero_grad()
        actor_loss.backward()
        self.actor_opt.step()
        alpha_loss = -(self.log_alpha * (log_prob.detach() + self.target_entropy)).mean()
        self.alpha_opt.zero_grad()
        alpha_loss.backward()
        self.alpha_opt.step()


def member_params(critic: torch.nn.Module, e: int) -> list[torch.Tensor]:
    """Member ``e`` of a batched ensemble critic: ``[weight (in, out), bias (1, out), ...]`` per layer."""
    return [t.detach()[e] for t in critic.parameters()]


@pytest.mark.parametrize("handwritten", [True, False], ids=["handwritten", "autograd"])
@pytest.mark.parametrize("overrides", [[], ["algo.backup_entropy=true", "algo.actor_q_reduction=mean",
                                             "algo.num_critics=3", "algo.target_subset_size=3"]],
                         ids=["sac", "soft-backup-mean-3-critics"])
def test_update_matches_textbook_sac(overrides: list[str], handwritten: bool) -> None:
    torch.manual_seed(0)
    overrides = [*overrides, f"algo.handwritten_update={str(handwritten).lower()}"]
    algo = build(overrides)
    assert (algo._handwritten is not None) == handwritten  # both update paths are checked
    rng = np.random.default_rng(0)
    states = torch.as_tensor(rng.normal(1.0, 2.0, (500, STATE_DIM)).astype(np.float32))
    algo.policy.fit_state_normalization(states)  # non-trivial normalisation, as after fitting on demos
    reference = ReferenceSAC(algo)
    batches = [random_batch(rng) for _ in range(4)]
    for step, batch in enumerate(batches):
        torch.manual_seed(100 + step)
        metrics = algo.update(batch)
        torch.manual_seed(100 + step)
        reference.update(batch)
        assert all(math.isfinite(v) for v in metrics.values()), metrics
    tol = dict(rtol=1e-4, atol=2e-6)
    for ours, ref in zip(algo.policy.actor_parameters(), reference.actor):
        torch.testing.assert_close(ours.detach(), ref.detach(), **tol)
    for e in range(algo.cfg.num_critics):
        for ours, ref in zip(member_params(algo.critic, e), reference.critics[e]):
            torch.testing.assert_close(ours, ref.detach(), **tol)
        for ours, ref in zip(member_params(algo.target_critic, e), reference.targets[e]):
            torch.testing.assert_close(ours, ref, **tol)
    torch.testing.assert_close(algo.log_alpha.detach(), reference.log_alpha.detach(), **tol)
    # The updates really moved the weights (the comparison is not between two untouched copies).
    start = build(overrides)
    assert not torch.allclose(start.log_alpha, algo.log_alpha)
    assert algo.num_updates == len(batches)
