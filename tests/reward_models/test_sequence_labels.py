"""Learned rewards on executed sequences (n-step TD): every step of a window labelled as a one-step batch would
label it, and the n-step return formed from those per-step rewards with the sparse path's episode-end handling."""
from dataclasses import replace

import numpy as np
import pytest

from robot_rl.config import load_config
from robot_rl.learner import Learner
from robot_rl.registry import env_specs
from robot_rl.replay import ReplayBuffer
from robot_rl.reward_models.labeller import RewardLabeller
from robot_rl.reward_models.sequence_labels import LabelledSequenceSampler, label_sequences, sequence_rewards
from robot_rl.sequence_replay import SequenceBatch, n_step_rows, sample_sequences
from test_labeller import _cfg

GAMMA = 0.97
H = 3


def _labeller(model, task):
    # every remedy that changes a per-step reward: gated success terminal and the Phi cap
    rc = replace(load_config(["reward=prm"]).reward, task=task, success_terminal_potential=True, phi_cap=0.9)
    return RewardLabeller(model, rc, gamma=GAMMA)


def _episodes(state_train_episodes):
    success = next(e for e in state_train_episodes if e.success)
    failure = next(e for e in state_train_episodes if not e.success)
    assert success.terminated[-1] and not failure.terminated.any() and failure.truncated[-1]
    return {7: replace(success, episode_id=7), 9: replace(failure, episode_id=9)}


def _hand_window(episode, start: int) -> SequenceBatch:
    """One row of H steps of ``episode`` from ``start``, cut at the episode's end, as the sampler builds it."""
    t = len(episode.reward)
    length = min(H, t - start)
    frames = np.minimum(np.arange(start, start + H + 1), start + length)  # past the end: repeat the last frame
    steps = np.minimum(np.arange(start, start + H), start + length - 1)
    return SequenceBatch(
        obs={k: v[start][None] for k, v in episode.frames.items()},
        action=episode.action[steps][None], reward=np.where(np.arange(H) < length, episode.reward[steps], 0)[None],
        valid=(np.arange(H) < length)[None], next_obs={k: v[start + length][None] for k, v in episode.frames.items()},
        terminated=np.array([bool(episode.terminated[start + length - 1])]), length=np.array([length]),
        step_frames={k: v[frames][None] for k, v in episode.frames.items()},
        episode_id=np.array([episode.episode_id]), step=np.array([start]))


def _discounted(r: np.ndarray) -> float:
    return float((GAMMA ** np.arange(len(r)) * r).sum())


def test_n_step_learned_return_is_the_discounted_sum_of_one_step_learned_rewards(trained_state_model,
                                                                               state_train_episodes):
    episodes = _episodes(state_train_episodes)
    task = episodes[7].task
    one_step = _labeller(trained_state_model, task)  # its own frame cache: an independent computation
    expected = {i: one_step.rewards(e.to_batch()) for i, e in episodes.items()}  # (T,) one-step learned rewards
    success = episodes[7]
    t = len(success.reward)

    # hand-built windows: one crossing the success terminal (2 real steps, no bootstrap), one in the middle
    seq_labeller = _labeller(trained_state_model, task)
    for start, length in ((t - 2, 2), (3, H)):
        window = _hand_window(success, start)
        per_step = sequence_rewards(seq_labeller, window)  # (1, H)
        np.testing.assert_allclose(per_step[0, :length], expected[7][start:start + length], atol=1e-6)
        assert (per_step[0, length:] == 0).all()
        rows, bootstrap = n_step_rows(label_sequences(seq_labeller, window).to_torch(), GAMMA)
        assert float(rows.reward[0]) == pytest.approx(_discounted(expected[7][start:start + length]), abs=1e-5)
        assert bool(rows.terminated[0]) == (start + length == t)  # the terminal window bootstraps nothing
        assert float(bootstrap[0]) == pytest.approx(GAMMA ** (length - 1))
    # the success step keeps its gated terminal reward inside the window: 1 + gamma * 1 - Phi(s_{T-1})
    assert expected[7][-1] > 1.0

    # sampled windows over a buffer of both episodes: every start, the terminal and the truncation included
    buffer = ReplayBuffer(*env_specs(load_config(["env.max_episode_steps=40"])), 1000)
    for e in episodes.values():
        buffer.add_batch(e.to_batch())
    views = list(trained_state_model.encoder.views)
    seq = sample_sequences(buffer, 600, H, np.random.default_rng(0), step_keys=views)
    for k in views:  # the window's frames: the first is obs, frame `length` is next_obs, later ones repeat it
        np.testing.assert_array_equal(seq.step_frames[k][:, 0], seq.obs[k])
        np.testing.assert_array_equal(seq.step_frames[k][np.arange(len(seq)), seq.length], seq.next_obs[k])
    labelled = label_sequences(_labeller(trained_state_model, task), seq)
    assert labelled.step_frames is None
    rows, bootstrap = n_step_rows(labelled.to_torch(), GAMMA)
    seen = set()
    for i in range(len(seq)):
        ep, start, length = int(seq.episode_id[i]), int(seq.step[i]), int(seq.length[i])
        steps = len(episodes[ep].reward)
        assert length == min(H, steps - start)  # windows stop at the episode's end
        assert bool(seq.terminated[i]) == (ep == 7 and start + length == steps)
        assert float(rows.reward[i]) == pytest.approx(_discounted(expected[ep][start:start + length]), abs=1e-5)
        seen.add((ep, start))
    assert {(7, t - 1), (7, t - 2), (9, len(episodes[9].reward) - 1)} <= seen  # windows crossing both ends


def test_learner_trains_n_step_targets_on_learned_rewards(tmp_path, demo_dir, state_checkpoint):
    cfg = _cfg(tmp_path, "reward=prm", f"reward.checkpoint={state_checkpoint}", f"learner.demos={demo_dir}",
               "algo.n_step=3", "algo.gamma=0.97", "reward.success_terminal_potential=true")
    learner = Learner(cfg)
    try:
        assert isinstance(learner.sampler, LabelledSequenceSampler) and learner.sampler.horizon == 3
        for batch in (learner.sampler.next(), learner.sampler.sample_demo()):  # online phase and warm start
            assert isinstance(batch, SequenceBatch) and batch.step_frames is None
            reward, valid = batch.reward.numpy(), batch.valid.numpy()
            # demos record 0 before the success step; the learned reward shapes every real step
            assert (np.abs(reward[valid]) > 1e-4).mean() > 0.9 and (reward[~valid] == 0).all()
            metrics = learner.algo.update(batch)
            assert np.isfinite(metrics["critic_loss"])
        assert learner.reward_labeller.stats()["reward/labelled"] >= 2 * 32
    finally:
        learner.sampler.close()
