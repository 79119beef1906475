"""Tanh-squashed diagonal Gaussian actor (SAC/RLPD/SERL), rescaled to the ActionSpec bounds.

The network maps encoder features to a mean and a log standard deviation per action dimension; an action is
``tanh(mean + std * noise)`` in [-1, 1], then affinely mapped to ``[low, high]``. Log-probabilities are those
of the squashed action in the normalised [-1, 1] space (the constant Jacobian of the final rescale is left
out, so SAC's usual target entropy ``-A`` means the same thing whatever the bounds are).

``discrete_gripper=true`` (HIL-SERL): the last action dimension is not Gaussian. A small grasp critic
``Q(features) -> (N, K)`` over ``K`` gripper commands picks it (argmax; epsilon-greedy when sampling); the
Gaussian covers the other ``A - 1`` dimensions. The grasp critic lives in the policy because it decides actions
at act time, so it travels to the actors with the weights; SAC trains it by double-DQN (see sac.py).
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
from robot_rl.policies.frozen_encoders import BackboneConfig, TaskEncoderConfig, make_camera_encoder
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
    encoder: str = "task"
    """Camera encoder (pixel observations only; ignored for state). ``task`` (default, the fast CPU route): a
    small conv net + spatial softmax pretrained on this task's demos (actions, progress, success labels; no
    simulator-only quantity), then frozen; each frame is embedded once and updates run on the embeddings (needs
    demos). ``frozen``: a pretrained ResNet-18/ResNet-10 from a local file (``backbone.*``), frozen, with a
    trainable spatial head; same embedding cache. ``drq``: the end-to-end DrQ conv encoder trained by the critic
    with random shifts (every update re-encodes every image: for GPUs)."""
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    """``encoder=frozen``: the pretrained backbone (architecture, local weights file, pooling head)."""
    task_encoder: TaskEncoderConfig = field(default_factory=TaskEncoderConfig)
    """``encoder=task``: the backbone's size and its pretraining on the demos."""
    conv_channels: int = 32
    """Channels of every conv layer of a camera encoder (``encoder=drq``)."""
    conv_layers: int = 4
    """Conv layers per camera encoder (3x3 kernels, the first with stride 2)."""
    image_feature_dim: int = 50
    """Per-camera feature size after the linear + LayerNorm + tanh bottleneck (DrQ uses 50), every encoder."""
    augment_pad: int = 4
    """``encoder=drq`` random-shift augmentation: max shift in pixels (pad + random crop); 0 disables it."""
    discrete_gripper: bool = False
    """HIL-SERL's discrete gripper: the last action dimension comes from a grasp critic over
    ``gripper_commands`` trained by DQN, the Gaussian covers the rest. Needs the last action named ``grip*``."""
    gripper_commands: list[float] = field(default_factory=lambda: [-1.0, 1.0])
    """Gripper values (env units) the grasp critic chooses from; the twin opens at <= 0 and closes at > 0."""
    gripper_epsilon: float = 0.1
    """Probability of a uniformly random gripper command when sampling stochastically (exploration)."""
    grasp_hidden_dims: list[int] = field(default_factory=lambda: [256, 256])
    """Hidden widths of the grasp critic (LayerNorm + ReLU after each)."""
    normalize_state: bool = True
    """Standardise ``state`` with the demonstrations' per-dimension mean/std (fitted once by the learner on a
    fresh run; sent to actors with the weights). Without demos the state passes through unchanged."""
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
        self.discrete_gripper = bool(cfg.discrete_gripper)
        if self.discrete_gripper:
            names = action_spec.names or ()
            if len(names) != self.action_dim or not names[-1].startswith("grip"):
                raise ValueError(f"discrete_gripper needs the last action dimension named 'grip...', got {names}")
            if len(cfg.gripper_commands) < 2:
                raise ValueError(f"gripper_commands needs at least 2 values, got {cfg.gripper_commands}")
            lo, hi = action_spec.low[-1], action_spec.high[-1]
            if not all(lo <= g <= hi for g in cfg.gripper_commands):
                raise ValueError(f"gripper_commands {cfg.gripper_commands} outside the bounds [{lo}, {hi}]")
        self.continuous_dim = self.action_dim - int(self.discrete_gripper)
        if cfg.encoder not in ("drq", "frozen", "task"):
            raise ValueError(f"policy.encoder must be drq, frozen or task, got {cfg.encoder!r}")
        factory = None
        if cfg.encoder != "drq":
            def factory(shape: tuple[int, int, int]) -> nn.Module:
                return make_camera_encoder(cfg.encoder, shape, cfg.image_feature_dim, cfg.backbone, cfg.task_encoder)
        self.encoder = ObservationEncoder(obs_spec, cfg.conv_channels, cfg.conv_layers, cfg.image_feature_dim,
                                          cfg.augment_pad, factory)
        layers: list[nn.Module] = []
        width = self.encoder.output_dim
        for hidden in cfg.hidden_dims:
            layers += [nn.Linear(width, hidden), nn.ReLU()]
            width = hidden
        self.trunk = nn.Sequential(*layers)
        self.head = nn.Linear(width, 2 * self.continuous_dim)  # (mean, raw log_std) per continuous dimension
        self.grasp_critic: nn.Module | None = None
        if self.discrete_gripper:
            grasp: list[nn.Module] = []
            width = self.encoder.output_dim
            for hidden in cfg.grasp_hidden_dims:
                grasp += [nn.Linear(width, hidden), nn.LayerNorm(hidden), nn.ReLU()]
                width = hidden
            self.grasp_critic = nn.Sequential(*grasp, nn.Linear(width, len(cfg.gripper_commands)))  # (N, K)
            self.register_buffer("gripper_commands", torch.tensor(cfg.gripper_commands, dtype=torch.float32),
                                 persistent=False)  # (K,), env units
        low = torch.as_tensor(action_spec.low, dtype=torch.float32)
        high = torch.as_tensor(action_spec.high, dtype=torch.float32)
        # Derived from the spec, not learned: kept out of state_dict so the wire format is just the weights.
        self.register_buffer("action_scale", (high - low) / 2.0, persistent=False)  # (A,)
        self.register_buffer("action_bias", (high + low) / 2.0, persistent=False)  # (A,)
        self._log_std_mid = 0.5 * (cfg.log_std_max + cfg.log_std_min)
        self._log_std_half_range = 0.5 * (cfg.log_std_max - cfg.log_std_min)

    @property
    def onnx_exportable(self) -> bool:  # type: ignore[override]
        """Stateless single-step acting runs in ONNX Runtime, except the grasp critic's epsilon-random command
        (``torch.randint`` has no ONNX operator)."""
        return not self.discrete_gripper

    def fit_state_normalization(self, states: torch.Tensor) -> bool:
        """Set the encoder's state normalisation from ``states (N, S)`` (e.g. the demos); False when disabled."""
        if not self.cfg.normalize_state or self.encoder.state_dim == 0 or len(states) < 2:
            return False
        states = torch.as_tensor(states, dtype=torch.float32)
        self.encoder.set_state_normalization(states.mean(0), states.std(0))
        return True

    def actor_parameters(self) -> list[nn.Parameter]:
        """Parameters trained by the actor loss: everything but the (critic-trained) encoder."""
        return list(self.trunk.parameters()) + list(self.head.parameters())

    def grasp_parameters(self) -> list[nn.Parameter]:
        """Parameters of the grasp critic (trained by the algorithm's DQN loss); empty without one."""
        return [] if self.grasp_critic is None else list(self.grasp_critic.parameters())

    def gripper_index(self, action: torch.Tensor) -> torch.Tensor:
        """Env-space actions ``(N, A)`` -> index ``(N,)`` of the nearest gripper command to the last column."""
        return (action[:, -1:] - self.gripper_commands).abs().argmin(-1)

    def _with_gripper(self, continuous: torch.Tensor, features: torch.Tensor, explore: bool) -> torch.Tensor:
        """Env-space continuous actions ``(N, A-1)`` + the grasp critic's command -> ``(N, A)``."""
        if self.grasp_critic is None:
            return continuous
        with torch.no_grad():  # the gripper choice is not differentiable; the actor loss sees it as given
            index = self.grasp_critic(features).argmax(-1)  # (N,)
            if explore and self.cfg.gripper_epsilon > 0:
                random = torch.randint_like(index, len(self.cfg.gripper_commands))
                index = torch.where(torch.rand(index.shape, device=index.device) < self.cfg.gripper_epsilon,
                                    random, index)
        return torch.cat([continuous, self.gripper_commands[index].unsqueeze(-1)], dim=-1)

    def distribution(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(N, F)`` features -> pre-tanh ``mean`` and ``log_std``, each ``(N, A)`` (``A - 1`` with a
        discrete gripper)."""
        mean, raw_log_std = self.head(self.trunk(features)).chunk(2, dim=-1)
        # tanh keeps log_std inside [min, max] with a non-zero gradient everywhere (unlike a clamp).
        log_std = torch.tanh(raw_log_std).mul(self._log_std_half_range).add(self._log_std_mid)
        return mean, log_std

    def sample_from_features(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Reparameterised sample: ``(N, F)`` -> action ``(N, A)`` in env bounds and its log-prob ``(N,)``."""
        mean, log_std = self.distribution(features)  # (N, C) each; C = A, or A - 1 with a discrete gripper
        noise = torch.randn_like(mean)
        pre_tanh = torch.addcmul(mean, log_std.exp(), noise)  # (N, C): mean + std * noise
        # log N(u; mean, std) - log|d tanh(u)/du| per dimension, with the stable identity
        # log(1 - tanh(u)^2) = 2 (log 2 - u - softplus(-2u)) (no log(1 - tanh^2 + eps) underflow for large |u|):
        #   -0.5 noise^2 - log_std - log(2 pi)/2 - 2 log 2 + 2 (u + softplus(-2u)).
        # The constants are summed once outside the elementwise chain: fewer small kernels on (N, C) tensors,
        # forward and backward (each costs more in dispatch than in arithmetic at these sizes).
        per_dim = torch.addcmul(2.0 * (pre_tanh + F.softplus(-2.0 * pre_tanh)) - log_std, noise, noise,
                                value=-0.5)  # (N, C)
        log_prob = per_dim.sum(-1) - mean.shape[-1] * (_HALF_LOG_2PI + 2.0 * _LOG_2)  # (N,)
        c = self.continuous_dim
        scale, bias = (self.action_scale, self.action_bias) if c == self.action_dim \
            else (self.action_scale[:c], self.action_bias[:c])
        action = torch.addcmul(bias, torch.tanh(pre_tanh), scale)  # (N, C): tanh(u) rescaled to the bounds
        return self._with_gripper(action, features, explore=True), log_prob

    def sample(self, obs: dict[str, torch.Tensor], augment: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """Batched torch obs -> (action ``(N, A)`` in bounds, log-prob ``(N,)``), differentiable (rsample)."""
        return self.sample_from_features(self.encoder(obs, augment=augment))

    def forward_act(self, obs: dict[str, torch.Tensor], deterministic: bool) -> torch.Tensor:
        features = self.encoder(obs, augment=False)  # never augment when acting
        if deterministic:
            mean, _ = self.distribution(features)
            c = self.continuous_dim
            return self._with_gripper(torch.tanh(mean) * self.action_scale[:c] + self.action_bias[:c], features,
                                      explore=False)  # (N, A)
        return self.sample_from_features(features)[0]

    def log_prob(self, obs: dict[str, torch.Tensor], action: torch.Tensor, augment: bool = False) -> torch.Tensor:
        """Log-likelihood ``(N,)`` of given env-space actions ``(N, A)``, clamped just inside the bounds."""
        mean, log_std = self.distribution(self.encoder(obs, augment=augment))
        eps, c = self.cfg.bc_clip_eps, self.continuous_dim  # a discrete gripper is scored by grasp_bc_loss
        squashed = ((action[:, :c] - self.action_bias[:c]) / self.action_scale[:c]).clamp(-1.0 + eps, 1.0 - eps)
        pre_tanh = torch.atanh(squashed)
        z = (pre_tanh - mean) * torch.exp(-log_std)
        return (-0.5 * z.square() - log_std - _HALF_LOG_2PI - torch.log1p(-squashed.square())).sum(-1)

    def grasp_bc_loss(self, features: torch.Tensor, action: torch.Tensor, margin: float = 0.8) -> torch.Tensor:
        """DQfD's large-margin loss ``(N,)``: the demonstrated gripper command's Q must beat every other by
        ``margin`` (in reward units). ``features (N, F)``, env-space ``action (N, A)``."""
        q = self.grasp_critic(features)  # (N, K)
        index = self.gripper_index(action)  # (N,)
        margins = torch.full_like(q, margin).scatter_(1, index[:, None], 0.0)  # 0 for the demo command
        return (q + margins).amax(-1) - q.gather(1, index[:, None]).squeeze(1)

    def loss(self, batch: Batch) -> torch.Tensor:
        """Behaviour cloning: mean negative log-likelihood of ``batch.action`` (augmented images in training);
        with a discrete gripper, plus the grasp critic's large-margin loss."""
        nll = -self.log_prob(batch.obs, batch.action, augment=self.training).mean()
        if self.grasp_critic is None:
            return nll
        return nll + self.grasp_bc_loss(self.encoder(batch.obs), batch.action).mean()


@POLICIES.register("gaussian")
def make_gaussian_policy(cfg: GaussianPolicyConfig, obs_spec: ObsSpec, action_spec: ActionSpec) -> GaussianPolicy:
    return GaussianPolicy(cfg, obs_spec, action_spec)
