"""Pieces shared by the fine-tuning algorithms of generative chunk policies (DSRL, FQL, DPPO).

Critics score *single-step* env actions ``Q(s, a_t)`` (normalised to [-1, 1]) on the conditioning features of the
policy's own encoder; the policy's action at ``s`` is the first action of its chunk. That matches what replay
holds (one executed action per transition) and is exact when the actor replans every step
(``policy.execute_steps=1``, the fine-tuning configs' default); with longer open-loop execution the later
actions of a chunk are still valid off-policy data for the critic.
"""
from __future__ import annotations

import logging
from pathlib import Path

import torch
from torch import nn

from robot_rl.algorithms.sac import EnsembleCritic
from robot_rl.types import Batch

log = logging.getLogger("robot_rl.algorithms")


def load_pretrained(policy: nn.Module, path: str) -> None:
    """Load BC-pretrained policy weights (``robot-rl pretrain`` output) into ``policy``; '' keeps it as built."""
    if not path:
        log.warning("%s starts from an untrained policy: pass algo.pretrained=PATH (from `robot-rl pretrain`)",
                    type(policy).__name__)
        return
    state = torch.load(Path(path), map_location="cpu", weights_only=True)
    weights = state["policy"] if "policy" in state else state
    policy.load_state_dict(weights, strict=True)
    log.info("loaded pretrained policy weights from %s", path)


def make_critic(input_dim: int, hidden: tuple[int, ...], members: int, layer_norm: bool,
                device: torch.device) -> tuple[EnsembleCritic, EnsembleCritic]:
    critic = EnsembleCritic(input_dim, hidden, members, layer_norm).to(device)
    target = EnsembleCritic(input_dim, hidden, members, layer_norm).to(device)
    target.load_state_dict(critic.state_dict())
    return critic, target.requires_grad_(False)


@torch.no_grad()
def polyak(target: nn.Module, online: nn.Module, tau: float) -> None:
    for t, o in zip(target.parameters(), online.parameters()):
        t.lerp_(o, tau)


def check_batch(batch: Batch, action_dim: int) -> None:
    """Fail loudly on a malformed batch before it poisons the critics."""
    if batch.action.ndim != 2 or batch.action.shape[1] != action_dim:
        raise ValueError(f"expected actions (N, {action_dim}), got {tuple(batch.action.shape)}")
    if batch.action.dtype != torch.float32:
        raise TypeError(f"actions must be float32, got {batch.action.dtype}")
    if not (torch.isfinite(batch.action).all() and torch.isfinite(batch.reward).all()):
        raise FloatingPointError("batch contains non-finite actions or rewards")


def td_target(batch: Batch, next_q: torch.Tensor, gamma: float) -> torch.Tensor:
    """``r + gamma (1 - terminated) next_q``, all ``(N,)``."""
    return batch.reward.float() + gamma * (1.0 - batch.terminated.float()) * next_q


def adam(params, lr: float) -> torch.optim.Adam:
    return torch.optim.Adam(list(params), lr=lr)


def scalar(value: torch.Tensor | float) -> float:
    """A metric as a plain float (detached first, so logging never touches autograd)."""
    return float(value.detach()) if isinstance(value, torch.Tensor) else float(value)
