"""FQL (Park, Li & Levine 2025): flow BC + a one-step actor distilled from the flow + Q maximisation.

- Critic: ensemble ``Q(s, a)`` on env actions; TD target with the one-step actor's action at ``s'``. With
  ``sequence_critic=true`` it scores the executed chunk prefix instead (chunked TD target, see
  :mod:`robot_rl.algorithms.sequence_critic`) and the actor is improved on the prefix it executes.
- Flow policy: keeps its flow-matching BC loss on the batch actions (exact FQL) when it predicts single actions
  (``chunk_size=1``); a chunked flow (``H > 1``) cannot be cloned from per-step replay and stays as pre-trained
  (its role here is the distillation teacher).
- One-step actor ``mu(s, z)`` (the policy's ``onestep`` head at noise level 1):
  ``alpha * |mu(s, z) - flow(s, z)|^2 - lambda Q(s, mu(s, z)_0)``, with ``lambda = 1 / mean|Q|`` (FQL's Q-loss
  normalisation), so ``alpha`` trades imitation for improvement independently of the reward scale.

``use_onestep`` is set, so actors act with the one-step actor (one network call per chunk).
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
class FQLConfig(ChunkFinetuneConfig):
    name: str = "fql"
    actor_lr: float = 3e-4
    """Adam learning rate of the one-step actor."""
    flow_lr: float = 3e-4
    """Adam learning rate of the flow BC step (encoder + denoiser)."""
    alpha: float = 10.0
    """Distillation weight of the one-step actor's loss (FQL's alpha)."""
    train_flow: bool = True
    """Keep training the flow by BC on batch actions (only possible for ``chunk_size=1``)."""


store("algo", "fql_schema", FQLConfig)


class FQL(Algorithm):
    def __init__(self, cfg: FQLConfig, policy: nn.Module, obs_spec: ObsSpec, action_spec: ActionSpec,
                 device: str | torch.device = "cpu") -> None:
        for attr in ("onestep", "sample", "use_onestep", "bc_loss"):
            if not hasattr(policy, attr):
                raise TypeError(f"FQL needs a flow/diffusion policy; {type(policy).__name__} has no .{attr}")
        self.cfg = cfg
        self.device = torch.device(device)
        load_pretrained(policy, cfg.pretrained)
        self.policy = policy.to(self.device)
        self.policy.steer_noise.fill_(0.0)
        self.policy.use_onestep.fill_(1.0)
        self.horizon = sequence_horizon(policy, cfg.sequence_critic)  # 0: single-action critic
        # Flow BC needs per-step actions of a chunk_size=1 flow; chunk batches never carry those.
        self.train_flow = cfg.train_flow and policy.chunk_size == 1 and not self.horizon
        self.policy.requires_grad_(False)
        self.policy.onestep.requires_grad_(True)
        if self.train_flow:
            for param in policy.generator_parameters():
                param.requires_grad_(True)
            self.flow_opt = adam(policy.generator_parameters(), cfg.flow_lr)
        if self.horizon:
            self.critic, self.target_critic = make_sequence_critic(
                policy.encoder.output_dim, self.horizon, policy.action_dim, tuple(cfg.critic_hidden_dims),
                cfg.num_critics, cfg.critic_layer_norm, self.device)
        else:
            self.critic, self.target_critic = make_critic(policy.encoder.output_dim + policy.action_dim,
                                                          tuple(cfg.critic_hidden_dims), cfg.num_critics,
                                                          cfg.critic_layer_norm, self.device)
        self.actor_opt = adam(policy.onestep.parameters(), cfg.actor_lr)
        self.critic_opt = adam(self.critic.parameters(), cfg.critic_lr)
        self.updates = 0

    def _onestep(self, cond: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return self.policy.onestep(z, torch.ones(z.shape[0], device=z.device), cond).clamp(-1.0, 1.0)

    @property
    def sequence_horizon(self) -> int:
        return self.horizon

    def update(self, batch: Batch | SequenceBatch) -> dict[str, float]:
        p = self.policy
        check_update_batch(batch, self.horizon, p.action_dim)
        p.eval()
        shape = (len(batch), p.chunk_size, p.action_dim)
        metrics: dict[str, float] = {}
        if self.train_flow:
            p.train()
            flow_loss = p.loss(batch)
            self.flow_opt.zero_grad(set_to_none=True)
            flow_loss.backward()
            self.flow_opt.step()
            p.eval()
            metrics["fql/flow_loss"] = flow_loss.item()
        with torch.no_grad():
            cond, next_cond = p.features(batch.obs), p.features(batch.next_obs)  # (N, F)
            next_a = scored_actions(self._onestep(next_cond, torch.randn(shape, device=self.device)), self.horizon)
            next_q = self.target_critic(next_cond, next_a).min(0).values  # (N,)
            target = bootstrapped_target(batch, next_q, self.cfg.gamma, self.horizon)
        executed = replay_actions(p, batch, self.horizon)
        q = self.critic(cond, executed)  # (E, N)
        critic_loss = F.mse_loss(q, target.expand_as(q))
        self.critic_opt.zero_grad(set_to_none=True)
        critic_loss.backward()
        self.critic_opt.step()
        polyak(self.target_critic, self.critic, self.cfg.tau)

        z = torch.randn(shape, device=self.device)
        with torch.no_grad():
            teacher = p.sample(cond, z)  # (N, H, A) the flow's chunk from the same noise
        chunk = self._onestep(cond, z)
        distill = F.mse_loss(chunk, teacher)
        actor_q = self.critic(cond, scored_actions(chunk, self.horizon), detach_weights=True).mean(0)  # (N,)
        q_loss = -actor_q.mean() / actor_q.abs().mean().detach().clamp_min(1e-6)
        actor_loss = self.cfg.alpha * distill + q_loss
        self.actor_opt.zero_grad(set_to_none=True)
        actor_loss.backward()
        self.actor_opt.step()
        self.updates += 1
        metrics.update({"fql/critic_loss": scalar(critic_loss), "fql/distill": scalar(distill),
                        "fql/q": scalar(actor_q.mean()), "fql/actor_loss": scalar(actor_loss)})
        if not all(math.isfinite(v) for v in metrics.values()):
            raise FloatingPointError(f"non-finite FQL metrics {metrics}")
        return metrics

    def policy_weights(self) -> dict[str, torch.Tensor]:
        return {k: v.detach().cpu() for k, v in self.policy.state_dict().items()}

    def state_dict(self) -> dict[str, Any]:
        out = {"policy": self.policy.state_dict(), "critic": self.critic.state_dict(),
               "target_critic": self.target_critic.state_dict(), "actor_opt": self.actor_opt.state_dict(),
               "critic_opt": self.critic_opt.state_dict(), "updates": self.updates}
        if self.train_flow:
            out["flow_opt"] = self.flow_opt.state_dict()
        return out

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.policy.load_state_dict(state["policy"])
        self.critic.load_state_dict(state["critic"])
        self.target_critic.load_state_dict(state["target_critic"])
        self.actor_opt.load_state_dict(state["actor_opt"])
        self.critic_opt.load_state_dict(state["critic_opt"])
        if self.train_flow:
            self.flow_opt.load_state_dict(state["flow_opt"])
        self.updates = int(state["updates"])


@ALGORITHMS.register("fql")
def make_fql(cfg: FQLConfig, policy: nn.Module, obs_spec: ObsSpec, action_spec: ActionSpec,
             device: str | torch.device = "cpu") -> FQL:
    return FQL(cfg, policy, obs_spec, action_spec, device)
