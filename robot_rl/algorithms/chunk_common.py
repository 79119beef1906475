"""Pieces shared by the fine-tuning algorithms of generative chunk policies (DSRL, FQL, DPPO, ADPO).

By default critics score *single-step* env actions ``Q(s, a_t)`` (normalised to [-1, 1]) on the conditioning features of the
policy's own encoder; the policy's action at ``s`` is the first action of its chunk. That matches what replay
holds (one executed action per transition) and is exact when the actor replans every step
(``policy.execute_steps=1``, the fine-tuning configs' default); with longer open-loop execution the later
actions of a chunk are still valid off-policy data for the critic. ``sequence_critic=true`` (all four) scores
the executed chunk instead (:mod:`robot_rl.algorithms.sequence_critic`).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from robot_rl.algorithms.critics import EnsembleCritic
from robot_rl.config import AlgoConfig
from robot_rl.types import Batch

log = logging.getLogger("robot_rl.algorithms")


@dataclass
class ChunkFinetuneConfig(AlgoConfig):
    """Fields every generative-policy fine-tuner (DSRL, FQL, DPPO) shares: where the BC policy comes from and the
    critic ensemble ``Q(s, a_t)`` built by :func:`make_critic`."""

    pretrained: str = ""
    """BC-pretrained policy weights (``robot-rl pretrain`` output); '' starts from the untrained policy."""
    critic_lr: float = 3e-4
    """Adam learning rate of the critics."""
    tau: float = 0.005
    """Polyak factor of the target critic."""
    num_critics: int = 2
    """Critic ensemble members (mean for the actor, min for the target)."""
    critic_hidden_dims: list[int] = field(default_factory=lambda: [256, 256])
    """Hidden widths of the critics."""
    critic_layer_norm: bool = True
    """LayerNorm in the critics (as RLPD and FQL)."""
    sequence_critic: bool = False
    """Action-sequence critic (CQN-AS / Q-chunking; DSRL, FQL, DPPO, ADPO): score the executed chunk ``Q(s, a_t ..
    a_{t+E-1})``, ``E = policy.execute_steps``, instead of the first action, trained on chunks the learner
    re-assembles from replay (``robot_rl.sequence_replay``), so fine-tuning need not replan every step."""


# Parts of a generative policy that fine-tuning (re)creates: a pretrained checkpoint may carry them with other
# sizes (``policy.noise_actor_hidden_dims`` is a fine-tuning choice), so they load only when their shapes match.
FINETUNE_HEADS = ("noise_actor.", "onestep.")


def load_pretrained(policy: nn.Module, path: str) -> None:
    """Load BC-pretrained policy weights (``robot-rl pretrain`` output) into ``policy``; '' keeps it as built.

    The generator (encoder, denoiser, normalisation buffers) must match exactly: a mismatch is an error naming the
    config fields that differ from the checkpoint's ``policy_config``. The fine-tuning heads (``noise_actor``,
    ``onestep``) are loaded when their shapes match and otherwise kept freshly initialised (logged).
    """
    if not path:
        log.warning("%s starts from an untrained policy: pass algo.pretrained=PATH (from `robot-rl pretrain`)",
                    type(policy).__name__)
        return
    state = torch.load(Path(path), map_location="cpu", weights_only=True)
    weights = state["policy"] if "policy" in state else state
    own = policy.state_dict()
    core = {k: v for k, v in weights.items() if not k.startswith(FINETUNE_HEADS)}
    core_own = {k for k in own if not k.startswith(FINETUNE_HEADS)}
    mismatched = sorted(k for k in core.keys() & core_own if core[k].shape != own[k].shape)
    missing, unexpected = sorted(core_own - core.keys()), sorted(core.keys() - core_own)
    if mismatched or missing or unexpected:
        saved = state.get("policy_config", {}) if isinstance(state.get("policy_config"), dict) else {}
        current = getattr(policy, "cfg", None)
        differ = {k: (v, getattr(current, k)) for k, v in saved.items()
                  if current is not None and hasattr(current, k) and getattr(current, k) != v}
        raise ValueError(f"{path} does not fit this {type(policy).__name__}: shape mismatch {mismatched[:5]}, "
                         f"missing {missing[:5]}, unexpected {unexpected[:5]}. Config fields that differ from the "
                         f"checkpoint (saved, current): {differ}. Use the pretraining policy.* overrides.")
    heads = {}
    for prefix in FINETUNE_HEADS:
        part = {k: v for k, v in weights.items() if k.startswith(prefix)}
        mine = {k for k in own if k.startswith(prefix)}
        if part.keys() == mine and all(part[k].shape == own[k].shape for k in part):
            heads.update(part)
        elif mine:
            log.info("%s: checkpoint's %s has other sizes; it starts freshly initialised", path, prefix[:-1])
    result = policy.load_state_dict({**core, **heads}, strict=False)
    leftover = [k for k in result.missing_keys if not k.startswith(FINETUNE_HEADS)]
    if leftover or result.unexpected_keys:
        raise RuntimeError(f"loading {path}: missing {leftover}, unexpected {result.unexpected_keys}")
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
