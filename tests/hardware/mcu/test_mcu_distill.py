"""Distillation: DAgger (and the BC baseline) shrink the student's error to its teacher on its own states."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from robot_rl.hardware.mcu.distill import DistillConfig, distill, on_policy_error, student_fn
from robot_rl.hardware.mcu.student import StudentConfig, StudentMLP, as_teacher
from robot_rl.sim.point_reach import PointReach, PointReachConfig


def test_dagger_reduces_on_policy_error(distilled):
    env = distilled.env
    teacher = env.expert()
    untrained = StudentMLP(6, 2, StudentConfig(hidden=[64, 64]))
    before = on_policy_error(env, teacher, student_fn(untrained), episodes=10, seed=90_000)
    after = on_policy_error(env, teacher, student_fn(distilled.result.student), episodes=10, seed=90_000)
    assert after["mse"] < 0.05 * before["mse"], (before, after)
    assert after["success"] >= 0.9 and before["success"] < 0.5
    hist = distilled.result.history
    assert [h["beta"] for h in hist] == [1.0, 0.5, 0.25]  # teacher first, then mixtures
    assert hist[-1]["samples"] > hist[0]["samples"]  # the aggregate grows with student-visited states


def test_dagger_labels_student_states_bc_does_not():
    """With the same label budget, DAgger's data covers where the student goes; BC's only where the teacher goes."""
    env = PointReach(PointReachConfig())
    small = dict(rounds=3, episodes_per_round=10, steps_per_round=300, student=StudentConfig(hidden=[32, 32]))
    dag = distill(env, env.expert(), DistillConfig(method="dagger", **small))
    bc = distill(env, env.expert(), DistillConfig(method="bc", **small))
    assert [h["beta"] for h in bc.history] == [1.0, 1.0, 1.0]
    # BC executes the teacher everywhere, so executed == labels; DAgger executes the student in later rounds
    assert np.allclose(bc.data.executed, bc.data.labels)
    assert not np.allclose(dag.data.executed, dag.data.labels)
    for res in (dag, bc):
        err = on_policy_error(env, env.expert(), student_fn(res.student), episodes=10, seed=91_000)
        assert err["success"] >= 0.8, err


def test_teacher_can_be_a_learned_policy():
    """A Gaussian policy (the [policies] kind of teacher) is queried deterministically."""
    from robot_rl.policies.gaussian import GaussianPolicy, GaussianPolicyConfig

    env = PointReach(PointReachConfig())
    torch.manual_seed(0)
    policy = GaussianPolicy(GaussianPolicyConfig(hidden_dims=[32]), env.obs_spec, env.action_spec)
    teacher = as_teacher(policy)
    obs = env.reset(seed=0)
    assert np.array_equal(teacher.act(obs), teacher.act(obs))  # deterministic
    res = distill(env, teacher, DistillConfig(rounds=2, episodes_per_round=3, steps_per_round=400,
                                              student=StudentConfig(hidden=[32, 32])))
    err = on_policy_error(env, teacher, student_fn(res.student), episodes=3, seed=5)
    assert err["mean_abs"] < 0.05, err
    with pytest.raises(TypeError):
        as_teacher(object())
