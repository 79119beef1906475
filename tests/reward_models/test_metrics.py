"""Metrics on hand-computed cases."""
import numpy as np
import pytest

from robot_rl.reward_models import metrics as M


def test_spearman_and_voc_hand_cases():
    assert M.voc(np.array([0.0, 0.1, 0.5, 0.9])) == pytest.approx(1.0)
    assert M.voc(np.array([0.9, 0.5, 0.1, 0.0])) == pytest.approx(-1.0)
    # ranks of [0.1, 0.3, 0.2, 0.4] are [1, 3, 2, 4] vs time ranks [1, 2, 3, 4]:
    # d = [0, 1, -1, 0], rho = 1 - 6 * 2 / (4 * 15) = 0.8
    assert M.voc(np.array([0.1, 0.3, 0.2, 0.4])) == pytest.approx(0.8)
    assert M.voc(np.full(5, 0.3)) == 0.0  # constant prediction carries no order information
    # ties: [1, 1, 2] has ranks [1.5, 1.5, 3]; against [1, 2, 3] Pearson of ranks = 0.866...
    assert M.spearman(np.array([1.0, 1.0, 2.0]), np.array([1.0, 2.0, 3.0])) == pytest.approx(np.sqrt(3) / 2)


def test_vroc_scores_falling_progress_on_the_reversed_clip_as_one():
    assert M.vroc(np.array([1.0, 0.7, 0.2, 0.0])) == pytest.approx(1.0)
    assert M.vroc(np.array([0.0, 0.2, 0.7, 1.0])) == pytest.approx(-1.0)


def test_order_accuracy_hand_case():
    target = np.array([0.0, 1.0, 2.0])
    # pairs (0,1), (0,2), (1,2): predictions order them right, right, wrong -> 2/3
    assert M.order_accuracy(np.array([0.0, 0.5, 0.4]), target) == pytest.approx(2 / 3)
    # a predicted tie counts half: (0,1) tie, (0,2) right, (1,2) right -> 2.5 / 3
    assert M.order_accuracy(np.array([0.2, 0.2, 0.9]), target) == pytest.approx(2.5 / 3)
    with pytest.raises(ValueError):
        M.order_accuracy(np.array([1.0, 2.0]), np.array([3.0, 3.0]))


def test_auroc_hand_cases():
    assert M.auroc(np.array([0.9, 0.8, 0.1, 0.2]), np.array([1, 1, 0, 0])) == 1.0
    assert M.auroc(np.array([0.1, 0.2, 0.9, 0.8]), np.array([1, 1, 0, 0])) == 0.0
    # positives {0.6, 0.4}, negatives {0.5, 0.4}: pairs 0.6>0.5, 0.6>0.4, 0.4<0.5, 0.4=0.4 (half) -> 2.5 / 4
    assert M.auroc(np.array([0.6, 0.4, 0.5, 0.4]), np.array([1, 1, 0, 0])) == pytest.approx(0.625)
    with pytest.raises(ValueError):
        M.auroc(np.array([0.1, 0.2]), np.array([1, 1]))


def test_precision_recall_hand_case():
    p, r = M.precision_recall(np.array([0.9, 0.6, 0.4, 0.1]), np.array([1, 0, 1, 0]), threshold=0.5)
    assert (p, r) == (0.5, 0.5)


def test_metrics_reject_nan_and_bad_shapes():
    with pytest.raises(ValueError, match="NaN"):
        M.voc(np.array([0.0, np.nan, 1.0]))
    with pytest.raises(ValueError, match="1-D"):
        M.voc(np.zeros((2, 2)))
    with pytest.raises(ValueError):
        M.auroc(np.array([0.1, 0.2]), np.array([1, 0, 1]))
