"""Learned-reward labels for executed sequences (n-step TD targets, ``algo.n_step > 1``, and sequence critics).

A :class:`~robot_rl.sequence_replay.SequenceBatch` row is a window of up to H consecutive steps of one episode.
The n-step target needs the learned reward of *every* step of it, so the sampler also returns every frame of
the window in the reward model's views (``step_frames``, ``(N, H+1, ...)``; frame k is the state before step
k). Each real step ``k < length`` is then labelled exactly as a one-step batch would label that transition
(:meth:`RewardLabeller.shaped`: the same base reward, potential shaping, success-gated terminal, Phi cap and
scale schedule), with Phi and P(done) from the same per-frame cache (:meth:`RewardLabeller.frame_potentials`:
a frame shared by two overlapping windows is encoded once per model version). Only the window's last real step
can be terminated (the sampler stops a window at termination or truncation), and a truncated last step keeps
``Phi(s')``, as in the one-step path. The n-step return is then formed from these per-step rewards by
:func:`robot_rl.sequence_replay.n_step_rows`, unchanged: ``sum_k gamma^k r_k + gamma^L (1 - terminated) V'``.
"""
from __future__ import annotations

import time
from dataclasses import replace
from typing import TYPE_CHECKING, Sequence

import numpy as np

from robot_rl.sequence_replay import SequenceBatch, SequenceSampler

if TYPE_CHECKING:
    from robot_rl.reward_models.labeller import RewardLabeller


def sequence_rewards(labeller: "RewardLabeller", seq: SequenceBatch) -> np.ndarray:
    """float32 ``(N, H)`` learned rewards of every real step of a numpy sequence batch (0 past the end)."""
    if seq.step_frames is None or seq.episode_id is None or seq.step is None:
        raise ValueError("labelling sequences needs their frames: sample them with step_keys=<the reward "
                         "model's views> (SequenceSampler.sample_numpy)")
    n, horizon = seq.reward.shape
    views = list(labeller.model.encoder.views)
    missing = sorted(set(views) - set(seq.step_frames))
    if missing:
        raise ValueError(f"the reward model reads {missing}, the sequence batch carries frames of "
                         f"{sorted(seq.step_frames)}")
    length = np.asarray(seq.length, np.int64)  # (N,)
    valid = np.asarray(seq.valid, bool)  # (N, H), a prefix of each row
    if not np.array_equal(valid.sum(1), length) or not valid[:, 0].all():
        raise ValueError("SequenceBatch.valid must be a non-empty prefix of length `length` in every row")
    # frames 0 .. length of each row are real (the states before and after each real step): (N, H+1) mask
    real = np.arange(horizon + 1)[None, :] <= length[:, None]
    rows, cols = np.nonzero(real)  # (M,) each
    frames = {k: np.asarray(seq.step_frames[k])[rows, cols] for k in views}  # (M, ...)
    frame_step = np.asarray(seq.step, np.int64)[rows] + cols  # (M,) frame index within its episode
    phi_m, done_m = labeller.frame_potentials(frames, np.asarray(seq.episode_id, np.int64)[rows], frame_step)
    phi, done = np.zeros((n, horizon + 1)), np.zeros((n, horizon + 1))
    phi[rows, cols], done[rows, cols] = phi_m, done_m
    # per real step k: s = frame k, s' = frame k+1; only the last real step may carry the window's termination
    last = np.arange(horizon)[None, :] == (length - 1)[:, None]  # (N, H)
    terminated = last & np.asarray(seq.terminated, bool)[:, None]
    step_reward = labeller.shaped(np.asarray(seq.reward, np.float64)[valid], phi[:, :-1][valid], done[:, :-1][valid],
                                  phi[:, 1:][valid], done[:, 1:][valid], terminated[valid])
    out = np.zeros((n, horizon), np.float32)
    out[valid] = step_reward
    return out


def label_sequences(labeller: "RewardLabeller", seq: SequenceBatch, keep_keys: Sequence[str] = ()) -> SequenceBatch:
    """A copy of ``seq`` with the learned per-step rewards, without its ``step_frames`` (they were only needed
    for labelling) and, with ``keep_keys``, with ``obs``/``next_obs`` narrowed to those keys."""
    t0 = time.perf_counter()
    labeller.before_labelling({k: np.asarray(v)[:, 0] for k, v in seq.step_frames.items()}
                              if seq.step_frames is not None else seq.obs)
    reward = sequence_rewards(labeller, seq)
    labeller.count_labelled(int(np.asarray(seq.length).sum()), time.perf_counter() - t0)
    keep = list(keep_keys) or list(seq.obs)
    return replace(seq, reward=reward, step_frames=None, obs={k: seq.obs[k] for k in keep},
                   next_obs={k: seq.next_obs[k] for k in keep})


class LabelledSequenceSampler:
    """A :class:`SequenceSampler` whose windows are labelled step by step by a :class:`RewardLabeller`, inline
    (the sequence sampler has no prefetch thread; with a warm frame cache a batch costs hashing its frames).

    ``keep_keys``: the observation keys the algorithm reads (empty = all); ``obs``/``next_obs`` are sampled
    with those keys only, and the reward model's views come in ``step_frames``, dropped after labelling."""

    def __init__(self, inner: SequenceSampler, labeller: "RewardLabeller", keep_keys: Sequence[str] = ()) -> None:
        self.inner, self.labeller = inner, labeller
        self.keep_keys = tuple(keep_keys)
        stored = set(inner.online.obs_spec.fields)
        missing = sorted(set(self.keep_keys) - stored)
        if missing:
            raise ValueError(f"keep_keys {missing} are not stored in replay ({sorted(stored)})")
        self.views = tuple(labeller.model.encoder.views)
        missing = sorted(set(self.views) - stored)
        if missing:
            raise ValueError(f"the reward model reads {missing}, which replay does not store ({sorted(stored)})")

    @property
    def horizon(self) -> int:
        return self.inner.horizon

    def _obs_keys(self) -> list[str] | None:
        return list(self.keep_keys) or None

    def next(self) -> SequenceBatch:
        seq = self.inner.sample_numpy(step_keys=self.views, obs_keys=self._obs_keys())
        return label_sequences(self.labeller, seq, self.keep_keys).to_torch(self.inner.device)

    def sample_demo(self) -> SequenceBatch:
        # Offline pre-training must train on the same (learned) reward as the online phase that follows it.
        seq = self.inner.sample_demo_numpy(step_keys=self.views, obs_keys=self._obs_keys())
        return label_sequences(self.labeller, seq, self.keep_keys).to_torch(self.inner.device)

    def close(self) -> None:
        self.inner.close()
