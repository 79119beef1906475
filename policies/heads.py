"""Networks of the generative chunk policies: denoisers over action chunks, the DSRL noise actor, the one-step head.

Every denoiser maps a noisy normalised chunk ``x (N, H, A)``, a noise level ``level (N,)`` in ``[0, 1]``
(1 = pure noise, 0 = clean actions; diffusion timesteps ``k`` become ``k / T``) and observation features
``cond (N, F)`` to a chunk-shaped output ``(N, H, A)`` (an epsilon, a velocity, or a clean chunk, depending on
the policy that owns it). Three backbones:

- ``unet``: the conditional 1-D temporal U-Net of Diffusion Policy (Chi et al. 2023): residual Conv1d blocks
  whose features are FiLM-modulated (per-channel scale and bias) by ``[cond, time embedding]``;
- ``transformer``: one token per chunk step plus a conditioning token, a pre-LN transformer encoder, and
  FiLM on the token embeddings;
- ``mlp``: the flattened chunk concatenated with the conditioning, residual MLP blocks with FiLM (cheap on CPU).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

_HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)
_LOG_2 = math.log(2.0)


def timestep_embedding(level: torch.Tensor, dim: int, max_period: float = 10_000.0) -> torch.Tensor:
    """Sinusoidal embedding of ``level (N,)`` in [0, 1] (scaled by 1000 like a DDPM timestep) -> ``(N, dim)``."""
    if dim % 2:
        raise ValueError(f"timestep embedding size must be even, got {dim}")
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=level.device, dtype=torch.float32) / half)
    args = level.float()[:, None] * 1000.0 * freqs[None]  # (N, half)
    return torch.cat([args.sin(), args.cos()], dim=-1)  # (N, dim)


class TimeConditioning(nn.Module):
    """``(level (N,), cond (N, F))`` -> conditioning vector ``(N, cond_dim + time_dim)``."""

    def __init__(self, cond_dim: int, time_dim: int) -> None:
        super().__init__()
        self.time_dim = time_dim
        self.time_mlp = nn.Sequential(nn.Linear(time_dim, 4 * time_dim), nn.Mish(), nn.Linear(4 * time_dim, time_dim))
        self.output_dim = cond_dim + time_dim

    def forward(self, level: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        return torch.cat([cond, self.time_mlp(timestep_embedding(level, self.time_dim))], dim=-1)


class FiLMResBlock1d(nn.Module):
    """Two Conv1d-GroupNorm-Mish layers, FiLM after the first, with a residual connection: ``(N, C, L)``."""

    def __init__(self, in_ch: int, out_ch: int, cond_dim: int, kernel: int = 5, groups: int = 8) -> None:
        super().__init__()
        self.conv1 = nn.Sequential(nn.Conv1d(in_ch, out_ch, kernel, padding=kernel // 2), nn.GroupNorm(groups, out_ch),
                                   nn.Mish())
        self.conv2 = nn.Sequential(nn.Conv1d(out_ch, out_ch, kernel, padding=kernel // 2), nn.GroupNorm(groups, out_ch),
                                   nn.Mish())
        self.film = nn.Sequential(nn.Mish(), nn.Linear(cond_dim, 2 * out_ch))
        self.residual = nn.Conv1d(in_ch, out_ch, 1) if in_ch != out_ch else nn.Identity()

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        h = self.conv1(x)  # (N, out, L)
        scale, bias = self.film(c).unsqueeze(-1).chunk(2, dim=1)  # (N, out, 1) each
        h = self.conv2(h * (1.0 + scale) + bias)
        return h + self.residual(x)


class UNet1dDenoiser(nn.Module):
    """Diffusion Policy's conditional temporal U-Net; halves the chunk length per level while it is >= 2."""

    def __init__(self, action_dim: int, cond_dim: int, dims: tuple[int, ...] = (64, 128), time_dim: int = 64,
                 kernel: int = 5) -> None:
        super().__init__()
        if any(d % 8 for d in dims):
            raise ValueError(f"U-Net channel widths must be multiples of 8 (GroupNorm), got {dims}")
        self.conditioning = TimeConditioning(cond_dim, time_dim)
        c = self.conditioning.output_dim
        widths = [action_dim, *dims]
        self.down = nn.ModuleList(nn.ModuleList([FiLMResBlock1d(a, b, c, kernel), FiLMResBlock1d(b, b, c, kernel)])
                                  for a, b in zip(widths[:-1], widths[1:]))
        self.mid = nn.ModuleList([FiLMResBlock1d(dims[-1], dims[-1], c, kernel) for _ in range(2)])
        self.up = nn.ModuleList(nn.ModuleList([FiLMResBlock1d(a + b, a, c, kernel), FiLMResBlock1d(a, a, c, kernel)])
                                for a, b in zip(reversed(dims[:-1]), reversed(dims[1:])))
        self.final = nn.Sequential(nn.Conv1d(dims[0], dims[0], kernel, padding=kernel // 2), nn.Mish(),
                                   nn.Conv1d(dims[0], action_dim, 1))

    def forward(self, x: torch.Tensor, level: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        c = self.conditioning(level, cond)  # (N, C)
        h = x.transpose(1, 2)  # (N, A, H)
        skips: list[torch.Tensor] = []
        for i, (block1, block2) in enumerate(self.down):
            h = block2(block1(h, c), c)
            if i < len(self.down) - 1:
                skips.append(h)
                if h.shape[-1] >= 2:
                    h = F.avg_pool1d(h, 2, ceil_mode=True)  # (N, C, ceil(L / 2))
        for block in self.mid:
            h = block(h, c)
        for block1, block2 in self.up:
            skip = skips.pop()
            h = F.interpolate(h, size=skip.shape[-1], mode="nearest") if h.shape[-1] != skip.shape[-1] else h
            h = block2(block1(torch.cat([h, skip], dim=1), c), c)
        return self.final(h).transpose(1, 2)  # (N, H, A)


class TransformerDenoiser(nn.Module):
    """Chunk steps as tokens plus one conditioning token; FiLM of the token embeddings by the conditioning."""

    def __init__(self, action_dim: int, cond_dim: int, chunk_size: int, width: int = 128, layers: int = 4,
                 heads: int = 4, time_dim: int = 64) -> None:
        super().__init__()
        self.conditioning = TimeConditioning(cond_dim, time_dim)
        c = self.conditioning.output_dim
        self.embed = nn.Linear(action_dim, width)
        self.position = nn.Parameter(torch.zeros(1, chunk_size + 1, width))
        nn.init.normal_(self.position, std=0.02)
        self.cond_token = nn.Linear(c, width)
        self.film = nn.Linear(c, 2 * width)
        layer = nn.TransformerEncoderLayer(width, heads, 4 * width, dropout=0.0, activation="gelu",
                                           batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.out = nn.Sequential(nn.LayerNorm(width), nn.Linear(width, action_dim))

    def forward(self, x: torch.Tensor, level: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        c = self.conditioning(level, cond)  # (N, C)
        scale, bias = self.film(c).unsqueeze(1).chunk(2, dim=-1)  # (N, 1, W) each
        tokens = self.embed(x) * (1.0 + scale) + bias  # (N, H, W)
        tokens = torch.cat([self.cond_token(c).unsqueeze(1), tokens], dim=1) + self.position[:, :x.shape[1] + 1]
        return self.out(self.encoder(tokens)[:, 1:])  # (N, H, A)


class MLPDenoiser(nn.Module):
    """Flattened chunk -> residual FiLM MLP -> flattened chunk."""

    def __init__(self, action_dim: int, cond_dim: int, chunk_size: int, width: int = 256, blocks: int = 3,
                 time_dim: int = 64) -> None:
        super().__init__()
        self.conditioning = TimeConditioning(cond_dim, time_dim)
        c = self.conditioning.output_dim
        flat = chunk_size * action_dim
        self.inp = nn.Linear(flat + c, width)
        self.blocks = nn.ModuleList(nn.Sequential(nn.LayerNorm(width), nn.Linear(width, width), nn.Mish(),
                                                  nn.Linear(width, width)) for _ in range(blocks))
        self.films = nn.ModuleList(nn.Linear(c, 2 * width) for _ in range(blocks))
        self.out = nn.Sequential(nn.Mish(), nn.Linear(width, flat))

    def forward(self, x: torch.Tensor, level: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        c = self.conditioning(level, cond)  # (N, C)
        h = self.inp(torch.cat([x.flatten(1), c], dim=-1))  # (N, W)
        for block, film in zip(self.blocks, self.films):
            scale, bias = film(c).chunk(2, dim=-1)
            h = h + block(h) * (1.0 + scale) + bias
        return self.out(h).view_as(x)  # (N, H, A)


def make_denoiser(backbone: str, action_dim: int, cond_dim: int, chunk_size: int, width: int, depth: int,
                  unet_dims: tuple[int, ...]) -> nn.Module:
    if backbone == "unet":
        return UNet1dDenoiser(action_dim, cond_dim, tuple(unet_dims))
    if backbone == "transformer":
        return TransformerDenoiser(action_dim, cond_dim, chunk_size, width=width, layers=depth)
    if backbone == "mlp":
        return MLPDenoiser(action_dim, cond_dim, chunk_size, width=width, blocks=depth)
    raise ValueError(f"backbone must be 'unet', 'transformer' or 'mlp', got {backbone!r}")


class NoiseActor(nn.Module):
    """DSRL's latent policy: features ``(N, F)`` -> initial noise ``w (N, H, A)`` = ``magnitude * tanh(u)``,
    ``u ~ N(mean, std)``; log-probs are those of ``tanh(u)`` (the constant ``log magnitude`` is left out)."""

    def __init__(self, cond_dim: int, chunk_size: int, action_dim: int, hidden: tuple[int, ...], magnitude: float,
                 log_std_min: float = -5.0, log_std_max: float = 2.0) -> None:
        super().__init__()
        if magnitude <= 0:
            raise ValueError(f"noise magnitude must be > 0, got {magnitude}")
        self.shape = (chunk_size, action_dim)
        self.magnitude = magnitude
        layers: list[nn.Module] = []
        width = cond_dim
        for h in hidden:
            layers += [nn.Linear(width, h), nn.ReLU()]
            width = h
        self.trunk = nn.Sequential(*layers)
        self.head = nn.Linear(width, 2 * chunk_size * action_dim)
        nn.init.zeros_(self.head.weight)  # start at mean 0, std exp(mid): close to the base policy's own noise
        nn.init.zeros_(self.head.bias)
        self._mid, self._half = 0.5 * (log_std_max + log_std_min), 0.5 * (log_std_max - log_std_min)

    def forward(self, features: torch.Tensor, deterministic: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """-> (noise ``(N, H, A)``, log-prob ``(N,)``); deterministic returns the mode (and a zero log-prob)."""
        mean, raw = self.head(self.trunk(features)).chunk(2, dim=-1)  # (N, H*A) each
        if deterministic:
            return (self.magnitude * torch.tanh(mean)).view(-1, *self.shape), torch.zeros_like(mean[:, 0])
        log_std = self._mid + self._half * torch.tanh(raw)
        eps = torch.randn_like(mean)
        u = mean + log_std.exp() * eps
        log_prob = (-0.5 * eps.square() - log_std - _HALF_LOG_2PI
                    - 2.0 * (_LOG_2 - u - F.softplus(-2.0 * u))).sum(-1)  # (N,)
        return (self.magnitude * torch.tanh(u)).view(-1, *self.shape), log_prob


class OneStepHead(nn.Module):
    """Consistency-style one-step generator ``f(x, s, cond) = (1 - s) x + s F(x, s, cond)`` on normalised chunks.

    The parameterisation meets the consistency boundary condition ``f(x, 0) = x`` exactly; at ``s = 1`` (pure
    noise) ``f`` is a one-step sampler. FQL's one-step actor is the same module evaluated at ``s = 1`` only.
    """

    def __init__(self, network: nn.Module) -> None:
        super().__init__()
        self.network = network

    def forward(self, x: torch.Tensor, level: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        s = level.view(-1, 1, 1).to(x.dtype)  # (N, 1, 1)
        return (1.0 - s) * x + s * self.network(x, level, cond)  # (N, H, A)
