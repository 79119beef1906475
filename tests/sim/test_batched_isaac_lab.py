"""The Isaac Lab adapter's conversion, checked on a real gymnasium.vector env with Isaac Lab's step layout."""
from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.vector import AutoresetMode

from robot_rl.sim.batched import BatchedEnv
from robot_rl.sim.isaac_lab import GymVectorAdapter, isaac_lab_available

ISAAC_OK, ISAAC_WHY = isaac_lab_available()


def _pendulums(n: int) -> gym.vector.VectorEnv:
    return gym.make_vec("Pendulum-v1", num_envs=n, vectorization_mode="sync",
                        vector_kwargs={"autoreset_mode": AutoresetMode.SAME_STEP})


def test_adapter_converts_a_same_step_autoreset_vector_env() -> None:
    env = GymVectorAdapter(_pendulums(3), task="swing up", control_hz=20.0)
    reference = _pendulums(3)
    assert isinstance(env, BatchedEnv) and env.num_envs == 3
    assert env.obs_spec.fields["state"].shape == (3,) and env.action_spec.low == (-2.0,)
    obs = env.reset(seed=5)
    ref_obs, _ = reference.reset(seed=5)
    assert obs["state"].dtype == torch.float32 and obs["state"].shape == (3, 3)
    np.testing.assert_array_equal(obs["state"].numpy(), ref_obs)
    rng = np.random.default_rng(0)
    for t in range(200):  # Pendulum truncates at 200 steps: the last step auto-resets every env
        action = rng.uniform(-3, 3, (3, 1)).astype(np.float32)  # out of bounds on purpose: clipped to +-2
        step = env.step(torch.as_tensor(action))
        ref_obs, ref_reward, ref_term, ref_trunc, info = reference.step(np.clip(action, -2, 2))
        np.testing.assert_array_equal(step.obs["state"].numpy(), ref_obs)
        np.testing.assert_allclose(step.reward.numpy(), ref_reward.astype(np.float32))
        assert step.terminated.tolist() == ref_term.tolist() and step.truncated.tolist() == ref_trunc.tolist()
    assert step.truncated.all() and not step.success.any()
    final = np.stack(info["final_obs"])  # what the last action led to, before the reset
    np.testing.assert_array_equal(step.final_obs["state"].numpy(), final)
    assert not np.allclose(step.final_obs["state"].numpy(), step.obs["state"].numpy())
    with pytest.raises(ValueError, match="shaped"):
        env.step(torch.zeros(3, 2))
    env.close()


def test_adapter_reads_isaac_lab_dict_observations_and_success_terms() -> None:
    env = GymVectorAdapter(_pendulums(2), success_fn=lambda extras, terminated: extras["success"])
    # One step as Isaac Lab returns it: obs groups, torch tensors, a success term in extras, no final_obs.
    obs = {"policy": torch.tensor([[0.1, 0.2, 0.3], [0.4, 0.5, 0.6]]), "critic": torch.zeros(2, 9)}
    step = env.convert(obs, torch.tensor([1.0, 0.0]), torch.tensor([True, False]), torch.tensor([False, True]),
                       {"success": torch.tensor([True, False]), "log": {}})
    torch.testing.assert_close(step.obs["state"], obs["policy"])
    torch.testing.assert_close(step.final_obs["state"], obs["policy"])  # Isaac Lab has no pre-reset obs
    assert step.success.tolist() == [True, False] and step.done.tolist() == [True, True]
    with pytest.raises(FloatingPointError):
        env.convert(obs, torch.tensor([float("nan"), 0.0]), torch.zeros(2, dtype=torch.bool),
                    torch.zeros(2, dtype=torch.bool), {"success": torch.zeros(2, dtype=torch.bool)})
    with pytest.raises(ValueError, match="2 entries"):
        env.convert(obs, torch.zeros(3), torch.zeros(2, dtype=torch.bool), torch.zeros(2, dtype=torch.bool),
                    {"success": torch.zeros(2, dtype=torch.bool)})


@pytest.mark.skipif(not ISAAC_OK, reason="Isaac Lab cannot be installed here (needs Isaac Sim + an NVIDIA GPU "
                                         f"driver): {ISAAC_WHY}")
@pytest.mark.gpu
def test_isaac_lab_lift_cube_runs_behind_the_batched_interface() -> None:
    from robot_rl.sim.isaac_lab import make_isaac_lab_env

    env = make_isaac_lab_env("Isaac-Lift-Cube-Franka-v0", num_envs=16, action_bounds=([-1.0] * 8, [1.0] * 8))
    obs = env.reset(seed=0)
    step = env.step(torch.zeros(16, 8))
    assert obs["state"].shape[0] == 16 and step.reward.shape == (16,) and step.obs["state"].is_cuda
    env.close()
