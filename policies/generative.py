"""Shared machinery of the generative chunk policies (diffusion, flow, VLA): one interface for BC, sampling,
per-step log-probs, DSRL noise steering, and a one-step head.

A generative policy works on *normalised* chunks ``x (N, H, A)`` in ``[-1, 1]`` (the ActionSpec bounds mapped
affinely) along a fixed grid of ``K`` sampling steps with noise levels ``levels[0] = 1 > ... > levels[K] = 0``.
Subclasses define four things on that grid:

- ``bc_loss(cond, x0)``: the imitation loss (epsilon regression for diffusion, velocity regression for flows);
- ``ode_step(x, i, cond)``: the deterministic sampler step ``levels[i] -> levels[i + 1]`` (DDIM eta=0, Euler);
- ``step_distribution(x, i, cond)``: the stochastic step as a Gaussian ``(mean, std)`` (DDIM eta>0 / noisy Euler),
  which makes the chain a policy with exact per-step log-probs (DPPO);
- ``noisy(x0, eps, i)``: the training-time noising of clean chunks to level ``levels[i]``.

Everything the fine-tuning algorithms need sits here, inside the policy, so the actor-side copy built from the
config can load the learner's weights strictly: ``noise_actor`` (DSRL's latent policy, used when the buffer
``steer_noise`` is 1), ``onestep`` (FQL's one-step actor / the consistency-distilled head, used when
``use_onestep`` is 1). Both flags are persistent buffers, so they travel with the published weights.
"""
from __future__ import annotations

from abc import abstractmethod
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from robot_rl.config import PolicyConfig
from robot_rl.policies.base import Obs, Policy
from robot_rl.policies.chunking import ChunkBatch, ChunkExecutor
from robot_rl.policies.encoders import ObservationEncoder
from robot_rl.policies.heads import NoiseActor, OneStepHead, make_denoiser
from robot_rl.specs import ActionSpec, ObsSpec
from robot_rl.types import Batch


@dataclass
class GenerativePolicyConfig(PolicyConfig):
    chunk_size: int = 8
    """Actions per predicted chunk (H)."""
    execute_steps: int = 4
    """Receding horizon: actions executed from each chunk before replanning (1 = replan every step; capped at
    ``chunk_size``)."""
    ensemble_decay: float = -1.0
    """>= 0 switches to ACT temporal ensembling (replan every step, weights exp(-decay * age)); < 0 disables it."""
    backbone: str = "unet"
    """Denoiser network: ``unet`` (1-D temporal U-Net, FiLM), ``transformer`` or ``mlp``."""
    width: int = 256
    """Hidden width of the ``mlp``/``transformer`` backbones (and of the one-step head's network)."""
    depth: int = 3
    """Residual blocks (``mlp``) or layers (``transformer``)."""
    unet_dims: list[int] = field(default_factory=lambda: [64, 128])
    """Channel widths of the U-Net levels (multiples of 8)."""
    onestep_backbone: str = "mlp"
    """Network of the one-step head (FQL actor / consistency-distilled head)."""
    inference_steps: int = 10
    """K: sampling steps (DDIM steps for diffusion, Euler steps for flows)."""
    conv_channels: int = 32
    """Channels of every conv layer of a camera encoder (pixel observations only)."""
    conv_layers: int = 4
    """Conv layers per camera encoder."""
    image_feature_dim: int = 64
    """Per-camera feature size."""
    augment_pad: int = 4
    """Random-shift augmentation in BC training (pixels); 0 disables it."""
    noise_actor_hidden_dims: list[int] = field(default_factory=lambda: [256, 256])
    """DSRL latent-noise actor MLP widths."""
    noise_magnitude: float = 2.5
    """DSRL: the steered initial noise is ``magnitude * tanh(u)`` (bounds the noise action space). The bound
    decides which actions DSRL can reach at all: the frozen sampler only produces what it maps this box to. For a
    weak BC flow on point_reach (3 demos), an oracle that picks the best of 64 noises per step reached 0.67 success
    at 1.5 and 1.0 at 2.5, and DSRL itself stayed at BC level with 1.5 but reached 0.9 with 2.5 (issue 5 notes,
    part 3). Larger bounds leave the N(0, I) region the generator was trained on, so do not raise it further
    without measuring."""
    chain_min_std: float = 0.1
    """Floor on the std of every stochastic sampler step (DPPO's exploration noise and log-prob floor)."""


