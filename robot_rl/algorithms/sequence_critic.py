"""Action-sequence critics for chunked policies (``algo.sequence_critic=true``; DSRL, FQL, DPPO and ADPO).

Following the action-chunking critics of CQN-AS ("Coarse-to-fine Q-Network with Action Sequence", Seo et al. 2024)
and Q-chunking ("Reinforcement Learning with Action Chunking", Li, Zhou & Levine 2025): the critic scores the whole
executed chunk, ``Q(s_t, a_t .. a_{t+E-1})`` with ``E = policy.execute_steps``, and is trained on chunks
re-assembled from replay (:mod:`robot_rl.sequence_replay`) with the chunked TD target

    y = sum_{k < L} gamma^k r_{t+k} + gamma^L (1 - terminated) min_j Q'_j(s_{t+L}, pi(s_{t+L})[:E])

(``L <= E`` executed steps before the episode ended or the chain broke). Because the value is that of the
executed open-loop sequence, fine-tuning no longer needs ``policy.execute_steps=1``: the actor is improved on the
chunk prefix it will actually execute. The critic is the batched ensemble MLP over ``[features, flatten(chunk)]``.
"""
from __future__ import annotations

import torch

from robot_rl.algorithms.chunk_common import check_batch, td_target
from robot_rl.algorithms.critics import EnsembleCritic


def flatten_chunk(chunk: torch.Tensor) -> torch.Tensor:
    """``(N, E, A)`` -> ``(N, E * A)``: every action of the chunk is a critic input."""
    return chunk.reshape(chunk.shape[0], -1)


def chunk_td_target(reward: torch.Tensor, valid: torch.Tensor, terminated: torch.Tensor, length: torch.Tensor,
                    next_value: torch.Tensor, gamma: float) -> torch.Tensor:
    """``reward, valid (N, E)``, ``terminated, length, next_value (N,)`` -> chunked TD target ``(N,)``."""
    discounts = gamma ** torch.arange(reward.shape[1], device=reward.device, dtype=torch.float32)  # (E,)
    returns = (reward.float() * valid.float() * discounts).sum(1)  # (N,)
    bootstrap = torch.pow(torch.full_like(returns, gamma), length.float()) * (1.0 - terminated.float())
    return returns + bootstrap * next_value


def make_sequence_critic(feature_dim: int, horizon: int, action_dim: int, hidden: tuple[int, ...], members: int,
                         layer_norm: bool, device: torch.device) -> tuple[EnsembleCritic, EnsembleCritic]:
    """Online and (frozen, equal) target ensembles of ``Q(features, flatten(chunk of horizon x action_dim))``."""
    critic = EnsembleCritic(feature_dim + horizon * action_dim, hidden, members, layer_norm).to(device)
    target = EnsembleCritic(feature_dim + horizon * action_dim, hidden, members, layer_norm).to(device)
    target.load_state_dict(critic.state_dict())
    return critic, target.requires_grad_(False)


def sequence_horizon(policy, enabled: bool) -> int:
    """Executed steps per chunk the sequence critic scores: ``min(execute_steps, chunk_size)``; 0 when off."""
    return min(int(policy.cfg.execute_steps), int(policy.chunk_size)) if enabled else 0


def check_chunks(batch, horizon: int, action_dim: int) -> None:
    """A sequence critic needs :class:`SequenceBatch` chunks of ``(N, horizon, action_dim)``, finite."""
    from robot_rl.sequence_replay import SequenceBatch

    if not isinstance(batch, SequenceBatch):
        raise TypeError("sequence_critic=true trains on SequenceBatch chunks (robot_rl.sequence_replay), got "
                        f"{type(batch).__name__}")
    if batch.action.shape[1:] != (horizon, action_dim):
        raise ValueError(f"expected chunks (N, {horizon}, {action_dim}), got {tuple(batch.action.shape)}")
    if not (torch.isfinite(batch.action).all() and torch.isfinite(batch.reward).all()):
        raise FloatingPointError("batch contains non-finite actions or rewards")


def scored_actions(chunk: torch.Tensor, horizon: int) -> torch.Tensor:
    """What the critic scores of a normalised policy chunk ``(N, H, A)``: its executed prefix flattened
    ``(N, horizon * A)``, or its first action ``(N, A)`` when ``horizon`` is 0 (single-action critic)."""
    return flatten_chunk(chunk[:, :horizon]) if horizon else chunk[:, 0]


# What every fine-tuner (DSRL, FQL, DPPO, ADPO) does the same way with either critic (``horizon`` 0: single-action).
def check_update_batch(batch, horizon: int, action_dim: int) -> None:
    """:func:`check_chunks` for a sequence critic, else :func:`check_batch` on a one-step batch."""
    if horizon:
        check_chunks(batch, horizon, action_dim)
    else:
        check_batch(batch, action_dim)


def replay_actions(policy, batch, horizon: int) -> torch.Tensor:
    """What the critic scores of the replayed actions, normalised: the executed chunk ``(N, horizon * A)`` or the
    single action ``(N, A)``."""
    actions = policy.normalize(batch.action)
    return flatten_chunk(actions) if horizon else actions


def bootstrapped_target(batch, next_value: torch.Tensor, gamma: float, horizon: int) -> torch.Tensor:
    """TD target ``(N,)``: :func:`chunk_td_target` (rewards of the executed steps, bootstrap after the last one) for
    a sequence critic, else the one-step ``r + gamma (1 - terminated) next_value``."""
    if horizon:
        return chunk_td_target(batch.reward, batch.valid, batch.terminated, batch.length, next_value, gamma)
    return td_target(batch, next_value, gamma)
