"""Progress labels, pair labels and the negatives a pair batch carries."""
import numpy as np
import pytest

from robot_rl.reward_models.data import PairSampler, apply_pair_label, pair_labels, progress_labels


def test_linear_labels_give_fraction_of_remaining_work():
    p = progress_labels(10)
    assert p[0] == 0.0 and p[-1] == 1.0
    lab = pair_labels(p)
    for i, j in [(0, 4), (3, 7), (6, 10), (2, 3)]:
        assert lab[i, j] == pytest.approx((j - i) / (10 - i))  # (j - i) / (T - i)
        assert lab[j, i] == pytest.approx(-(j - i) / (10 - i))  # reversed / rewound: minus the forward label
    assert np.all(np.diag(lab) == 0.0)  # static pairs
    for i in range(10):  # the label of a -> b recovers p_b from p_a, forwards and backwards
        for j in range(11):  # (from the goal frame every step back is labelled -1: p_b is not recoverable)
            assert apply_pair_label(p[i], lab[i, j]) == pytest.approx(p[j], abs=1e-9)


def test_stepwise_labels_give_each_subtask_an_equal_share():
    # keyframes 0, 2, 10 (T = 10): first sub-task takes 2 steps, second 8; each is worth 0.5
    p = progress_labels(10, keyframes=[2])
    np.testing.assert_allclose(p[[0, 1, 2, 6, 10]], [0.0, 0.25, 0.5, 0.75, 1.0])
    assert np.all(np.diff(p) > 0)
    with pytest.raises(ValueError):
        progress_labels(10, keyframes=[12])


def test_pair_batch_labels_and_negatives(state_train_episodes):
    rng_emb = np.random.default_rng(0)
    task = state_train_episodes[0].task
    sampler = PairSampler(state_train_episodes, ["state"], {task: rng_emb.normal(size=384).astype(np.float32)},
                          rng_emb.normal(size=(2, 384)).astype(np.float32), frames_per_episode=5,
                          mismatch_prob=0.3, failure_prob=0.3, seed=0)
    b = sampler.sample(64)
    assert b.frames["state"].shape == (64, 5, 28) and b.delta.shape == (64, 5, 5)
    mismatched = ~np.isclose(b.text, sampler.task_embedding[task]).all(1)
    assert mismatched.any() and (~mismatched).any()
    assert (b.phi[mismatched] == 0).all() and (b.delta[mismatched] == 0).all() and (b.done[mismatched] == 0).all()
    assert (b.phi_mask[mismatched] == 1).all()  # "no progress" is a label, not a gap
    labelled = (~mismatched) & (b.done.sum(1) == 1)  # successes under their own text
    assert labelled.any()
    for g in np.flatnonzero(labelled):
        np.testing.assert_allclose(b.delta[g], -b.delta[g].T, atol=1e-6)
        assert b.phi[g, 0] == 0.0 and b.phi[g, -1] == 1.0 and b.done[g, -1] == 1.0
    # perturbed-expert failures: progress unknown (masked) and never done
    unknown = b.phi_mask.sum(1) == 0
    assert unknown.any() and (b.done[unknown] == 0).all()


def test_sampler_rejects_missing_views(state_train_episodes):
    with pytest.raises(ValueError, match="lacks views"):
        PairSampler(state_train_episodes, ["images/front"], {}, np.zeros((1, 384), np.float32))
