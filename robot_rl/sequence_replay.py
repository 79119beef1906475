"""Executed action chunks from replay, for action-sequence critics ``Q(s_t, a_t .. a_{t+H-1})``.

Replay holds one env step per transition. Consecutive steps of an episode share a frame (transition ``t``'s
``next_obs`` frame is transition ``t+1``'s ``obs`` frame, see :mod:`robot_rl.replay`), which is how a chunk is
re-assembled here: from a sampled start, follow ``next_fid -> obs_fid`` for up to ``H - 1`` more steps
(:meth:`ReplayBuffer.following_slots`, an O(1) lookup per step, so a batch costs O(N H) whatever the buffer's
size), stopping at termination, truncation or a broken chain (a step that was overwritten or arrived out of
order). A :class:`SequenceBatch` row carries the ``H`` actions (padded by repeating the last
executed one), the rewards (0 past the end), which steps are real (``valid``), the observation after the last
real step and whether that step terminated: everything the chunked TD target
``sum_k gamma^k r_{t+k} + gamma^L (1 - terminated) V(s_{t+L})`` needs (``L`` = ``length``).

:class:`SequenceSampler` mixes demo and online sequences like :class:`robot_rl.replay.MixedSampler` and is what
the learner uses when ``algo.sequence_horizon > 0``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, Sequence

import numpy as np

from robot_rl.replay import ReplayBuffer
from robot_rl.types import ArrayT, Batch

if TYPE_CHECKING:
    import torch


@dataclass
class SequenceBatch(Generic[ArrayT]):
    """N executed chunks of horizon H (numpy or torch)."""

    obs: dict[str, ArrayT]
    """Observation at the chunk's first step, ``(N, ...)``."""
    action: ArrayT
    """Executed actions ``(N, H, A)``; steps past the end repeat the last executed action."""
    reward: ArrayT
    """Rewards ``(N, H)`` float32, 0 past the end."""
    valid: ArrayT
    """``(N, H)`` bool: the step was executed (a prefix of each row)."""
    next_obs: dict[str, ArrayT]
    """Observation after the last valid step, ``(N, ...)``."""
    terminated: ArrayT
    """``(N,)`` bool: the last valid step terminated (no bootstrap)."""
    length: ArrayT
    """``(N,)`` int64, number of valid steps (1 .. H)."""
    from_demo: ArrayT | None = None
    """``(N,)`` bool: drawn from the demo buffer."""
    step_frames: dict[str, ArrayT] | None = None
    """Every frame of the window for the keys asked for (``step_keys``; the learned reward's views), ``(N, H+1,
    ...)``: frame ``k`` is the observation before step ``k`` and frame ``k+1`` the one after it. Frames
    ``0 .. length`` are real; later ones repeat frame ``length``. None unless asked for."""
    episode_id: ArrayT | None = None
    """``(N,)`` int64 episode id of each row (with ``step_frames``; the reward labeller's frame cache keys)."""
    step: ArrayT | None = None
    """``(N,)`` int64 step index of each row's first step within its episode (with ``step_frames``); frame
    ``k`` is the episode's frame ``step + k`` (a window follows consecutive steps of one episode)."""

    def __len__(self) -> int:
        return int(self.action.shape[0])

    def to_torch(self, device: Any = "cpu") -> "SequenceBatch":
        import torch

        def t(x: np.ndarray) -> "torch.Tensor":
            return torch.from_numpy(np.ascontiguousarray(x)).to(device)

        def opt(x: np.ndarray | None) -> "torch.Tensor | None":
            return None if x is None else t(x)

        return SequenceBatch({k: t(v) for k, v in self.obs.items()}, t(self.action), t(self.reward), t(self.valid),
                             {k: t(v) for k, v in self.next_obs.items()}, t(self.terminated), t(self.length),
                             opt(self.from_demo),
                             None if self.step_frames is None else {k: t(v) for k, v in self.step_frames.items()},
                             opt(self.episode_id), opt(self.step))


