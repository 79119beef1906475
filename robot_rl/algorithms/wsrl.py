"""WSRL: warm-start RL without retaining the offline data (registered as ``wsrl``).

"Efficient Online Reinforcement Learning Fine-Tuning Need Not Retain Offline Data" (Zhou, Peng, Li, Levine,
Kumar; ICLR 2025). Three phases, all inside the ordinary learner loop:

1. offline pre-training on the offline (demo) buffer before any actor starts (``offline_pretrain_updates``):
   the critic with a conservative objective, TD + a CQL-style penalty with Cal-QL's floor (the paper
   pre-trains with Cal-QL; :meth:`WSRL.pretrain_offline`), the actor by behaviour cloning. Pre-trained by
   plain TD (``cql_weight=0``), the critic ranked unseen actions above the demos' on PointReach's demo states,
   and on the pick-cube twin the policy fell from 1.0 to 0.0 once the offline buffer was dropped (every seed).
   With the penalty it still fell, more slowly on one seed (0.3 / 0.0 / 0.0 at 3k env steps, README Benchmarks);
2. warm-up rollouts: the pre-trained policy collects ``warmup_env_steps`` online steps with no update at all
   (:attr:`WSRL.warmup_env_steps`; the learner's UTD budget starts after them), which re-calibrates the online
   buffer to the pre-trained policy instead of the offline data;
3. online RL with RLPD's critic (ensemble, LayerNorm, UTD) on online data only: the learner drops the offline
   buffer once the warm-up steps are in (:attr:`WSRL.keeps_offline_data` is False).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from robot_rl.algorithms.sac import SAC, RLPDConfig
from robot_rl.config import store
from robot_rl.registry import ALGORITHMS
from robot_rl.specs import ActionSpec, ObsSpec
from robot_rl.types import Batch


@dataclass
class WSRLConfig(RLPDConfig):
    """RLPD's critic and actor settings plus WSRL's three phases."""

    name: str = "wsrl"
    offline_pretrain_updates: int = 1500
    """Phase 1: updates on the offline buffer alone before the first weights go out (must be > 0 for WSRL)."""
    warmup_env_steps: int = 500
    """Phase 2: online env steps the pre-trained policy collects before the first online update (WSRL: 5k on
    D4RL-sized tasks; a few episodes suffice for short manipulation tasks)."""
    bc_weight: float = 0.0
    """No BC term online: WSRL fine-tunes with plain off-policy RL once the offline data is gone."""
    cql_weight: float = 1.0
    """Phase 1 only: weight of the conservative penalty in the critic loss, CQL's (Kumar et al. 2020) soft maximum
    over sampled actions minus the data action's Q, ``T logsumexp_a(max(Q(s, a), cql_floor) / T) - Q(s, a_data)``,
    with ``a`` = ``cql_actions`` uniform + ``cql_actions`` policy samples + the data action. 0 = plain TD."""
    cql_actions: int = 10
    """Phase 1 only: actions of each kind (uniform, policy) per state in the soft maximum."""
    cql_temperature: float = 0.05
    """Phase 1 only: temperature ``T`` of the soft maximum, in Q units. CQL's ``T = 1`` suits rewards of tens;
    with a 0/1 reward (Q in [0, 1]) it never lets the data action dominate, so the ``- Q(s, a_data)`` term keeps
    pushing the data action's Q up, and bootstrapping compounds that to ``weight / (1 - gamma)``. With ``T``
    at a twentieth of the reward, the penalty vanishes once the data action beats every sample by a few ``T``."""
    cql_floor: float = 0.0
    """Phase 1 only: the penalty does not push a sampled action's Q below this (Cal-QL's calibration, which floors
    at the data's Monte-Carlo return; replay keeps no returns-to-go, so this is the lowest return the task can
    give: 0 for 0/1 success rewards). Unfloored, the unseen actions' Q falls far below anything reachable and
    online fine-tuning spends its first updates undoing that."""


store("algo", "wsrl", WSRLConfig)


class WSRL(SAC):
    """SAC/RLPD whose learner hooks say: warm up for ``warmup_env_steps``, then forget the offline buffer."""

    def __init__(self, cfg: WSRLConfig, policy: nn.Module, obs_spec: ObsSpec, action_spec: ActionSpec,
                 device: str | torch.device = "cpu") -> None:
        if cfg.cql_weight < 0 or cfg.cql_actions < 1 or cfg.cql_temperature <= 0:
            raise ValueError(f"WSRL needs cql_weight >= 0, cql_actions >= 1 and cql_temperature > 0, got "
                             f"{cfg.cql_weight}, {cfg.cql_actions}, {cfg.cql_temperature}")
        if cfg.offline_pretrain_updates <= 0 or cfg.warmup_env_steps < 0:
            raise ValueError(f"WSRL needs offline_pretrain_updates > 0 and warmup_env_steps >= 0, got "
                             f"{cfg.offline_pretrain_updates}, {cfg.warmup_env_steps}")
        super().__init__(cfg, policy, obs_spec, action_spec, device)

    def cql_penalty(self, features: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        """Conservative penalty on ``features (n, F)``, data ``action (n, A)`` (see ``WSRLConfig.cql_weight``):
        per member, averaged over states, summed over members (the TD loss's reduction)."""
        n, k, temperature = features.shape[0], self.cfg.cql_actions, self.cfg.cql_temperature
        low = torch.as_tensor(self.action_spec.low, dtype=torch.float32, device=features.device)
        high = torch.as_tensor(self.action_spec.high, dtype=torch.float32, device=features.device)
        repeated = features.repeat_interleave(k, 0)  # (n k, F)
        uniform = low + (high - low) * torch.rand(n * k, low.shape[0], device=features.device)  # (n k, A)
        with torch.no_grad():
            policy_action, _ = self.policy.sample_from_features(repeated)  # (n k, A)
        sampled = self._q(self.critic(torch.cat([repeated, repeated]), torch.cat([uniform, policy_action])))
        sampled = sampled.view(-1, 2, n, k).transpose(1, 2).reshape(-1, n, 2 * k)  # (E, n, 2k)
        sampled = sampled.clamp_min(self.cfg.cql_floor)  # Cal-QL-style: no push below the lowest return
        q_data = self._q(self.critic(features, action))  # (E, n)
        soft_max = temperature * torch.logsumexp(torch.cat([sampled, q_data[..., None]], -1) / temperature, -1)
        return (soft_max - q_data).mean(-1).sum()  # >= 0; 0 once the data action wins by a margin of a few T

    def pretrain_offline(self, sample_demo_batch: Callable[[], Batch], num_updates: int) -> dict[str, float]:
        """Phase 1: ``num_updates`` x (``critic_updates_per_actor_update`` conservative critic steps: TD + CQL
        penalty, then one behaviour-cloning actor step) on offline batches. Not counted as online updates."""
        if self.cfg.cql_weight == 0 or self._grasp:  # (the discrete gripper's DQN pre-trains by plain TD)
            return super().pretrain_offline(sample_demo_batch, num_updates)
        cfg, metrics = self.cfg, {}
        alpha = self.log_alpha.detach().exp()
        for _ in range(num_updates):
            batch = sample_demo_batch()
            self._check_finite(batch)
            obs, next_obs = batch.obs, batch.next_obs
            if self._augment:  # DrQ shifts, as in the online critic steps
                obs, next_obs = self.encoder.augment(obs), self.encoder.augment(next_obs)
            not_done, reward = torch.logical_not(batch.terminated).float(), batch.reward.float()
            for _ in range(cfg.critic_updates_per_actor_update):
                members = torch.randperm(cfg.num_critics, device=self.device)[:cfg.target_subset_size] \
                    if cfg.target_subset_size < cfg.num_critics else None
                td, q_mean, features = self._critic_loss_fn(obs, batch.action, reward, next_obs, not_done, alpha,
                                                            members)
                penalty = self.cql_penalty(features, batch.action)
                self.critic_optimizer.zero_grad(set_to_none=True)
                (td + cfg.cql_weight * penalty).backward()
                self.critic_optimizer.step()
                if self._project is not None:
                    self._project()
                with torch.no_grad():
                    torch._foreach_lerp_(self._target_params, self._online_params, cfg.tau)
                self.num_critic_updates += 1
            demo_mask = torch.ones(len(batch), device=self.device)
            _, _, bc = self._actor_step(features, alpha, batch.action, demo_mask, bc_only=True)
            metrics = {"critic_loss": float(td.detach()), "cql_penalty": float(penalty.detach()),
                       "q_mean": float(q_mean), "bc_loss": float(bc)}
        return metrics

    @property
    def warmup_env_steps(self) -> int:
        return int(self.cfg.warmup_env_steps)

    @property
    def keeps_offline_data(self) -> bool:
        return False


@ALGORITHMS.register("wsrl")
def make_wsrl(cfg: WSRLConfig, policy: nn.Module, obs_spec: ObsSpec, action_spec: ActionSpec,
              device: str | torch.device = "cpu") -> WSRL:
    return WSRL(cfg, policy, obs_spec, action_spec, device)
