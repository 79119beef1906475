"""The student: a small ReLU MLP over the ``state`` observation, and its folded float form for export.

Actions are learnt in the normalised space ``[-1, 1]`` (``(a - bias) / scale`` of the env's
:class:`ActionSpec`) and the network's last layer is linear: the deployed wrapper clips to ``[-1, 1]`` and
applies the action scaling, so the int8 graph never needs a tanh.

Observation normalization (mean/std of the distillation data) lives in the torch module as buffers and is
*folded* into the first layer for export: ``W' = W / std`` and ``b' = b - W (mean / std)``, so the exported
:class:`FloatModel` consumes raw observations.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn

from robot_rl.specs import ActionSpec


@dataclass
class StudentConfig:
    """Shape of the student MLP."""

    hidden: list[int] = field(default_factory=lambda: [64, 64])
    """Hidden layer widths (ReLU after each); the issue's reference student is ``[64, 64]``."""
    min_std: float = 1e-2
    """Floor of the per-dimension observation std used for normalization (state units: m, rad, m/s).

    On the deterministic pick-cube twin most of the 28 state entries barely move in the teacher's data (TCP y,
    orientation, angular velocity, cube x/y); a floor of 1e-3 scaled them by up to 1000, so a millimetre the
    student drifts off the teacher's path was a 1-sigma input change, and whether the student held the grasp
    depended on the training seed and the library versions (benchmarks/mcu.py fell to 0.0 success). 1e-2 makes
    such drift a tenth of that and keeps layer 0's folded weights small, which also shrinks the int8 error."""


class StudentMLP(nn.Module):
    """``(N, D)`` raw state -> ``(N, A)`` normalised action (pre-clip), normalization inside as buffers."""

    def __init__(self, obs_dim: int, act_dim: int, cfg: StudentConfig) -> None:
        super().__init__()
        if not cfg.hidden:
            raise ValueError("the student needs at least one hidden layer")
        self.cfg = cfg
        self.register_buffer("obs_mean", torch.zeros(obs_dim))
        self.register_buffer("obs_std", torch.ones(obs_dim))
        dims = [obs_dim, *cfg.hidden, act_dim]
        self.layers = nn.ModuleList(nn.Linear(i, o) for i, o in zip(dims[:-1], dims[1:]))

    def set_normalization(self, states: np.ndarray) -> None:
        """Mean/std over ``(N, D)`` states (the distillation data), std floored at ``cfg.min_std``."""
        states = np.asarray(states, np.float64)
        self.obs_mean.copy_(torch.as_tensor(states.mean(0), dtype=torch.float32))
        self.obs_std.copy_(torch.as_tensor(np.maximum(states.std(0), self.cfg.min_std), dtype=torch.float32))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = (x - self.obs_mean) / self.obs_std
        for i, layer in enumerate(self.layers):
            h = layer(h)
            if i < len(self.layers) - 1:
                h = torch.relu(h)
        return h

    @torch.no_grad()
    def fold(self, action_spec: ActionSpec) -> "FloatModel":
        """Export with the normalization folded into the first layer (exact up to float32 rounding)."""
        ws = [layer.weight.detach().double().numpy() for layer in self.layers]
        bs = [layer.bias.detach().double().numpy() for layer in self.layers]
        mean, std = self.obs_mean.double().numpy(), self.obs_std.double().numpy()
        ws[0], bs[0] = ws[0] / std[None, :], bs[0] - ws[0] @ (mean / std)
        return FloatModel([w.astype(np.float32) for w in ws], [b.astype(np.float32) for b in bs],
                          action_spec.low_array().ravel(), action_spec.high_array().ravel())