def sample_sequences(buffer: ReplayBuffer, n: int, horizon: int, rng: np.random.Generator,
                     step_keys: Sequence[str] = (), obs_keys: Sequence[str] | None = None) -> SequenceBatch:
    """``n`` chunks of up to ``horizon`` consecutive steps starting at uniformly drawn transitions.

    ``step_keys``: also return every frame of each window for these keys (``step_frames``, with ``episode_id``
    and ``step``), e.g. for a learned reward that scores each step. ``obs_keys``: the keys ``obs`` and
    ``next_obs`` carry (None: every key in replay)."""
    if horizon < 1:
        raise ValueError(f"horizon must be >= 1, got {horizon}")
    with buffer.lock:
        idx = buffer.draw_slots(n, rng)  # (n,) slots of the first steps
        slots = np.empty((n, horizon), np.int64)
        valid = np.zeros((n, horizon), bool)
        slots[:, 0], valid[:, 0] = idx, True
        alive = ~(buffer.fields["terminated"][idx] | buffer.fields["truncated"][idx])
        for k in range(1, horizon):
            nxt, found = buffer.following_slots(slots[:, k - 1])  # (n,) each
            found &= alive
            slots[:, k] = np.where(found, nxt, slots[:, k - 1])  # padding repeats the last real step
            valid[:, k] = found
            alive = found & ~(buffer.fields["terminated"][nxt] | buffer.fields["truncated"][nxt])
        length = valid.sum(1)  # (n,)
        last = slots[np.arange(n), length - 1]  # (n,) slot of each chunk's last real step
        first_frames = buffer.obs_fid[idx] % buffer.frame_capacity
        next_frames = buffer.next_fid[last] % buffer.frame_capacity
        keys = list(buffer.frames) if obs_keys is None else list(obs_keys)
        missing = sorted(set(keys) - set(buffer.frames)) + sorted(set(step_keys) - set(buffer.frames))
        if missing:
            raise KeyError(f"{missing} are not stored in replay ({sorted(buffer.frames)})")
        step_frames = episode_id = first_step = None
        if step_keys:
            # frame 0 = obs of the first step, frame k = next_obs of step k-1 (= obs of step k while valid);
            # past the end this repeats the last real next_obs frame (the padding repeats the last slot)
            window = np.concatenate([buffer.obs_fid[idx][:, None], buffer.next_fid[slots]], 1)  # (n, H+1)
            step_frames = {k: buffer.frames[k][window % buffer.frame_capacity] for k in step_keys}
            episode_id = buffer.fields["episode_id"][idx].astype(np.int64)
            first_step = buffer.fields["step"][idx].astype(np.int64)
        return SequenceBatch(
            obs={k: buffer.frames[k][first_frames] for k in keys},
            action=buffer.fields["action"][slots],  # (n, H, A)
            reward=np.where(valid, buffer.fields["reward"][slots], 0.0).astype(np.float32),
            valid=valid,
            next_obs={k: buffer.frames[k][next_frames] for k in keys},
            terminated=buffer.fields["terminated"][last].copy(),
            length=length.astype(np.int64),
            step_frames=step_frames, episode_id=episode_id, step=first_step,
        )


def concat_sequences(parts: list[SequenceBatch]) -> SequenceBatch:
    first = parts[0]

    def cat(name: str) -> np.ndarray | None:
        return None if getattr(first, name) is None else np.concatenate([getattr(p, name) for p in parts])

    return SequenceBatch(
        {k: np.concatenate([p.obs[k] for p in parts]) for k in first.obs},
        np.concatenate([p.action for p in parts]), np.concatenate([p.reward for p in parts]),
        np.concatenate([p.valid for p in parts]),
        {k: np.concatenate([p.next_obs[k] for p in parts]) for k in first.next_obs},
        np.concatenate([p.terminated for p in parts]), np.concatenate([p.length for p in parts]),
        step_frames=None if first.step_frames is None else
        {k: np.concatenate([p.step_frames[k] for p in parts]) for k in first.step_frames},
        episode_id=cat("episode_id"), step=cat("step"))


