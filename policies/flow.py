"""Flow-matching policy over action chunks (rectified flow / pi0-style), Euler sampling.

With ``tau`` from 0 (noise) to 1 (data), ``x_tau = tau x0 + (1 - tau) eps`` and the network regresses the
constant velocity ``v = x0 - eps``. Sampling integrates ``dx/dtau = v_theta(x, tau, obs)`` with K Euler steps of
``1 / K`` from ``x_0 = noise``. The denoiser receives the noise level ``1 - tau``. The stochastic step used for
per-step log-probs (DPPO over the flow chain, as in ReinFlow with fixed noise) is
``N(x + v_theta / K, chain_noise_std^2)``.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from robot_rl.config import store
from robot_rl.policies.generative import GenerativeChunkPolicy, GenerativePolicyConfig
from robot_rl.registry import POLICIES
from robot_rl.specs import ActionSpec, ObsSpec


@dataclass
class FlowPolicyConfig(GenerativePolicyConfig):
    name: str = "flow"
    chain_noise_std: float = 0.1
    """Std of the stochastic Euler step (floored at ``chain_min_std``)."""
    time_beta: float = 0.0
    """> 0: sample training times from Beta(time_beta, 1) (pi0 skews towards noise); 0: uniform."""


store("policy", "flow_schema", FlowPolicyConfig)


class FlowPolicy(GenerativeChunkPolicy):
    def __init__(self, cfg: FlowPolicyConfig, obs_spec: ObsSpec, action_spec: ActionSpec) -> None:
        super().__init__(cfg, obs_spec, action_spec)
        k = cfg.inference_steps
        self.register_buffer("_levels", 1.0 - torch.arange(k + 1, dtype=torch.float32) / k, persistent=False)

    @property
    def levels(self) -> torch.Tensor:
        return self._levels

    def velocity(self, x: torch.Tensor, tau: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """``x (N, H, A)`` at flow time ``tau (N,)`` -> velocity ``(N, H, A)``."""
        return self.denoiser(x, 1.0 - tau, cond)

    def bc_loss(self, cond: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
        n = x0.shape[0]
        if self.cfg.time_beta > 0:
            tau = torch.distributions.Beta(self.cfg.time_beta, 1.0).sample((n,)).to(x0.device)
        else:
            tau = torch.rand(n, device=x0.device)
        eps = torch.randn_like(x0)
        t = tau.view(n, 1, 1)
        return F.mse_loss(self.velocity(t * x0 + (1 - t) * eps, tau, cond), x0 - eps)

    def ode_step(self, x: torch.Tensor, i: int, cond: torch.Tensor) -> torch.Tensor:
        tau = (1.0 - self._levels[i]).expand(x.shape[0])
        return x + self.velocity(x, tau, cond) / self.num_steps

    def step_distribution(self, x: torch.Tensor, i: int, cond: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.ode_step(x, i, cond), torch.full((1, 1, 1), self.cfg.chain_noise_std, device=x.device)

    def noisy(self, x0: torch.Tensor, eps: torch.Tensor, i: int) -> torch.Tensor:
        tau = 1.0 - self._levels[i]
        return tau * x0 + (1 - tau) * eps


@POLICIES.register("flow")
def make_flow_policy(cfg: FlowPolicyConfig, obs_spec: ObsSpec, action_spec: ActionSpec) -> FlowPolicy:
    return FlowPolicy(cfg, obs_spec, action_spec)