@dataclass
class FloatModel:
    """Folded float student: ``h = relu(W h + b)`` per hidden layer, a linear last layer, raw obs in."""

    weights: list[np.ndarray]
    """Per layer ``(out, in)`` float32; the first consumes the raw observation (normalization folded in)."""
    biases: list[np.ndarray]
    """Per layer ``(out,)`` float32."""
    action_low: np.ndarray
    """``(A,)`` env action lower bounds (the wrapper maps ``[-1, 1]`` onto ``[low, high]``)."""
    action_high: np.ndarray
    """``(A,)`` env action upper bounds."""

    def __post_init__(self) -> None:
        if len(self.weights) != len(self.biases) or len(self.weights) < 2:
            raise ValueError("a FloatModel needs >= 2 layers with one bias each")
        for i, (w, b) in enumerate(zip(self.weights, self.biases)):
            if w.ndim != 2 or b.shape != (w.shape[0],):
                raise ValueError(f"layer {i}: weight {w.shape} and bias {b.shape} do not match")
            if i and w.shape[1] != self.weights[i - 1].shape[0]:
                raise ValueError(f"layer {i} takes {w.shape[1]} inputs, layer {i - 1} gives {self.weights[i - 1].shape[0]}")

    @property
    def obs_dim(self) -> int:
        return int(self.weights[0].shape[1])

    @property
    def act_dim(self) -> int:
        return int(self.weights[-1].shape[0])

    @property
    def action_scale(self) -> np.ndarray:
        return ((self.action_high - self.action_low) / 2.0).astype(np.float32)

    @property
    def action_bias(self) -> np.ndarray:
        return ((self.action_high + self.action_low) / 2.0).astype(np.float32)

    def activations(self, x: np.ndarray) -> list[np.ndarray]:
        """``(N, D)`` raw obs -> every layer's output ``(N, out)`` (after ReLU for hidden layers)."""
        h = np.asarray(x, np.float32)
        outs = []
        for i, (w, b) in enumerate(zip(self.weights, self.biases)):
            h = h @ w.T + b
            if i < len(self.weights) - 1:
                h = np.maximum(h, 0.0)
            outs.append(h.astype(np.float32))
            h = outs[-1]
        return outs

    def forward(self, x: np.ndarray) -> np.ndarray:
        """``(N, D)`` -> clipped normalised action ``(N, A)`` in ``[-1, 1]``."""
        return np.clip(self.activations(x)[-1], -1.0, 1.0)

    def to_env(self, normalised: np.ndarray) -> np.ndarray:
        return (normalised * self.action_scale + self.action_bias).astype(np.float32)


class Teacher(Protocol):
    """Anything with ``reset()`` and ``act(obs) -> env-space action``; see :func:`as_teacher`."""

    def reset(self) -> None: ...

    def act(self, obs: dict[str, np.ndarray]) -> np.ndarray: ...


class _DeterministicPolicy:
    """A :class:`robot_rl.policies.base.Policy` (Gaussian, diffusion, VLA, ...) queried deterministically."""

    def __init__(self, policy: Any) -> None:
        self.policy = policy

    def reset(self) -> None:
        self.policy.reset()

    def act(self, obs: dict[str, np.ndarray]) -> np.ndarray:
        return np.asarray(self.policy.act(obs, deterministic=True), np.float32)


def as_teacher(obj: Any) -> Teacher:
    """Wrap a learned policy (``act(obs, deterministic=...)``) or pass a scripted expert (``act(obs)``) through."""
    from robot_rl.policies.base import Policy

    if isinstance(obj, Policy):
        obj.eval()
        return _DeterministicPolicy(obj)
    if not (hasattr(obj, "act") and hasattr(obj, "reset")):
        raise TypeError(f"a teacher needs reset() and act(obs); got {type(obj).__name__}")
    return obj


class ModelPolicy:
    """Closed-loop wrapper with the Policy ``act`` signature around a batched ``(N, D) -> (N, A)`` function."""

    def __init__(self, forward: Any, model: FloatModel) -> None:
        self._forward = forward
        self._model = model

    def reset(self) -> None:
        """Stateless."""

    def act(self, obs: dict[str, np.ndarray], deterministic: bool = True) -> np.ndarray:  # noqa: ARG002
        state = np.asarray(obs["state"], np.float32)
        batched = state.ndim == 2
        out = self._model.to_env(self._forward(state if batched else state[None]))
        return out if batched else out[0]
