"""Diffusion Policy (Chi et al. 2023) over action chunks, with diffusers schedulers.

Training uses diffusers' ``DDPMScheduler`` (``T`` train timesteps, squared-cosine betas, epsilon prediction):
``x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps``, loss ``|eps_theta(x_t, t, obs) - eps|^2``. Sampling uses
``DDIMScheduler`` with ``K`` "trailing" steps (``t = T-1, T-1-T/K, ...``), deterministic (eta = 0) for acting.

The stochastic DDIM step (eta > 0) is a Gaussian ``N(mean, sigma^2)`` with
``sigma = eta sqrt((1 - abar_prev) / (1 - abar_t)) sqrt(1 - abar_t / abar_prev)`` and
``mean = sqrt(abar_prev) x0_hat + sqrt(1 - abar_prev - sigma^2) eps_hat`` (x0_hat clipped to [-1, 1]): exactly what
``DDIMScheduler.step(eta=eta, variance_noise=z)`` returns as ``mean + sigma z`` (checked in the tests). With
eta = 1 it is the DDPM posterior on the K-step grid, which DPPO uses as its denoising-chain policy.
The noise level handed to the denoiser for timestep ``t`` is ``(t + 1) / T``.
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
class DiffusionPolicyConfig(GenerativePolicyConfig):
    name: str = "diffusion"
    train_timesteps: int = 100
    """T: DDPM training timesteps."""
    beta_schedule: str = "squaredcos_cap_v2"
    """diffusers beta schedule (``squaredcos_cap_v2`` as in Diffusion Policy, or ``linear``)."""
    chain_eta: float = 1.0
    """DDIM eta of the stochastic chain used for per-step log-probs (DPPO); 1 = DDPM posterior."""


store("policy", "diffusion_schema", DiffusionPolicyConfig)


def make_schedulers(train_timesteps: int, beta_schedule: str, inference_steps: int):
    """(DDPMScheduler for training, DDIMScheduler set to ``inference_steps`` trailing steps)."""
    from diffusers import DDIMScheduler, DDPMScheduler

    if not 1 <= inference_steps <= train_timesteps:
        raise ValueError(f"need 1 <= inference_steps ({inference_steps}) <= train_timesteps ({train_timesteps})")
    ddpm = DDPMScheduler(num_train_timesteps=train_timesteps, beta_schedule=beta_schedule, clip_sample=True,
                         clip_sample_range=1.0, prediction_type="epsilon")
    ddim = DDIMScheduler(num_train_timesteps=train_timesteps, beta_schedule=beta_schedule, clip_sample=True,
                         clip_sample_range=1.0, prediction_type="epsilon", set_alpha_to_one=True,
                         timestep_spacing="trailing")
    ddim.set_timesteps(inference_steps)
    return ddpm, ddim


class DiffusionPolicy(GenerativeChunkPolicy):
    def __init__(self, cfg: DiffusionPolicyConfig, obs_spec: ObsSpec, action_spec: ActionSpec) -> None:
        super().__init__(cfg, obs_spec, action_spec)
        self.ddpm, self.ddim = make_schedulers(cfg.train_timesteps, cfg.beta_schedule, cfg.inference_steps)
        timesteps = self.ddim.timesteps.long()  # (K,) descending
        prev = timesteps - cfg.train_timesteps // cfg.inference_steps
        abar = self.ddpm.alphas_cumprod.float()  # (T,)
        # Derived from the config, not learned: non-persistent (the wire format is the weights only).
        self.register_buffer("timesteps", timesteps, persistent=False)
        self.register_buffer("abar_t", abar[timesteps], persistent=False)  # (K,)
        self.register_buffer("abar_prev", torch.where(prev >= 0, abar[prev.clamp_min(0)], torch.ones(())),
                             persistent=False)  # (K,)
        self.register_buffer("abar_all", abar, persistent=False)  # (T,)
        self.register_buffer("_levels", torch.cat([(timesteps.float() + 1) / cfg.train_timesteps, torch.zeros(1)]),
                             persistent=False)  # (K + 1,)

    @property
    def levels(self) -> torch.Tensor:
        return self._levels

    def _eps(self, x: torch.Tensor, i: int, cond: torch.Tensor) -> torch.Tensor:
        level = self._levels[i].expand(x.shape[0])
        return self.denoiser(x, level, cond)  # (N, H, A)

    def bc_loss(self, cond: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
        n = x0.shape[0]
        t = torch.randint(0, self.cfg.train_timesteps, (n,), device=x0.device)  # (N,)
        eps = torch.randn_like(x0)
        a = self.abar_all[t].view(n, 1, 1)
        x_t = a.sqrt() * x0 + (1 - a).sqrt() * eps  # == DDPMScheduler.add_noise(x0, eps, t)
        return F.mse_loss(self.denoiser(x_t, (t.float() + 1) / self.cfg.train_timesteps, cond), eps)

    def ode_step(self, x: torch.Tensor, i: int, cond: torch.Tensor) -> torch.Tensor:
        eps = self._eps(x, i, cond)
        if x.device.type == "cpu":
            return self.ddim.step(eps, int(self.timesteps[i]), x, eta=0.0).prev_sample
        mean, _ = self._ddim_gaussian(x, eps, i, 0.0)  # same formula, without a host sync per step
        return mean

    def _ddim_gaussian(self, x: torch.Tensor, eps: torch.Tensor, i: int, eta: float
                       ) -> tuple[torch.Tensor, torch.Tensor]:
        a_t, a_prev = self.abar_t[i], self.abar_prev[i]
        x0 = ((x - (1 - a_t).sqrt() * eps) / a_t.sqrt()).clamp(-1.0, 1.0)
        std = eta * ((1 - a_prev) / (1 - a_t) * (1 - a_t / a_prev)).clamp_min(0).sqrt()
        mean = a_prev.sqrt() * x0 + (1 - a_prev - std ** 2).clamp_min(0).sqrt() * eps
        return mean, std.reshape(1, 1, 1)

    def step_distribution(self, x: torch.Tensor, i: int, cond: torch.Tensor, eta: float | None = None
                          ) -> tuple[torch.Tensor, torch.Tensor]:
        return self._ddim_gaussian(x, self._eps(x, i, cond), i, self.cfg.chain_eta if eta is None else eta)

    def noisy(self, x0: torch.Tensor, eps: torch.Tensor, i: int) -> torch.Tensor:
        if i >= self.num_steps:
            return x0
        a = self.abar_t[i]
        return a.sqrt() * x0 + (1 - a).sqrt() * eps


@POLICIES.register("diffusion")
def make_diffusion_policy(cfg: DiffusionPolicyConfig, obs_spec: ObsSpec, action_spec: ActionSpec) -> DiffusionPolicy:
    return DiffusionPolicy(cfg, obs_spec, action_spec)
