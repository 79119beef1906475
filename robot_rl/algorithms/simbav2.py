"""SimbaV2 critic ensemble (``algo.critic=simbav2``).

SimbaV2: "Hyperspherical Normalization for Scalable Deep Reinforcement Learning" (Lee et al., ICML 2025). Every
feature vector and every weight vector lives on the unit hypersphere, which keeps the effective learning rate and
the feature norms constant as training goes on, so the critic tolerates high update-to-data ratios:

- input: ``x = l2norm([features, action, c_shift])`` (the constant shift keeps the input's norm information);
- embedding: ``h = l2norm(s_0 * (x W_0))``;
- each block: ``h~ = l2norm(relu(s_1 * (h W_1)) W_2)``, then ``h = l2norm(h + alpha * (h~ - h))`` (learned LERP);
- output: ``(s_o * (h W_o)) W_out + b`` (the last layer is an ordinary linear one: scalar Q or HL-Gauss logits);
- after every optimizer step the normalised weights are projected back onto the unit sphere
  (:meth:`SimbaV2EnsembleCritic.project_weights`; each output unit's weight vector has norm 1).

Departures from the paper, stated: the paper's running-statistics observation normalisation is left to the
policy's own state normalisation, its distributional (C51-style) head and reward scaling are replaced by this
project's value heads (``algo.value_loss``), and scalers/LERP rates are plain parameters initialised at 1 and
``1 / (blocks + 1)`` (no scale re-parameterisation). All ``E`` members are evaluated together as batched matmuls,
like :class:`robot_rl.algorithms.sac.EnsembleCritic`, with the same call signature.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def _unit_columns(num_members: int, d_in: int, d_out: int) -> nn.Parameter:
    """Weights ``(E, d_in, d_out)`` whose every output column ``[:, :, j]`` is a unit vector."""
    w = torch.randn(num_members, d_in, d_out)
    return nn.Parameter(F.normalize(w, dim=1))


class SimbaV2EnsembleCritic(nn.Module):
    """E SimbaV2 Q-functions evaluated together: ``(features (N, F), action (N, A))`` -> ``(E, N)`` or
    ``(E, N, out_features)`` when ``out_features > 1``."""

    def __init__(self, input_dim: int, hidden_dim: int, num_blocks: int, num_members: int, out_features: int = 1,
                 mlp_ratio: int = 4, c_shift: float = 3.0) -> None:
        super().__init__()
        if num_blocks < 1 or hidden_dim < 1 or mlp_ratio < 1:
            raise ValueError(f"SimbaV2 needs blocks, width and mlp_ratio >= 1, got {num_blocks}, {hidden_dim}, "
                             f"{mlp_ratio}")
        e, h = num_members, hidden_dim
        self.num_members, self.out_features, self.c_shift = e, out_features, float(c_shift)
        self.embed = _unit_columns(e, input_dim + 1, h)  # (E, in + 1, H): +1 for the shift constant
        self.embed_scale = nn.Parameter(torch.ones(e, 1, h))
        self.up = nn.ParameterList(_unit_columns(e, h, mlp_ratio * h) for _ in range(num_blocks))  # (E, H, rH)
        self.up_scale = nn.ParameterList(nn.Parameter(torch.ones(e, 1, mlp_ratio * h)) for _ in range(num_blocks))
        self.down = nn.ParameterList(_unit_columns(e, mlp_ratio * h, h) for _ in range(num_blocks))  # (E, rH, H)
        self.alpha = nn.ParameterList(nn.Parameter(torch.full((e, 1, h), 1.0 / (num_blocks + 1)))
                                      for _ in range(num_blocks))
        self.out_hidden = _unit_columns(e, h, h)  # (E, H, H)
        self.out_scale = nn.Parameter(torch.ones(e, 1, h))
        bound = 1.0 / math.sqrt(h)
        self.out_weight = nn.Parameter(torch.empty(e, h, out_features).uniform_(-bound, bound))  # (E, H, K)
        self.out_bias = nn.Parameter(torch.zeros(e, 1, out_features))  # (E, 1, K)

    @property
    def output_bias(self) -> nn.Parameter:
        """Bias of the output layer, ``(E, 1, K)``."""
        return self.out_bias

    def normalized_weights(self) -> list[nn.Parameter]:
        """The weights kept on the unit sphere (normalised along the input dimension, dim 1)."""
        return [self.embed, *self.up, *self.down, self.out_hidden]

    @torch.no_grad()
    def project_weights(self) -> None:
        """Project every normalised weight's output columns back onto the unit sphere (after an optimizer step)."""
        for w in self.normalized_weights():
            w.div_(w.norm(dim=1, keepdim=True).clamp_min(1e-12))

    def forward(self, features: torch.Tensor, action: torch.Tensor, members: torch.Tensor | None = None,
                detach_weights: bool = False) -> torch.Tensor:
        """Same contract as ``EnsembleCritic.forward``: Q ``(E or M, N)``, or ``(E or M, N, K)`` for K > 1."""
        def select(param: torch.Tensor) -> torch.Tensor:
            param = param.detach() if detach_weights else param
            return param if members is None else param[members]

        x = torch.cat([features, action, torch.full_like(action[:, :1], self.c_shift)], dim=-1)  # (N, in + 1)
        x = F.normalize(x, dim=-1)
        w = select(self.embed)  # (E, in + 1, H)
        h = F.normalize(select(self.embed_scale) * torch.matmul(x, w), dim=-1)  # (E, N, H)
        for up, up_scale, down, alpha in zip(self.up, self.up_scale, self.down, self.alpha):
            u = torch.relu(select(up_scale) * torch.bmm(h, select(up)))  # (E, N, rH)
            h_new = F.normalize(torch.bmm(u, select(down)), dim=-1)  # (E, N, H)
            h = F.normalize(torch.lerp(h, h_new, select(alpha)), dim=-1)  # h + alpha (h~ - h)
        z = select(self.out_scale) * torch.bmm(h, select(self.out_hidden))  # (E, N, H)
        out = torch.baddbmm(select(self.out_bias), z, select(self.out_weight))  # (E, N, K)
        return out[..., 0] if self.out_features == 1 else out
