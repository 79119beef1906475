"""DSRL (Wagenmaker et al. 2025): SAC in the *initial-noise* space of a frozen diffusion/flow/VLA policy.

The base policy (encoder + denoiser) never changes; a small latent actor ``pi_w(w | s)`` picks the initial noise
``w (H, A)`` (bounded by ``policy.noise_magnitude``) that the frozen K-step sampler turns into a chunk. We use the
noise-aliased variant DSRL-NA, which learns from ordinary replay of executed env actions:

- ``Q_A(s, a)`` on env actions, TD target ``r + gamma min Q_A'(s', pi(s', w'))`` with ``w' ~ pi_w(s')``;
- ``Q_W(s, w)`` distilled from ``Q_A``: regress ``Q_W(s, w)`` onto ``mean Q_A(s, pi(s, w))`` for ``w`` drawn
  from ``pi_w`` and from N(0, I) (so it is also right where the latent actor has not been yet);
- the latent actor maximises ``Q_W(s, w) - alpha log pi_w(w | s)``; alpha auto-tuned.

With ``sequence_critic=true`` ``Q_A`` is an action-sequence critic (:mod:`robot_rl.algorithms.sequence_critic`):
it scores the executed chunk prefix ``a_t .. a_{t+E-1}`` (``E = policy.execute_steps``) with a chunked TD target on
chunks re-assembled from replay, and ``Q_W`` is distilled from it on the sampler's chunk prefix, so the actor may
execute several actions per chunk.

The policy's ``steer_noise`` buffer is set to 1, so actors (which load the published weights) draw their noise
from the latent actor too. Only ``policy.noise_actor`` gets gradients.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from robot_rl.algorithms.base import Algorithm
from robot_rl.algorithms.sequence_critic import (bootstrapped_target, check_update_batch, make_sequence_critic,
                                                 replay_actions, scored_actions, sequence_horizon)
from robot_rl.algorithms.chunk_common import ChunkFinetuneConfig, adam, load_pretrained, make_critic, polyak, scalar
from robot_rl.config import store
from robot_rl.registry import ALGORITHMS
from robot_rl.sequence_replay import SequenceBatch
from robot_rl.specs import ActionSpec, ObsSpec
from robot_rl.types import Batch


@dataclass
class DSRLConfig(ChunkFinetuneConfig):
    name: str = "dsrl"
    actor_lr: float = 1e-3
    """Adam learning rate of the latent-noise actor (1e-3, as the SAC point_reach test: the sparse-reward critic
    must move away from its initial bias within a few thousand updates)."""
    critic_lr: float = 1e-3
    """Adam learning rate of both critics."""
    temperature_lr: float = 3e-4
    """Adam learning rate of log alpha."""
    init_temperature: float = 0.01
    """Initial entropy temperature. Small, so that the entropy bonus does not swamp the nearly flat early Q_W of a
    sparse reward (with 0.1 the latent actor's entropy grew for thousands of updates). Not ablated on its own: the
    measured gain came from ``policy.noise_magnitude`` (issue 5 notes, part 3)."""
    target_entropy_per_dim: float = -0.5
    """Target entropy = this x (H x A), the noise dimension."""
    noise_critic_updates: int = 1
    """Distillation steps of Q_W per update."""


store("algo", "dsrl_schema", DSRLConfig)


class DSRL(Algorithm):
    def __init__(self, cfg: DSRLConfig, policy: nn.Module, obs_spec: ObsSpec, action_spec: ActionSpec,
                 device: str | torch.device = "cpu") -> None:
        for attr in ("noise_actor", "sample", "steer_noise"):
            if not hasattr(policy, attr):
                raise TypeError(f"DSRL needs a diffusion/flow/VLA policy; {type(policy).__name__} has no .{attr}")
        self.cfg = cfg
        self.device = torch.device(device)
        load_pretrained(policy, cfg.pretrained)
        self.policy = policy.to(self.device)
        self.policy.requires_grad_(False)
        self.policy.noise_actor.requires_grad_(True)
        self.policy.steer_noise.fill_(1.0)
        self.policy.use_onestep.fill_(0.0)
        feat = policy.encoder.output_dim
        self.noise_shape = (policy.chunk_size, policy.action_dim)
        noise_dim = policy.chunk_size * policy.action_dim
        hidden = tuple(cfg.critic_hidden_dims)
        # Executed steps per chunk the sequence critic scores (0: single-action critic).
        self.horizon = sequence_horizon(policy, cfg.sequence_critic)
        if cfg.sequence_critic:
            self.q_action, self.q_action_target = make_sequence_critic(feat, self.horizon, policy.action_dim, hidden,
                                                                       cfg.num_critics, cfg.critic_layer_norm,
                                                                       self.device)
        else:
            self.q_action, self.q_action_target = make_critic(feat + policy.action_dim, hidden, cfg.num_critics,
                                                              cfg.critic_layer_norm, self.device)
        self.q_noise, _ = make_critic(feat + noise_dim, hidden, cfg.num_critics, cfg.critic_layer_norm, self.device)
        self.log_alpha = torch.tensor(math.log(cfg.init_temperature), device=self.device, requires_grad=True)
        self.target_entropy = cfg.target_entropy_per_dim * noise_dim
        self.actor_opt = adam(policy.noise_actor.parameters(), cfg.actor_lr)
        self.q_action_opt = adam(self.q_action.parameters(), cfg.critic_lr)
        self.q_noise_opt = adam(self.q_noise.parameters(), cfg.critic_lr)
        self.alpha_opt = adam([self.log_alpha], cfg.temperature_lr)
        self.updates = 0

    @property
    def sequence_horizon(self) -> int:
        return self.horizon

    def _first_action(self, cond: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """Frozen sampler -> what ``Q_A`` scores: the normalised first action ``(N, A)`` of the chunk generated
        from ``noise``, or with the sequence critic its executed prefix flattened ``(N, E * A)``."""
        return scored_actions(self.policy.sample(cond, noise), self.horizon)

    def update(self, batch: Batch | SequenceBatch) -> dict[str, float]:
        p = self.policy
        check_update_batch(batch, self.horizon, p.action_dim)
        self.policy.eval()
        with torch.no_grad():
            cond, next_cond = p.features(batch.obs), p.features(batch.next_obs)  # (N, F) frozen encoder
            next_w, _ = p.noise_actor(next_cond)
            next_a = self._first_action(next_cond, next_w)
            next_q = self.q_action_target(next_cond, next_a).min(0).values  # (N,)
            target = bootstrapped_target(batch, next_q, self.cfg.gamma, self.horizon)
        executed = replay_actions(p, batch, self.horizon)
        q = self.q_action(cond, executed)  # (E, N)
        q_loss = F.mse_loss(q, target.expand_as(q))
        self.q_action_opt.zero_grad(set_to_none=True)
        q_loss.backward()
        self.q_action_opt.step()
        polyak(self.q_action_target, self.q_action, self.cfg.tau)

        for _ in range(self.cfg.noise_critic_updates):
            with torch.no_grad():
                w_actor, _ = p.noise_actor(cond)
                w_prior = torch.randn_like(w_actor).clamp(-p.cfg.noise_magnitude, p.cfg.noise_magnitude)
                w = torch.cat([w_actor, w_prior])  # (2N, H, A)
                cond2 = torch.cat([cond, cond])
                qa = self.q_action(cond2, self._first_action(cond2, w)).mean(0)  # (2N,)
            qw = self.q_noise(cond2, w.flatten(1))
            qw_loss = F.mse_loss(qw, qa.expand_as(qw))
            self.q_noise_opt.zero_grad(set_to_none=True)
            qw_loss.backward()
            self.q_noise_opt.step()

        alpha = self.log_alpha.exp().detach()
        w, log_prob = p.noise_actor(cond)
        actor_q = self.q_noise(cond, w.flatten(1), detach_weights=True).mean(0)  # (N,)
        actor_loss = (alpha * log_prob - actor_q).mean()
        alpha_loss = -(self.log_alpha * (log_prob.detach() + self.target_entropy)).mean()
        self.actor_opt.zero_grad(set_to_none=True)
        self.alpha_opt.zero_grad(set_to_none=True)
        (actor_loss + alpha_loss).backward()
        self.actor_opt.step()
        self.alpha_opt.step()
        self.updates += 1
        metrics = {"dsrl/q_loss": scalar(q_loss), "dsrl/qw_loss": scalar(qw_loss), "dsrl/actor_loss": scalar(actor_loss),
                   "dsrl/q": scalar(q.mean()), "dsrl/alpha": scalar(alpha), "dsrl/entropy": scalar(-log_prob.mean())}
        if not all(math.isfinite(v) for v in metrics.values()):
            raise FloatingPointError(f"non-finite DSRL metrics {metrics}")
        return metrics

    def policy_weights(self) -> dict[str, torch.Tensor]:
        return {k: v.detach().cpu() for k, v in self.policy.state_dict().items()}

    def state_dict(self) -> dict[str, Any]:
        return {"policy": self.policy.state_dict(), "q_action": self.q_action.state_dict(),
                "q_action_target": self.q_action_target.state_dict(), "q_noise": self.q_noise.state_dict(),
                "log_alpha": self.log_alpha.detach().clone(), "actor_opt": self.actor_opt.state_dict(),
                "q_action_opt": self.q_action_opt.state_dict(), "q_noise_opt": self.q_noise_opt.state_dict(),
                "alpha_opt": self.alpha_opt.state_dict(), "updates": self.updates}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.policy.load_state_dict(state["policy"])
        self.q_action.load_state_dict(state["q_action"])
        self.q_action_target.load_state_dict(state["q_action_target"])
        self.q_noise.load_state_dict(state["q_noise"])
        with torch.no_grad():
            self.log_alpha.copy_(state["log_alpha"])
        for name in ("actor_opt", "q_action_opt", "q_noise_opt", "alpha_opt"):
            getattr(self, name).load_state_dict(state[name])
        self.updates = int(state["updates"])


@ALGORITHMS.register("dsrl")
def make_dsrl(cfg: DSRLConfig, policy: nn.Module, obs_spec: ObsSpec, action_spec: ActionSpec,
              device: str | torch.device = "cpu") -> DSRL:
    return DSRL(cfg, policy, obs_spec, action_spec, device)