class GenerativeChunkPolicy(Policy):
    """Base of the diffusion, flow and VLA policies (see the module docstring for the contract)."""

    def __init__(self, cfg: GenerativePolicyConfig, obs_spec: ObsSpec, action_spec: ActionSpec) -> None:
        super().__init__(obs_spec, action_spec)
        if len(action_spec.shape) != 1:
            raise ValueError(f"generative policies need a flat action vector, got shape {action_spec.shape}")
        if cfg.inference_steps < 1 or cfg.chunk_size < 1:
            raise ValueError(f"need inference_steps >= 1 and chunk_size >= 1, got {cfg.inference_steps}, "
                             f"{cfg.chunk_size}")
        self.cfg = cfg
        self.chunk_size = cfg.chunk_size
        self.action_dim = action_spec.dim
        self.encoder = self.build_encoder()
        cond = self.encoder.output_dim
        net = dict(width=cfg.width, depth=cfg.depth, unet_dims=tuple(cfg.unet_dims))
        self.denoiser = make_denoiser(cfg.backbone, self.action_dim, cond, cfg.chunk_size, **net)
        self.noise_actor = NoiseActor(cond, cfg.chunk_size, self.action_dim, tuple(cfg.noise_actor_hidden_dims),
                                      cfg.noise_magnitude)
        self.onestep = OneStepHead(make_denoiser(cfg.onestep_backbone, self.action_dim, cond, cfg.chunk_size, **net))
        self.register_buffer("steer_noise", torch.zeros(()))  # 1: initial noise from noise_actor (DSRL)
        self.register_buffer("use_onestep", torch.zeros(()))  # 1: act with the one-step head
        low = torch.as_tensor(action_spec.low, dtype=torch.float32)
        high = torch.as_tensor(action_spec.high, dtype=torch.float32)
        self.register_buffer("action_scale", (high - low) / 2.0, persistent=False)  # (A,)
        self.register_buffer("action_bias", (high + low) / 2.0, persistent=False)  # (A,)
        self.executor = ChunkExecutor(cfg.chunk_size, min(cfg.execute_steps, cfg.chunk_size), cfg.ensemble_decay)

    # ------------------------------------------------------------------------------ subclass contract
    def build_encoder(self) -> nn.Module:
        """Obs -> ``(N, F)`` conditioning features (the VLA overrides this)."""
        c = self.cfg
        return ObservationEncoder(self.obs_spec, c.conv_channels, c.conv_layers, c.image_feature_dim, c.augment_pad)

    @property
    @abstractmethod
    def levels(self) -> torch.Tensor:
        """``(K + 1,)`` noise levels of the sampling grid, ``levels[0] = 1`` (noise) ... ``levels[K] = 0``."""

    @abstractmethod
    def bc_loss(self, cond: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
        """Imitation loss for clean normalised chunks ``x0 (N, H, A)`` given features ``cond (N, F)``."""

    @abstractmethod
    def ode_step(self, x: torch.Tensor, i: int, cond: torch.Tensor) -> torch.Tensor:
        """Deterministic sampler step from ``levels[i]`` to ``levels[i + 1]``: ``(N, H, A) -> (N, H, A)``."""

    @abstractmethod
    def step_distribution(self, x: torch.Tensor, i: int, cond: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Stochastic step ``levels[i] -> levels[i + 1]`` as a Gaussian: mean ``(N, H, A)``, unfloored std
        (broadcastable to the mean)."""

    @abstractmethod
    def noisy(self, x0: torch.Tensor, eps: torch.Tensor, i: int) -> torch.Tensor:
        """Clean chunk ``x0`` noised with ``eps`` to level ``levels[i]`` (the training-time forward process)."""

    # ----------------------------------------------------------------------------------- generic parts
    @property
    def num_steps(self) -> int:
        return self.cfg.inference_steps

    def features(self, obs: dict[str, torch.Tensor], task_id: torch.Tensor | None = None,
                 augment: bool = False) -> torch.Tensor:
        """Batched torch obs -> conditioning ``(N, F)`` (``task_id`` is used by language-conditioned policies)."""
        return self.encoder(obs, augment=augment)

    def normalize(self, actions: torch.Tensor) -> torch.Tensor:
        return (actions - self.action_bias) / self.action_scale

    def unnormalize(self, x: torch.Tensor) -> torch.Tensor:
        return x.clamp(-1.0, 1.0) * self.action_scale + self.action_bias

    def sample(self, cond: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """Deterministic K-step sampler from initial ``noise (N, H, A)`` -> normalised chunk in [-1, 1]."""
        x = noise
        for i in range(self.num_steps):
            x = self.ode_step(x, i, cond)
        return x.clamp(-1.0, 1.0)

    def sample_chain(self, cond: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """Stochastic K-step chain ``(N, K + 1, H, A)`` (entry 0 = the noise, entry K = the chunk)."""
        chain = [noise]
        for i in range(self.num_steps):
            mean, std = self.step_distribution(chain[-1], i, cond)
            chain.append(mean + std.clamp_min(self.cfg.chain_min_std) * torch.randn_like(mean))
        return torch.stack(chain, dim=1)

    def chain_log_prob(self, cond: torch.Tensor, chain: torch.Tensor) -> torch.Tensor:
        """Per-step Gaussian log-probs ``(N, K)`` of a chain ``(N, K + 1, H, A)`` (std floored at chain_min_std)."""
        if chain.shape[1] != self.num_steps + 1:
            raise ValueError(f"chain has {chain.shape[1]} entries, expected {self.num_steps + 1}")
        out = []
        for i in range(self.num_steps):
            mean, std = self.step_distribution(chain[:, i], i, cond)
            std = std.clamp_min(self.cfg.chain_min_std).expand_as(mean)
            out.append(torch.distributions.Normal(mean, std).log_prob(chain[:, i + 1]).flatten(1).sum(-1))
        return torch.stack(out, dim=1)

    def initial_noise(self, cond: torch.Tensor, deterministic: bool) -> torch.Tensor:
        """``(N, H, A)``: the DSRL noise actor's output when steering, else N(0, I) (zeros when deterministic)."""
        if self.steer_noise.item() > 0.5:
            return self.noise_actor(cond, deterministic)[0]
        shape = (cond.shape[0], self.chunk_size, self.action_dim)
        if deterministic:
            return torch.zeros(shape, device=cond.device)
        return torch.randn(shape, device=cond.device)

    def generate(self, cond: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """Normalised chunk from noise with whichever generator is active (one-step head or K-step sampler)."""
        if self.use_onestep.item() > 0.5:
            return self.onestep(noise, torch.ones(noise.shape[0], device=noise.device), cond).clamp(-1.0, 1.0)
        return self.sample(cond, noise)

    def forward_act(self, obs: dict[str, torch.Tensor], deterministic: bool) -> torch.Tensor:
        cond = self.features(obs)
        chunk = self.unnormalize(self.generate(cond, self.initial_noise(cond, deterministic)))  # (N, H, A)
        if not torch.isfinite(chunk).all():
            raise FloatingPointError(f"{type(self).__name__} produced non-finite actions")
        return chunk

    def reset(self) -> None:
        self.executor.reset()

    @torch.no_grad()
    def act(self, obs: Obs, *, deterministic: bool = False) -> np.ndarray:
        """Per-step actions executed from chunks (receding horizon or temporal ensembling, see ChunkExecutor)."""
        batched = obs["state"].ndim == 2 if "state" in obs else next(iter(obs.values())).ndim == 4
        device = self.action_scale.device
        tobs = {k: torch.as_tensor(v, device=device) if batched else torch.as_tensor(v, device=device)[None]
                for k, v in obs.items()}
        n = next(iter(tobs.values())).shape[0]

        def plan(rows: np.ndarray) -> np.ndarray:
            index = torch.as_tensor(rows, device=device)
            return self.forward_act({k: v[index] for k, v in tobs.items()}, deterministic).float().cpu().numpy()

        actions = self.executor.step(n, plan)  # (N, A)
        return actions if batched else actions[0]

    def chunk_targets(self, batch: Batch | ChunkBatch) -> torch.Tensor:
        """Normalised target chunks ``(N, H, A)`` of a batch (a plain Batch only works for ``chunk_size=1``)."""
        action = batch.action
        if action.ndim == 2:
            if self.chunk_size != 1:
                raise ValueError(f"a per-step Batch has actions (N, A); this policy predicts chunks of "
                                 f"{self.chunk_size}: train it from episodes (ChunkBatch, `robot-rl pretrain`)")
            action = action[:, None]
        if action.shape[1:] != (self.chunk_size, self.action_dim):
            raise ValueError(f"expected target chunks (N, {self.chunk_size}, {self.action_dim}), got "
                             f"{tuple(action.shape)}")
        if action.dtype != torch.float32 or not torch.isfinite(action).all():
            raise ValueError(f"target actions must be finite float32, got {action.dtype}")
        return self.normalize(action)

    def loss(self, batch: Batch | ChunkBatch) -> torch.Tensor:
        """Behaviour cloning on chunks (augmented images in training)."""
        task_id = getattr(batch, "task_id", None)
        cond = self.features(batch.obs, task_id, augment=self.training)
        loss = self.bc_loss(cond, self.chunk_targets(batch))
        if not torch.isfinite(loss):
            raise FloatingPointError(f"non-finite BC loss {loss.item()}")
        return loss

    def fit_state_normalization(self, states: torch.Tensor) -> bool:
        """Standardise ``state`` with the statistics of ``states (N, S)`` (e.g. the demos); False if no state, or
        if statistics are already set: they belong to the pre-trained generator (``robot-rl pretrain`` fits them),
        and refitting them on a fine-tuning run's demos would shift the frozen model's inputs."""
        states = torch.as_tensor(states, dtype=torch.float32)
        if getattr(self.encoder, "state_dim", 0) == 0 or len(states) < 2:
            return False
        enc = self.encoder
        if bool((enc.state_mean != 0).any() or (enc.state_std != 1).any()):
            return False
        self.encoder.set_state_normalization(states.mean(0), states.std(0))
        return True

    def generator_parameters(self) -> list[nn.Parameter]:
        """The K-step model's parameters (encoder + denoiser): what BC trains and DSRL freezes."""
        return list(self.encoder.parameters()) + list(self.denoiser.parameters())
