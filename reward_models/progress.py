"""The progress reward model: (task text, first frame, frame t, frame t+k, views) -> delta, Phi, done.

- :class:`FrameEncoder` fuses every view of one frame into a feature vector: one small CNN per camera
  (``images/<cam>``, uint8 HxWx3, resized to ``image_size``) and an MLP for ``state`` (normalised with the
  training data's statistics), concatenated and projected (multi-view fusion).
- :class:`ProgressRewardModel` heads, all conditioned on the task-text embedding:
  ``phi(s)`` in [0, 1] -- absolute progress of the current frame only (the shaping potential);
  ``done(s)`` -- success probability of the current frame;
  ``delta(first, t, t+k)`` in [-1, 1] -- the fraction of the remaining work done from t to t+k (negative
  for regress), anchored on the episode's first frame.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from robot_rl.reward_models.config import ProgressModelConfig


def _image_to_float(x: torch.Tensor, size: int) -> torch.Tensor:
    """uint8 (N, H, W, 3) -> float (N, 3, size, size) in [0, 1]."""
    if x.dtype != torch.uint8 or x.ndim != 4 or x.shape[-1] != 3:
        raise ValueError(f"images must be uint8 (N, H, W, 3), got {x.dtype} {tuple(x.shape)}")
    y = x.permute(0, 3, 1, 2).float().div_(255.0)
    if y.shape[-1] != size or y.shape[-2] != size:
        y = F.interpolate(y, size=(size, size), mode="area" if y.shape[-1] > size else "bilinear",
                          align_corners=None if y.shape[-1] > size else False)
    return y


def random_shift(x: torch.Tensor, pad: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """DrQ-style augmentation: replicate-pad by ``pad`` and crop back at a random offset. (N, C, H, W)."""
    if pad <= 0:
        return x
    n, _, h, w = x.shape
    padded = F.pad(x, (pad,) * 4, mode="replicate")
    dx = torch.randint(0, 2 * pad + 1, (n,), generator=generator)
    dy = torch.randint(0, 2 * pad + 1, (n,), generator=generator)
    rows = (dy[:, None] + torch.arange(h)[None]).to(x.device)  # (N, H)
    cols = (dx[:, None] + torch.arange(w)[None]).to(x.device)  # (N, W)
    idx_n = torch.arange(n, device=x.device)[:, None, None]
    out = padded.permute(0, 2, 3, 1)[idx_n, rows[:, :, None], cols[:, None, :]]  # (N, H, W, C)
    return out.permute(0, 3, 1, 2)


class _ConvNet(nn.Module):
    def __init__(self, channels: Sequence[int], size: int, out_dim: int) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c_in = 3
        for c in channels:
            layers += [nn.Conv2d(c_in, c, 3, stride=2, padding=1), nn.GELU()]
            c_in = c
            size = (size + 1) // 2
        self.conv = nn.Sequential(*layers)
        self.proj = nn.Linear(c_in * size * size, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (N, 3, H, W) -> (N, out_dim)
        return self.proj(self.conv(x).flatten(1))


class FrameEncoder(nn.Module):
    """All views of a frame -> one feature vector (N, feature_dim)."""

    def __init__(self, cfg: ProgressModelConfig, view_shapes: Mapping[str, tuple[int, ...]]) -> None:
        super().__init__()
        if not view_shapes:
            raise ValueError("the reward model needs at least one view")
        self.cfg = cfg
        self.views = sorted(view_shapes)
        self.view_shapes = {k: tuple(int(s) for s in v) for k, v in view_shapes.items()}
        self.nets = nn.ModuleDict()
        for key in self.views:
            shape = self.view_shapes[key]
            safe = key.replace("/", "__")
            if key.startswith("images/"):
                if len(shape) != 3 or shape[-1] != 3:
                    raise ValueError(f"view {key!r}: expected (H, W, 3), got {shape}")
                self.nets[safe] = _ConvNet(cfg.channels, cfg.image_size, cfg.feature_dim)
            else:
                if len(shape) != 1:
                    raise ValueError(f"view {key!r}: vector views must be 1-D, got {shape}")
                self.nets[safe] = nn.Sequential(nn.Linear(shape[0], cfg.hidden_dim), nn.GELU(),
                                                nn.Linear(cfg.hidden_dim, cfg.feature_dim))
                self.register_buffer(f"mean_{safe}", torch.zeros(shape[0]))
                self.register_buffer(f"std_{safe}", torch.ones(shape[0]))
        self.fuse = nn.Sequential(nn.GELU(), nn.Linear(cfg.feature_dim * len(self.views), cfg.feature_dim),
                                  nn.LayerNorm(cfg.feature_dim))

    def set_normalisation(self, key: str, mean: np.ndarray, std: np.ndarray) -> None:
        safe = key.replace("/", "__")
        getattr(self, f"mean_{safe}").copy_(torch.as_tensor(mean, dtype=torch.float32))
        getattr(self, f"std_{safe}").copy_(torch.as_tensor(np.maximum(std, 1e-3), dtype=torch.float32))

    def forward(self, obs: Mapping[str, torch.Tensor], augment: int = 0) -> torch.Tensor:
        """``obs[key]``: (N, *view_shape) (uint8 images, float32 vectors) -> (N, feature_dim)."""
        feats = []
        n = None
        for key in self.views:
            if key not in obs:
                raise KeyError(f"reward model needs view {key!r}; got {sorted(obs)}")
            x = obs[key]
            if tuple(x.shape[1:]) != self.view_shapes[key]:
                raise ValueError(f"view {key!r}: expected (N, {self.view_shapes[key]}), got {tuple(x.shape)}")
            if n is None:
                n = x.shape[0]
            elif x.shape[0] != n:
                raise ValueError(f"views disagree on batch size: {x.shape[0]} vs {n}")
            safe = key.replace("/", "__")
            if key.startswith("images/"):
                y = _image_to_float(x, self.cfg.image_size)
                if augment:
                    y = random_shift(y, augment)
            else:
                if not torch.is_floating_point(x):
                    raise ValueError(f"view {key!r} must be floating point, got {x.dtype}")
                if not torch.isfinite(x).all():
                    raise ValueError(f"view {key!r} contains NaN or inf")
                y = (x.float() - getattr(self, f"mean_{safe}")) / getattr(self, f"std_{safe}")
            feats.append(self.nets[safe](y))
        return self.fuse(torch.cat(feats, dim=-1))


def _mlp(d_in: int, hidden: int, d_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(d_in, hidden), nn.GELU(), nn.Linear(hidden, hidden), nn.GELU(),
                         nn.Linear(hidden, d_out))


class ProgressRewardModel(nn.Module):
    kind = "prm"

    def __init__(self, cfg: ProgressModelConfig, view_shapes: Mapping[str, tuple[int, ...]]) -> None:
        super().__init__()
        self.cfg = cfg
        self.encoder = FrameEncoder(cfg, view_shapes)
        d, h = cfg.feature_dim, cfg.hidden_dim
        self.text = nn.Sequential(nn.Linear(cfg.text_dim, d), nn.LayerNorm(d))
        self.state_head = _mlp(3 * d, h, 2)  # [f, text, f * text] -> (phi logit, done logit)
        self.delta_head = _mlp(6 * d, h, 1)  # [f0, fa, fb, fb - fa, text, (fb - fa) * text] -> delta

    def text_features(self, text: torch.Tensor) -> torch.Tensor:
        """float (N, text_dim) sentence embeddings -> (N, feature_dim)."""
        if text.ndim != 2 or text.shape[1] != self.cfg.text_dim:
            raise ValueError(f"text embeddings must be (N, {self.cfg.text_dim}), got {tuple(text.shape)}")
        return self.text(text.float())

    def state_outputs(self, f: torch.Tensor, tf: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Frame features (N, d) + text features (N, d) -> (phi in [0, 1] (N,), done logit (N,))."""
        out = self.state_head(torch.cat([f, tf, f * tf], dim=-1))
        return torch.sigmoid(out[:, 0]), out[:, 1]

    def delta(self, f0: torch.Tensor, fa: torch.Tensor, fb: torch.Tensor, tf: torch.Tensor) -> torch.Tensor:
        """Progress delta a -> b in [-1, 1], (N,), from features (N, d) of first frame, a, b and the text."""
        diff = fb - fa
        return torch.tanh(self.delta_head(torch.cat([f0, fa, fb, diff, tf, diff * tf], dim=-1))[:, 0])

    @torch.no_grad()
    def phi_done(self, obs: Mapping[str, torch.Tensor], text: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(phi (N,), done probability (N,)) for a batch of observations and one text embedding (1, 384) or
        one per row (N, 384)."""
        f = self.encoder(obs)
        tf = self.text_features(text).expand(f.shape[0], -1)
        phi, done_logit = self.state_outputs(f, tf)
        return phi, torch.sigmoid(done_logit)


def model_config_dict(cfg: ProgressModelConfig) -> dict[str, Any]:
    return {f.name: (list(v) if isinstance(v := getattr(cfg, f.name), tuple) else v)
            for f in dataclasses.fields(cfg)}


def model_config_from_dict(d: Mapping[str, Any]) -> ProgressModelConfig:
    kw = {k: (tuple(v) if isinstance(v, list) else v) for k, v in d.items()}
    return ProgressModelConfig(**kw)
