"""ADPO: Adam-based Diffusion Policy Optimization (registered as ``adpo``; diffusion/flow chunk policies).

"Adaptive Diffusion Policy Optimization for Robotic Manipulation" (Jiang & Yang, 2025, arXiv 2505.08376). ADPO
keeps DPPO's policy-gradient framework over the denoising chain (here :class:`robot_rl.algorithms.dppo.DPPO`: IQL
critics, PPO-clip ratio per denoising step, OPE gate) and changes how the denoiser is optimised: an adaptive
gradient method with a discount factor ``lambda`` ("ADAPG") that interpolates between Adam and RMSProp, with
AdamW's decoupled weight decay.

What is implemented (:class:`ADAPG`), per parameter with gradient ``g_i`` at step ``i``::

    m_i = beta1 m_{i-1} + (1 - beta1) g_i          v_i = beta2 v_{i-1} + (1 - beta2) g_i^2
    m^_i = m_i / (1 - beta1^i)                     v^_i = v_i / (1 - beta2^i)
    d_i = lambda m^_i + (1 - lambda) g_i           (lambda = 1: Adam; lambda = 0: RMSProp, bias-corrected)
    theta_i = theta_{i-1} - lr (d_i / (sqrt(v^_i) + eps) + weight_decay theta_{i-1})

The paper's exact ADAPG update could only be read in summary here (the search excerpt names the discount factor
and the Adam/RMSProp interpolation but is cut off before the formula), so the mixing above is this project's
reading of it, stated plainly; ``adapg_lambda=1, weight_decay=0`` reduces ADPO to DPPO with Adam.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from robot_rl.algorithms.dppo import DPPO, DPPOConfig
from robot_rl.config import store
from robot_rl.registry import ALGORITHMS
from robot_rl.specs import ActionSpec, ObsSpec


class ADAPG(torch.optim.Optimizer):
    """Adam/RMSProp interpolation with discount factor ``lam`` and decoupled weight decay (see module doc)."""

    def __init__(self, params, lr: float = 1e-4, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 lam: float = 0.9, weight_decay: float = 0.0) -> None:
        if not 0.0 <= lam <= 1.0:
            raise ValueError(f"ADAPG lambda must be in [0, 1], got {lam}")
        if lr <= 0 or not (0 <= betas[0] < 1 and 0 <= betas[1] < 1):
            raise ValueError(f"bad ADAPG lr/betas {lr}, {betas}")
        super().__init__(params, dict(lr=lr, betas=tuple(betas), eps=eps, lam=lam, weight_decay=weight_decay))

    @torch.no_grad()
    def step(self, closure=None):  # noqa: ANN001 (torch.optim signature)
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = p.grad
                state = self.state[p]
                if not state:
                    state["step"] = 0
                    state["m"] = torch.zeros_like(p)
                    state["v"] = torch.zeros_like(p)
                state["step"] += 1
                t = state["step"]
                m, v = state["m"], state["v"]
                m.mul_(beta1).add_(g, alpha=1 - beta1)
                v.mul_(beta2).addcmul_(g, g, value=1 - beta2)
                m_hat = m / (1 - beta1 ** t)
                denom = (v / (1 - beta2 ** t)).sqrt_().add_(group["eps"])
                direction = torch.lerp(g, m_hat, group["lam"])  # lam m^ + (1 - lam) g
                if group["weight_decay"]:
                    p.mul_(1 - group["lr"] * group["weight_decay"])
                p.addcdiv_(direction, denom, value=-group["lr"])
        return loss


@dataclass
class ADPOConfig(DPPOConfig):
    name: str = "adpo"
    adapg_lambda: float = 0.9
    """ADAPG discount factor: 1 = Adam's momentum direction, 0 = RMSProp's raw gradient direction."""
    adapg_betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    """First- and second-moment decay rates."""
    weight_decay: float = 0.0
    """Decoupled (AdamW-style) weight decay of the denoiser."""


store("algo", "adpo_schema", ADPOConfig)


class ADPO(DPPO):
    """DPPO's chain policy gradient with the denoiser optimised by :class:`ADAPG`."""

    def __init__(self, cfg: ADPOConfig, policy: nn.Module, obs_spec: ObsSpec, action_spec: ActionSpec,
                 device: str | torch.device = "cpu") -> None:
        super().__init__(cfg, policy, obs_spec, action_spec, device)
        self.actor_opt = ADAPG(self.policy.denoiser.parameters(), lr=cfg.actor_lr,
                               betas=tuple(cfg.adapg_betas), lam=cfg.adapg_lambda, weight_decay=cfg.weight_decay)


@ALGORITHMS.register("adpo")
def make_adpo(cfg: ADPOConfig, policy: nn.Module, obs_spec: ObsSpec, action_spec: ActionSpec,
              device: str | torch.device = "cpu") -> ADPO:
    return ADPO(cfg, policy, obs_spec, action_spec, device)