def n_step_rows(seq: SequenceBatch, gamma: float) -> tuple[Batch, "torch.Tensor"]:
    """Torch sequences -> (one-step rows carrying the discounted n-step reward, bootstrap scale ``(N,)``), for
    n-step TD targets (``algo.n_step``).

    Row ``i`` keeps the first observation and action; its reward is ``sum_k gamma^k r_k`` over the valid steps and
    ``next_obs`` is the observation after the last valid step. The scale ``gamma^(L-1)`` multiplies
    ``(1 - terminated)``, so the usual ``gamma * not_done * V'`` becomes ``gamma^L (1 - terminated) V'``.
    Sequences carry no intervention flags or step ids (n-step SAC reads neither): those fields are zeros."""
    import torch

    n, horizon = seq.reward.shape
    powers = gamma ** torch.arange(horizon, device=seq.reward.device, dtype=torch.float32)  # (H,)
    reward = (seq.reward.float() * powers).sum(1)  # (N,); steps past the end carry reward 0
    bootstrap = gamma ** (seq.length.float() - 1.0)  # (N,)
    action = seq.action[:, 0]  # (N, A)
    zeros = torch.zeros(n, dtype=torch.int64, device=action.device)
    rows = Batch(obs=seq.obs, action=action, reward=reward, next_obs=seq.next_obs, terminated=seq.terminated,
                 truncated=zeros.bool(), intervened=zeros.bool(), policy_action=action, episode_id=zeros, step=zeros,
                 from_demo=seq.from_demo)
    return rows, bootstrap


class SequenceSampler:
    """Chunks drawn ``demo_ratio`` from the demo buffer (while it has data), the rest online; sampled inline."""

    def __init__(self, online: ReplayBuffer, demo: ReplayBuffer | None, batch_size: int, demo_ratio: float,
                 horizon: int, device: Any = "cpu", seed: int = 0) -> None:
        self.online, self.demo = online, demo
        self.batch_size, self.demo_ratio, self.horizon = int(batch_size), float(demo_ratio), int(horizon)
        self.device = device
        self.rng = np.random.default_rng(seed)

    def sample_numpy(self, step_keys: Sequence[str] = (), obs_keys: Sequence[str] | None = None) -> SequenceBatch:
        """A numpy batch (see :func:`sample_sequences` for ``step_keys`` and ``obs_keys``)."""
        demo = self.demo  # read once (the learner may swap the demo buffer)
        n_demo = 0
        if demo is not None and len(demo) > 0:
            n_demo = int(round(self.batch_size * self.demo_ratio)) if len(self.online) > 0 else self.batch_size
        parts = []
        if n_demo:
            parts.append(sample_sequences(demo, n_demo, self.horizon, self.rng, step_keys, obs_keys))
        if self.batch_size - n_demo:
            parts.append(sample_sequences(self.online, self.batch_size - n_demo, self.horizon, self.rng,
                                          step_keys, obs_keys))
        batch = parts[0] if len(parts) == 1 else concat_sequences(parts)
        batch.from_demo = np.arange(self.batch_size) < n_demo
        return batch

    def sample_demo_numpy(self, step_keys: Sequence[str] = (),
                          obs_keys: Sequence[str] | None = None) -> SequenceBatch:
        """A numpy batch of demo sequences only (the offline warm start, ``algo.offline_pretrain_updates``)."""
        if self.demo is None or len(self.demo) == 0:
            raise ValueError("sample_demo needs a non-empty demo buffer")
        batch = sample_sequences(self.demo, self.batch_size, self.horizon, self.rng, step_keys, obs_keys)
        batch.from_demo = np.ones(self.batch_size, bool)
        return batch

    def next(self) -> SequenceBatch:
        return self.sample_numpy().to_torch(self.device)

    def sample_demo(self) -> SequenceBatch:
        return self.sample_demo_numpy().to_torch(self.device)

    def close(self) -> None:
        """Nothing to stop (no prefetch thread); same interface as MixedSampler."""
