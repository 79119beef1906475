"""How a critic's raw output becomes a Q-value and how it is fitted to a TD target (``algo.value_loss``).

- ``mse``: one output per critic, regressed onto the scalar target (classic TD).
- ``hl_gauss``: HL-Gauss from "Stop Regressing: Training Value Functions via Classification for Scalable Deep RL"
  (Farebrother et al., ICML 2024). The critic outputs logits over ``bins`` fixed bins on ``[v_min, v_max]``;
  the scalar TD target ``y`` becomes a categorical target by integrating a Gaussian ``N(y, sigma^2)`` over each
  bin (mass outside the support is renormalised away), the loss is the cross-entropy, and ``Q`` is the
  expectation of the bin centres under the softmax. The paper recommends ``sigma = 0.75`` bin widths.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class ScalarValue(nn.Module):
    """``mse``: the critic output ``(..., 1)`` is the Q-value; half squared error, summed over ensemble members."""

    num_outputs = 1

    def value(self, out: torch.Tensor) -> torch.Tensor:
        """``out (E, N, 1)`` -> Q ``(E, N)``."""
        return out[..., 0]

    def loss(self, out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """``out (E, N, 1)``, ``target (N,)``: sum over members of each member's mean 0.5 (Q - y)^2."""
        q = out[..., 0]
        return F.mse_loss(q, target.expand_as(q), reduction="sum") * (0.5 / q.shape[1])


class HLGaussValue(nn.Module):
    """``hl_gauss``: value as classification over ``bins`` bins with a Gaussian-smoothed target (see module doc)."""

    def __init__(self, bins: int, v_min: float, v_max: float, sigma: float = 0.0) -> None:
        super().__init__()
        if bins < 2 or not v_max > v_min:
            raise ValueError(f"HL-Gauss needs bins >= 2 and v_max > v_min, got {bins}, [{v_min}, {v_max}]")
        width = (v_max - v_min) / bins
        self.sigma = float(sigma) if sigma > 0 else 0.75 * width  # the paper's sigma / bin width = 0.75
        self.num_outputs = int(bins)
        self.v_min, self.v_max = float(v_min), float(v_max)
        # Buffers so that .to(device) moves them with the algorithm.
        self.register_buffer("edges", torch.linspace(v_min, v_max, bins + 1))  # (B + 1,)
        self.register_buffer("centers", (self.edges[:-1] + self.edges[1:]) / 2)  # (B,)

    def target_probs(self, target: torch.Tensor) -> torch.Tensor:
        """Scalar targets ``(N,)`` -> categorical targets ``(N, B)`` (each row sums to one).

        ``P(bin i) = (Phi((e_{i+1} - y) / sigma) - Phi((e_i - y) / sigma)) / (Phi((v_max - y) / sigma) -
        Phi((v_min - y) / sigma))``; targets are first clipped into the support."""
        y = target.float().clamp(self.v_min, self.v_max)[:, None]  # (N, 1)
        cdf = torch.special.erf((self.edges[None] - y) / (self.sigma * math.sqrt(2.0)))  # (N, B + 1), 2 Phi - 1
        mass = cdf[:, 1:] - cdf[:, :-1]  # (N, B)
        return mass / (cdf[:, -1:] - cdf[:, :1]).clamp_min(1e-12)

    def initial_logits(self, value: float = 0.0) -> torch.Tensor:
        """Logits ``(B,)`` whose softmax is the HL-Gauss target of ``value``: used as the critic's output bias at
        initialisation, so Q starts at ``value`` (0, like a scalar critic) instead of the support's midpoint. A
        sparse 0/1 reward cannot pull an optimistic mid-support start down quickly (gamma^n per backup)."""
        return self.target_probs(torch.tensor([value], device=self.edges.device))[0].clamp_min(1e-6).log()

    def value(self, out: torch.Tensor) -> torch.Tensor:
        """Logits ``(E, N, B)`` -> Q ``(E, N)``: expected bin centre."""
        return torch.softmax(out.float(), dim=-1) @ self.centers

    def loss(self, out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Logits ``(E, N, B)``, target ``(N,)``: sum over members of each member's mean cross-entropy."""
        probs = self.target_probs(target)  # (N, B)
        log_p = torch.log_softmax(out.float(), dim=-1)  # (E, N, B)
        return -(log_p * probs[None]).sum(-1).mean(-1).sum()


def make_value_head(kind: str, bins: int, v_min: float, v_max: float, sigma: float) -> nn.Module:
    if kind == "mse":
        return ScalarValue()
    if kind == "hl_gauss":
        return HLGaussValue(bins, v_min, v_max, sigma)
    raise ValueError(f"algo.value_loss must be 'mse' or 'hl_gauss', got {kind!r}")
