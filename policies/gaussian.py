"""Tanh-squashed diagonal Gaussian actor (SAC/RLPD/SERL), rescaled to the ActionSpec bounds.

The network maps encoder features to a mean and a log standard deviation per action dimension; an action is
``tanh(mean + std * noise)`` in [-1, 1], then affinely mapped to ``[low, high]``. Log-probabilities are those
of the squashed action in the normalised [-1, 1] space (the constant Jacobian of the final rescale is left
out, so SAC's usual target entropy ``-A`` means the same thing whatever the bounds are).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from robot_rl.config import PolicyConfig, store
from robot_rl.policies.base import Policy
from robot_rl.policies.encoders import ObservationEncoder
from robot_rl.registry import POLICIES
from robot_rl.specs import ActionSpec, ObsSpec
from robot_rl.types import Batch

_HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)
_LOG_2 = math.log(2.0)


@dataclass
class GaussianPolicyConfig(PolicyConfig):
    name: str = "gaussian"
    hidden_dims: list[int] = field(default_factory=lambda: [256, 256])
    """Hidden layer widths of the actor MLP (ReLU between layers)."""
    log_std_min: float = -5.0
    """Lower bound of the pre-tanh log standard deviation (smoothly enforced with a tanh)."""
    log_std_max: float = 2.0
    """Upper bound of the pre-tanh log standard deviation."""
    conv_channels: int = 32
    """Channels of every conv layer of a camera encoder (pixel observations only)."""
    conv_layers: int = 4
    """Conv layers per camera encoder (3x3 kernels, the first with stride 2)."""
    image_feature_dim: int = 50
    """Per-camera feature size after the linear + LayerNorm + tanh bottleneck (DrQ uses 50)."""
    augment_pad: int = 4
    """Random-shift augmentation: max shift in pixels (pad + random crop) in training; 0 disables it."""
    bc_clip_eps: float = 1e-4
    """The BC loss clamps normalised target actions into ``[-1 + eps, 1 - eps]`` so atanh stays finite."""


store("policy", "gaussian", GaussianPolicyConfig)


class GaussianPolicy(Policy):
    """``encoder -> MLP -> (mean, log_std)``; the encoder is shared with the critic by SAC (see sac.py)."""

    def __init__(self, cfg: GaussianPolicyConfig, obs_spec: ObsSpec, action_spec: ActionSpec) -> None:
        super().__init__(obs_spec, action_spec)
        if cfg.log_std_min >= cfg.log_std_max:
            raise ValueError(f"log_std_min {cfg.log_std_min} must be < log_std_max {cfg.log_std_max}")
        if len(action_spec.shape) != 1:
            raise ValueError(f"GaussianPolicy needs a flat action vector, got shape {action_spec.shape}")
        self.cfg = cfg
        self.action_dim = action_spec.dim
        self.encoder = ObservationEncoder(obs_spec, cfg.conv_channels, cfg.conv_layers, cfg.image_feature_dim,
                                          cfg.augment_pad)
        layers: list[nn.Module] = []
        width = self.encoder.output_dim
        for hidden in cfg.hidden_dims:
            layers += [nn.Linear(width, hidden), nn.ReLU()]
            width = hidden
        self.trunk = nn.Sequential(*layers)
        self.head = nn.Linear(width, 2 * self.action_dim)  # (mean, raw log_std) per action dimension
        low = torch.as_tensor(action_spec.low, dtype=torch.float32)
        high = torch.as_tensor(action_spec.high, dtype=torch.float32)
        # Derived from the spec, not learned: kept out of state_dict so the wire format is just the weights.
        self.register_buffer("action_scale", (high - low) / 2.0, persistent=False)  # (A,)
        self.register_buffer("action_bias", (high + low) / 2.0, persistent=False)  # (A,)
        self._log_std_mid = 0.5 * (cfg.log_std_max + cfg.log_std_min)
        self._log_std_half_range = 0.5 * (cfg.log_std_max - cfg.log_std_min)

    def actor_parameters(self) -> list[nn.Parameter]:
        """Parameters trained by the actor loss: everything but the (critic-trained) encoder."""
        return list(self.trunk.parameters()) + list(self.head.parameters())

    def distribution(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(N, F)`` features -> pre-tanh ``mean`` and ``log_std``, each ``(N, A)``."""
        mean, raw_log_std = self.head(self.trunk(features)).chunk(2, dim=-1)
        # tanh keeps log_std inside [min, max] with a non-zero gradient everywhere (unlike a clamp).
        log_std = self._log_std_mid + self._log_std_half_range * torch.tanh(raw_log_std)
        return mean, log_std

    def sample_from_features(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Reparameterised sample: ``(N, F)`` -> action ``(N, A)`` in env bounds and its log-prob ``(N,)``."""
        mean, log_std = self.distribution(features)
        noise = torch.randn_like(mean)
        pre_tanh = mean + log_std.exp() * noise  # (N, A)
        # log N(u; mean, std) - log|d tanh(u)/du|, with log(1 - tanh(u)^2) = 2 (log 2 - u - softplus(-2u))
        # (numerically stable for large |u|, unlike log(1 - tanh(u)^2 + eps)).
        log_prob = (-0.5 * noise.square() - log_std - _HALF_LOG_2PI
                    - 2.0 * (_LOG_2 - pre_tanh - F.softplus(-2.0 * pre_tanh))).sum(-1)  # (N,)
        return torch.tanh(pre_tanh) * self.action_scale + self.action_bias, log_prob

    def sample(self, obs: dict[str, torch.Tensor], augment: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """Batched torch obs -> (action ``(N, A)`` in bounds, log-prob ``(N,)``), differentiable (rsample)."""
        return self.sample_from_features(self.encoder(obs, augment=augment))

    def forward_act(self, obs: dict[str, torch.Tensor], deterministic: bool) -> torch.Tensor:
        features = self.encoder(obs, augment=False)  # never augment when acting
        if deterministic:
            mean, _ = self.distribution(features)
            return torch.tanh(mean) * self.action_scale + self.action_bias  # (N, A)
        return self.sample_from_features(features)[0]

    def log_prob(self, obs: dict[str, torch.Tensor], action: torch.Tensor, augment: bool = False) -> torch.Tensor:
        """Log-likelihood ``(N,)`` of given env-space actions ``(N, A)``, clamped just inside the bounds."""
        mean, log_std = self.distribution(self.encoder(obs, augment=augment))
        eps = self.cfg.bc_clip_eps
        squashed = ((action - self.action_bias) / self.action_scale).clamp(-1.0 + eps, 1.0 - eps)  # (N, A)
        pre_tanh = torch.atanh(squashed)
        z = (pre_tanh - mean) * torch.exp(-log_std)
        return (-0.5 * z.square() - log_std - _HALF_LOG_2PI - torch.log1p(-squashed.square())).sum(-1)

    def loss(self, batch: Batch) -> torch.Tensor:
        """Behaviour cloning: mean negative log-likelihood of ``batch.action`` (augmented images in training)."""
        return -self.log_prob(batch.obs, batch.action, augment=self.training).mean()


@POLICIES.register("gaussian")
def make_gaussian_policy(cfg: GaussianPolicyConfig, obs_spec: ObsSpec, action_spec: ActionSpec) -> GaussianPolicy:
    return GaussianPolicy(cfg, obs_spec, action_spec)
