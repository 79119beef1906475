"""Critic ensembles of the SAC family, selected by ``algo.critic``.

- ``mlp``: :class:`EnsembleCritic`, N MLP Q-functions as one batched MLP (weights ``(N, in, out)``, ``baddbmm``),
  optional LayerNorm after every hidden layer (RLPD).
- ``simbav2``: :class:`robot_rl.algorithms.simbav2.SimbaV2EnsembleCritic` (SimbaV2, Lee et al. 2025).

Both take ``(features (N, F), action (N, A))`` and return ``(E, N)`` (or ``(E, N, K)`` with K outputs per member).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class EnsembleLinear(nn.Module):
    """``num_members`` independent linear layers applied in one batched matmul.

    Input ``(N, in)`` (shared by all members, first layer) or ``(E, N, in)``; output ``(E, N, out)``.
    """

    def __init__(self, num_members: int, in_features: int, out_features: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(num_members, in_features, out_features))  # (E, in, out)
        self.bias = nn.Parameter(torch.empty(num_members, 1, out_features))  # (E, 1, out)
        bound = 1.0 / math.sqrt(in_features)  # nn.Linear's default init, per member
        nn.init.uniform_(self.weight, -bound, bound)
        nn.init.uniform_(self.bias, -bound, bound)


class EnsembleCritic(nn.Module):
    """E Q-functions ``Q_e(features, action)`` evaluated together: returns ``(E, N)``, or ``(E, N, K)`` with
    ``out_features = K > 1`` (e.g. HL-Gauss logits)."""

    def __init__(self, input_dim: int, hidden_dims: list[int] | tuple[int, ...], num_members: int,
                 layer_norm: bool, out_features: int = 1) -> None:
        super().__init__()
        dims = [input_dim, *hidden_dims, out_features]
        self.num_members, self.out_features = num_members, out_features
        self.layers = nn.ModuleList(EnsembleLinear(num_members, d_in, d_out) for d_in, d_out in zip(dims, dims[1:]))
        # Per-member LayerNorm affine parameters, (E, 1, hidden) each, for the hidden layers.
        self.norm_scales = nn.ParameterList(nn.Parameter(torch.ones(num_members, 1, h)) for h in hidden_dims) \
            if layer_norm else None
        self.norm_shifts = nn.ParameterList(nn.Parameter(torch.zeros(num_members, 1, h)) for h in hidden_dims) \
            if layer_norm else None

    @property
    def output_bias(self) -> nn.Parameter:
        """Bias of the output layer, ``(E, 1, K)``."""
        return self.layers[-1].bias

    def forward(self, features: torch.Tensor, action: torch.Tensor, members: torch.Tensor | None = None,
                detach_weights: bool = False) -> torch.Tensor:
        """``features (N, F)``, ``action (N, A)`` -> Q ``(E, N)`` (or ``(M, N)`` for ``members`` ``(M,)``).

        ``detach_weights`` lets the actor loss differentiate through the critic to the action without
        computing gradients for the critic's weights (a third of the backward pass saved).
        """
        def select(param: torch.Tensor) -> torch.Tensor:
            param = param.detach() if detach_weights else param
            return param if members is None else param[members]  # (E or M, ...)

        x = torch.cat([features, action], dim=-1)  # (N, F + A)
        for i, layer in enumerate(self.layers[:-1]):
            weight, bias = select(layer.weight), select(layer.bias)  # (E, in, out), (E, 1, out)
            if i == 0:
                # The first layer's input is shared: broadcast it over members without copying.
                x = torch.baddbmm(bias, x.expand(weight.shape[0], *x.shape), weight)  # (E, N, out)
            else:
                x = torch.baddbmm(bias, x, weight)  # (E, N, out)
            if self.norm_scales is not None:
                x = torch.addcmul(select(self.norm_shifts[i]), F.layer_norm(x, x.shape[-1:]),
                                  select(self.norm_scales[i]))
            # In place: x is a fresh baddbmm/addcmul result nobody else holds, and ReLU's backward needs only
            # its output; saves allocating and writing an (E, N, H) tensor per layer.
            x = torch.relu_(x)
        weight, bias = select(self.layers[-1].weight), select(self.layers[-1].bias)  # (E, H, K), (E, 1, K)
        if self.out_features > 1:
            return torch.baddbmm(bias, x, weight)  # (E, N, K)
        # Output width 1: a multiply-and-sum is ~3x faster than a batched matrix-vector product (the BLAS
        # gemv path is slow for this shape), forward and backward.
        return (x * weight.transpose(1, 2)).sum(-1) + bias[:, :, 0]  # (E, N)


def build_critic(kind: str, input_dim: int, hidden_dims: list[int] | tuple[int, ...], num_members: int,
                 layer_norm: bool, out_features: int = 1, mlp_ratio: int = 4) -> nn.Module:
    """The critic ensemble ``kind`` names (``mlp`` or ``simbav2``), ``out_features`` outputs per member.

    SimbaV2 reads ``hidden_dims`` as width ``hidden_dims[0]`` with ``len(hidden_dims) - 1`` blocks (at least one);
    ``layer_norm`` is MLP-only (SimbaV2 normalises every feature anyway)."""
    dims = list(hidden_dims)
    if kind == "mlp":
        return EnsembleCritic(input_dim, dims, num_members, layer_norm, out_features)
    if kind == "simbav2":
        from robot_rl.algorithms.simbav2 import SimbaV2EnsembleCritic

        return SimbaV2EnsembleCritic(input_dim, dims[0], max(1, len(dims) - 1), num_members, out_features, mlp_ratio)
    raise ValueError(f"algo.critic must be 'mlp' or 'simbav2', got {kind!r}")
