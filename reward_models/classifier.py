"""HIL-SERL-style binary success classifier: the baseline reward model.

One frame (all views) + task text -> P(success). Trained with BCE on frames: a successful episode's final
frame is positive, every other frame (and every frame under a mismatched text) negative. As a reward it is
``1[P(success | s') >= threshold]`` (``reward=classifier``: ``base=done``, no dense term); it exposes the same
``phi_done`` interface as the progress model, with ``phi = P(success)``.
"""
from __future__ import annotations

from typing import Mapping

import torch
import torch.nn as nn

from robot_rl.reward_models.config import ProgressModelConfig
from robot_rl.reward_models.progress import FrameEncoder, _mlp


class SuccessClassifier(nn.Module):
    kind = "classifier"

    def __init__(self, cfg: ProgressModelConfig, view_shapes: Mapping[str, tuple[int, ...]]) -> None:
        super().__init__()
        self.cfg = cfg
        self.encoder = FrameEncoder(cfg, view_shapes)
        d = cfg.feature_dim
        self.text = nn.Sequential(nn.Linear(cfg.text_dim, d), nn.LayerNorm(d))
        self.head = _mlp(3 * d, cfg.hidden_dim, 1)

    def text_features(self, text: torch.Tensor) -> torch.Tensor:
        if text.ndim != 2 or text.shape[1] != self.cfg.text_dim:
            raise ValueError(f"text embeddings must be (N, {self.cfg.text_dim}), got {tuple(text.shape)}")
        return self.text(text.float())

    def logit(self, f: torch.Tensor, tf: torch.Tensor) -> torch.Tensor:
        """Frame features (N, d), text features (N, d) -> success logit (N,)."""
        return self.head(torch.cat([f, tf, f * tf], dim=-1))[:, 0]

    @torch.no_grad()
    def phi_done(self, obs: Mapping[str, torch.Tensor], text: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(P(success) (N,), P(success) (N,)): the classifier's only output serves as both."""
        f = self.encoder(obs)
        p = torch.sigmoid(self.logit(f, self.text_features(text).expand(f.shape[0], -1)))
        return p, p
