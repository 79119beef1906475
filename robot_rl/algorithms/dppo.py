"""DPPO / RL-100-style policy improvement over the denoising chain (registered as ``dppo``).

The K-step stochastic sampler (DDIM with eta > 0, or noisy Euler for flows) is a K-step Gaussian policy with
exact per-step log-probs (``policy.chain_log_prob``). Following RL-100's offline/iterative improvement step,
advantages come from learned critics rather than Monte-Carlo returns, so the algorithm runs on the learner's
ordinary replay batches:

- critics, IQL-style: ``V(s)`` by expectile regression onto ``min Q'(s, a)`` of replay actions, ``Q(s, a)`` by TD
  onto ``r + gamma V(s')`` (no out-of-distribution actions are ever queried for the TD target);
- every ``iteration_updates`` updates the current denoiser is frozen as the behaviour policy ``pi_old``; each update
  samples chains from ``pi_old`` at the batch states, scores the chunk's first action with
  ``A = mean Q(s, a_0) - V(s)`` (normalised), and takes a PPO-clip step on every denoising step ``k`` with its own
  ratio ``pi(x_{k+1} | x_k) / pi_old(x_{k+1} | x_k)`` and clip range ramped linearly from ``clip_first`` (the
  noisiest step) to ``clip_last`` (the final step), plus ``bc_weight`` x the BC loss when the policy predicts
  single actions (an anchor to the data, as RL-100 keeps);
- off-policy evaluation gate: at the end of an iteration the new policy must score at least
  ``ope_margin`` above ``pi_old`` on ``mean Q(s, pi(s)_0)`` over the batch states (same noise for both),
  otherwise the iteration is rolled back. The last gate decision is reported as ``dppo/ope_accepted``.

With ``sequence_critic=true`` ``Q`` is an action-sequence critic (:mod:`robot_rl.algorithms.sequence_critic`): it
scores the executed chunk prefix ``a_t .. a_{t+E-1}`` (``E = policy.execute_steps``) and is trained on executed
chunks from replay with the chunked target ``sum_k gamma^k r_{t+k} + gamma^L V(s_{t+L})``; ``V`` regresses onto
``min Q'(s, executed chunk)``, and the PPO advantage and the OPE gate score the sampled chunk's executed prefix
instead of its first action. Fine-tuning then no longer needs ``policy.execute_steps=1``.
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from robot_rl.algorithms.base import Algorithm
from robot_rl.algorithms.chunk_common import ChunkFinetuneConfig, adam, load_pretrained, make_critic, polyak, scalar
from robot_rl.algorithms.sequence_critic import (bootstrapped_target, check_update_batch, make_sequence_critic,
                                                 replay_actions, scored_actions, sequence_horizon)
from robot_rl.config import store
from robot_rl.registry import ALGORITHMS
from robot_rl.sequence_replay import SequenceBatch
from robot_rl.specs import ActionSpec, ObsSpec
from robot_rl.types import Batch


@dataclass
class DPPOConfig(ChunkFinetuneConfig):
    name: str = "dppo"
    actor_lr: float = 1e-4
    """Adam learning rate of the denoiser (PPO steps)."""
    critic_lr: float = 3e-4
    """Adam learning rate of Q and V."""
    expectile: float = 0.7
    """IQL expectile of V (0.5 = mean; higher approaches the max over replay actions)."""
    clip_first: float = 0.1
    """PPO clip range of the first (noisiest) denoising step."""
    clip_last: float = 0.2
    """PPO clip range of the last denoising step (linear ramp in between)."""
    iteration_updates: int = 20
    """PPO updates per iteration (between snapshots of pi_old and OPE gate checks)."""
    critic_warmup_updates: int = 500
    """Critic-only updates before the first PPO step (advantages are noise until the critics fit)."""
    ope_margin: float = 0.0
    """Required improvement of mean Q(s, pi(s)) over pi_old for an iteration to be kept."""
    bc_weight: float = 0.0
    """Weight of the BC loss on batch actions in the actor loss (``chunk_size=1`` policies, single-action critic)."""


store("algo", "dppo_schema", DPPOConfig)


def expectile_loss(diff: torch.Tensor, expectile: float) -> torch.Tensor:
    weight = torch.where(diff > 0, expectile, 1.0 - expectile)
    return (weight * diff.square()).mean()


class DPPO(Algorithm):
    def __init__(self, cfg: DPPOConfig, policy: nn.Module, obs_spec: ObsSpec, action_spec: ActionSpec,
                 device: str | torch.device = "cpu") -> None:
        for attr in ("chain_log_prob", "sample_chain", "denoiser"):
            if not hasattr(policy, attr):
                raise TypeError(f"DPPO needs a diffusion/flow policy; {type(policy).__name__} has no .{attr}")
        if policy.cfg.chain_min_std <= 0:
            raise ValueError("DPPO needs policy.chain_min_std > 0 (the last denoising step must stay stochastic)")
        if cfg.clip_first <= 0 or cfg.clip_last <= 0:
            raise ValueError(f"clip ranges must be > 0, got {cfg.clip_first}, {cfg.clip_last}")
        self.cfg = cfg
        self.device = torch.device(device)
        load_pretrained(policy, cfg.pretrained)
        self.policy = policy.to(self.device)
        self.policy.steer_noise.fill_(0.0)
        self.policy.use_onestep.fill_(0.0)
        self.policy.requires_grad_(False)
        self.policy.denoiser.requires_grad_(True)
        feat = policy.encoder.output_dim
        hidden = tuple(cfg.critic_hidden_dims)
        # Executed steps per chunk the sequence critic scores (0: Q scores the chunk's first action only).
        self.horizon = sequence_horizon(policy, cfg.sequence_critic)
        if self.horizon:
            self.q, self.q_target = make_sequence_critic(feat, self.horizon, policy.action_dim, hidden, cfg.num_critics,
                                                         cfg.critic_layer_norm, self.device)
        else:
            self.q, self.q_target = make_critic(feat + policy.action_dim, hidden, cfg.num_critics,
                                               cfg.critic_layer_norm, self.device)
        self.v, _ = make_critic(feat, hidden, 1, cfg.critic_layer_norm, self.device)
        self.actor_opt = adam(policy.denoiser.parameters(), cfg.actor_lr)
        self.q_opt = adam(self.q.parameters(), cfg.critic_lr)
        self.v_opt = adam(self.v.parameters(), cfg.critic_lr)
        k = policy.num_steps
        self.clips = torch.linspace(cfg.clip_first, cfg.clip_last, k, device=self.device) if k > 1 \
            else torch.full((1,), cfg.clip_last, device=self.device)  # (K,)
        self.old_denoiser = copy.deepcopy(policy.denoiser).requires_grad_(False)
        self.updates = 0
        self.ppo_updates = 0
        self.accepted = 0
        self.rejected = 0

    @property
    def sequence_horizon(self) -> int:
        return self.horizon

    def _value(self, cond: torch.Tensor) -> torch.Tensor:
        return self.v(cond, cond[:, :0])[0]  # (N,)  (V takes features only: an empty action)

    def _critic_step(self, batch: Batch | SequenceBatch, cond: torch.Tensor,
                     next_cond: torch.Tensor) -> dict[str, float]:
        a = replay_actions(self.policy, batch, self.horizon)  # (N, A) or the executed chunk (N, E * A)
        with torch.no_grad():
            q_min = self.q_target(cond, a).min(0).values
        v_loss = expectile_loss(q_min - self._value(cond), self.cfg.expectile)
        self.v_opt.zero_grad(set_to_none=True)
        v_loss.backward()
        self.v_opt.step()
        with torch.no_grad():
            # V at the state after the (executed chunk's) last step, (N,)
            target = bootstrapped_target(batch, self._value(next_cond), self.cfg.gamma, self.horizon)
        q = self.q(cond, a)
        q_loss = F.mse_loss(q, target.expand_as(q))
        self.q_opt.zero_grad(set_to_none=True)
        q_loss.backward()
        self.q_opt.step()
        polyak(self.q_target, self.q, self.cfg.tau)
        return {"dppo/q_loss": q_loss.item(), "dppo/v_loss": v_loss.item(), "dppo/q": q.detach().mean().item()}

    def _swap_denoiser(self, module: nn.Module) -> nn.Module:
        current = self.policy.denoiser
        self.policy.denoiser = module
        return current

    @torch.no_grad()
    def _policy_value(self, cond: torch.Tensor, noise: torch.Tensor, denoiser: nn.Module) -> float:
        current = self._swap_denoiser(denoiser)
        try:
            return float(self.q(cond, scored_actions(self.policy.sample(cond, noise), self.horizon)).mean())
        finally:
            self._swap_denoiser(current)

    def _ope_gate(self, cond: torch.Tensor) -> float:
        """Keep the iteration's update only if it improves mean Q(s, pi(s)) by ``ope_margin``; else roll back."""
        noise = torch.randn(cond.shape[0], self.policy.chunk_size, self.policy.action_dim, device=self.device)
        new, old = self._policy_value(cond, noise, self.policy.denoiser), self._policy_value(cond, noise,
                                                                                             self.old_denoiser)
        accepted = new >= old + self.cfg.ope_margin
        if accepted:
            self.accepted += 1
        else:
            self.rejected += 1
            self.policy.denoiser.load_state_dict(self.old_denoiser.state_dict())
        self.old_denoiser.load_state_dict(self.policy.denoiser.state_dict())
        return float(accepted)

    def update(self, batch: Batch | SequenceBatch) -> dict[str, float]:
        p = self.policy
        check_update_batch(batch, self.horizon, p.action_dim)
        p.eval()
        with torch.no_grad():
            cond, next_cond = p.features(batch.obs), p.features(batch.next_obs)
        metrics = self._critic_step(batch, cond, next_cond)
        self.updates += 1
        if self.updates <= self.cfg.critic_warmup_updates:
            return metrics
        with torch.no_grad():  # behaviour chains from pi_old and their advantages
            noise = torch.randn(len(batch), p.chunk_size, p.action_dim, device=self.device)
            current = self._swap_denoiser(self.old_denoiser)
            chain = p.sample_chain(cond, noise)  # (N, K + 1, H, A)
            old_logp = p.chain_log_prob(cond, chain)  # (N, K)
            self._swap_denoiser(current)
            scored = scored_actions(chain[:, -1].clamp(-1, 1), self.horizon)  # (N, A) or (N, E * A)
            adv = self.q(cond, scored).mean(0) - self._value(cond)  # (N,)
            adv = (adv - adv.mean()) / adv.std().clamp_min(1e-6)
        logp = p.chain_log_prob(cond, chain)  # (N, K)
        ratio = (logp - old_logp).clamp(-20, 20).exp()
        clip = self.clips[None]
        ppo = -torch.minimum(ratio * adv[:, None], ratio.clamp(1 - clip, 1 + clip) * adv[:, None]).mean()
        loss = ppo
        if self.cfg.bc_weight > 0 and p.chunk_size == 1 and not self.horizon:
            loss = loss + self.cfg.bc_weight * p.bc_loss(cond, p.chunk_targets(batch))
        self.actor_opt.zero_grad(set_to_none=True)
        loss.backward()
        self.actor_opt.step()
        self.ppo_updates += 1
        metrics.update({"dppo/ppo_loss": scalar(ppo), "dppo/ratio_dev": scalar((ratio - 1).abs().mean()),
                        "dppo/clip_frac": scalar(((ratio - 1).abs() > clip).float().mean())})
        if self.ppo_updates % self.cfg.iteration_updates == 0:
            metrics["dppo/ope_accepted"] = self._ope_gate(cond)
        if not all(math.isfinite(v) for v in metrics.values()):
            raise FloatingPointError(f"non-finite DPPO metrics {metrics}")
        return metrics

    def policy_weights(self) -> dict[str, torch.Tensor]:
        return {k: v.detach().cpu() for k, v in self.policy.state_dict().items()}

    def state_dict(self) -> dict[str, Any]:
        return {"policy": self.policy.state_dict(), "old_denoiser": self.old_denoiser.state_dict(),
                "q": self.q.state_dict(), "q_target": self.q_target.state_dict(), "v": self.v.state_dict(),
                "actor_opt": self.actor_opt.state_dict(), "q_opt": self.q_opt.state_dict(),
                "v_opt": self.v_opt.state_dict(),
                "counters": [self.updates, self.ppo_updates, self.accepted, self.rejected]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.policy.load_state_dict(state["policy"])
        self.old_denoiser.load_state_dict(state["old_denoiser"])
        for name in ("q", "q_target", "v", "actor_opt", "q_opt", "v_opt"):
            getattr(self, name).load_state_dict(state[name])
        self.updates, self.ppo_updates, self.accepted, self.rejected = (int(c) for c in state["counters"])


@ALGORITHMS.register("dppo")
def make_dppo(cfg: DPPOConfig, policy: nn.Module, obs_spec: ObsSpec, action_spec: ActionSpec,
              device: str | torch.device = "cpu") -> DPPO:
    return DPPO(cfg, policy, obs_spec, action_spec, device)
