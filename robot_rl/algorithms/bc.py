"""Behaviour cloning with an EMA of the weights (registered as ``bc``): pre-training for any policy.

``update(batch)`` takes one Adam step on ``policy.loss(batch)``: a per-step :class:`~robot_rl.types.Batch` from the
learner's replay (Gaussian policies, or chunked ones with ``chunk_size=1``) or a
:class:`~robot_rl.policies.chunking.ChunkBatch` of action chunks (``robot-rl pretrain``). The published weights
are the exponential moving average (Diffusion Policy evaluates its EMA model; it is markedly smoother).
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from robot_rl.algorithms.base import Algorithm
from robot_rl.config import AlgoConfig, store
from robot_rl.registry import ALGORITHMS
from robot_rl.specs import ActionSpec, ObsSpec


@dataclass
class BCConfig(AlgoConfig):
    name: str = "bc"
    lr: float = 1e-3
    """AdamW learning rate."""
    weight_decay: float = 1e-6
    """AdamW weight decay."""
    ema_decay: float = 0.995
    """EMA factor of the published weights (0 publishes the raw weights)."""
    grad_clip: float = 10.0
    """Global gradient-norm clip (0 disables it)."""
    warmup_updates: int = 100
    """Linear learning-rate warm-up."""


store("algo", "bc", BCConfig)


class BC(Algorithm):
    def __init__(self, cfg: BCConfig, policy: nn.Module, obs_spec: ObsSpec, action_spec: ActionSpec,
                 device: str | torch.device = "cpu") -> None:
        if not 0.0 <= cfg.ema_decay < 1.0:
            raise ValueError(f"ema_decay must be in [0, 1), got {cfg.ema_decay}")
        self.cfg = cfg
        self.device = torch.device(device)
        self.policy = policy.to(self.device)
        self.ema = copy.deepcopy(self.policy).requires_grad_(False).eval()
        self.params = [p for p in self.policy.parameters() if p.requires_grad]
        self.opt = torch.optim.AdamW(self.params, lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.updates = 0

    def update(self, batch: Any) -> dict[str, float]:
        self.policy.train()
        for group in self.opt.param_groups:
            group["lr"] = self.cfg.lr * min(1.0, (self.updates + 1) / max(self.cfg.warmup_updates, 1))
        loss = self.policy.loss(batch)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(self.params, self.cfg.grad_clip) if self.cfg.grad_clip > 0 \
            else torch.zeros(())
        self.opt.step()
        self._update_ema()
        self.updates += 1
        return {"bc/loss": float(loss.detach()), "bc/grad_norm": float(grad_norm)}

    @torch.no_grad()
    def _update_ema(self) -> None:
        # Warm-up as in diffusers' EMAModel: decay grows with the update count, so early EMA is not stale.
        decay = min(self.cfg.ema_decay, (1 + self.updates) / (10 + self.updates))
        for e, p in zip(self.ema.parameters(), self.policy.parameters()):
            e.lerp_(p, 1.0 - decay)
        for e, b in zip(self.ema.buffers(), self.policy.buffers()):
            e.copy_(b)

    def ema_policy(self) -> nn.Module:
        """The policy whose weights are published (the EMA copy, or the raw one when ``ema_decay=0``)."""
        return self.ema if self.cfg.ema_decay > 0 else self.policy

    def policy_weights(self) -> dict[str, torch.Tensor]:
        return {k: v.detach().cpu() for k, v in self.ema_policy().state_dict().items()}

    def state_dict(self) -> dict[str, Any]:
        return {"policy": self.policy.state_dict(), "ema": self.ema.state_dict(), "opt": self.opt.state_dict(),
                "updates": self.updates}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.policy.load_state_dict(state["policy"])
        self.ema.load_state_dict(state["ema"])
        self.opt.load_state_dict(state["opt"])
        self.updates = int(state["updates"])


@ALGORITHMS.register("bc")
def make_bc(cfg: BCConfig, policy: nn.Module, obs_spec: ObsSpec, action_spec: ActionSpec,
            device: str | torch.device = "cpu") -> BC:
    return BC(cfg, policy, obs_spec, action_spec, device)
