"""WSRL: warm-start RL without retaining the offline data (registered as ``wsrl``).

"Efficient Online Reinforcement Learning Fine-Tuning Need Not Retain Offline Data" (Zhou, Peng, Li, Levine,
Kumar; ICLR 2025). Three phases, all inside the ordinary learner loop:

1. offline pre-training on the offline (demo) buffer before any actor starts (``offline_pretrain_updates``:
   critic TD steps, actor by behaviour cloning, see :meth:`SAC.pretrain_offline`);
2. warm-up rollouts: the pre-trained policy collects ``warmup_env_steps`` online steps with no update at all
   (:attr:`WSRL.warmup_env_steps`; the learner's UTD budget starts after them), which re-calibrates the online
   buffer to the pre-trained policy instead of the offline data;
3. online RL with RLPD's critic (ensemble, LayerNorm, UTD) on online data only: the learner drops the offline
   buffer once the warm-up steps are in (:attr:`WSRL.keeps_offline_data` is False).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from robot_rl.algorithms.sac import SAC, RLPDConfig
from robot_rl.config import store
from robot_rl.registry import ALGORITHMS
from robot_rl.specs import ActionSpec, ObsSpec


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


store("algo", "wsrl", WSRLConfig)


class WSRL(SAC):
    """SAC/RLPD whose learner hooks say: warm up for ``warmup_env_steps``, then forget the offline buffer."""

    def __init__(self, cfg: WSRLConfig, policy: nn.Module, obs_spec: ObsSpec, action_spec: ActionSpec,
                 device: str | torch.device = "cpu") -> None:
        if cfg.offline_pretrain_updates <= 0 or cfg.warmup_env_steps < 0:
            raise ValueError(f"WSRL needs offline_pretrain_updates > 0 and warmup_env_steps >= 0, got "
                             f"{cfg.offline_pretrain_updates}, {cfg.warmup_env_steps}")
        super().__init__(cfg, policy, obs_spec, action_spec, device)

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
