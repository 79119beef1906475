"""The Gymnasium adapter on third-party envs: Box and Dict observations, action rescaling, success, limits.

Third-party code under test: gymnasium's own ``Pendulum-v1`` (Box obs), ``InvertedPendulum-v5`` (MuJoCo)
rendered with gymnasium's ``AddRenderObservation`` wrapper into a Dict ``{"state", "pixels"}`` observation
(or a plain image Box), plus a small env registered here through ``gymnasium.register`` for key ordering
and ``info["is_success"]``.
"""
from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

from robot_rl.registry import ENVS
from robot_rl.sim.gym_adapter import GymAdapter, GymEnvConfig

RENDERED_INVERTED_PENDULUM = dict(
    env_id="InvertedPendulum-v5",
    kwargs={"render_mode": "rgb_array", "width": 64, "height": 64},
    wrappers=("gymnasium.wrappers:AddRenderObservation",),
    wrapper_kwargs={"gymnasium.wrappers:AddRenderObservation": {"render_only": False}},
)


class _TwoSensorReach(gym.Env):
    """A Dict-observation env with keys out of sorted order and an ``is_success`` info flag."""

    metadata = {"render_fps": 20}

    def __init__(self) -> None:
        self.observation_space = gym.spaces.Dict({
            "z_goal": gym.spaces.Box(-1, 1, (2,), np.float64),
            "a_position": gym.spaces.Box(-1, 1, (2,), np.float64),
            "top": gym.spaces.Box(0, 255, (8, 8, 3), np.uint8),
            "debug": gym.spaces.Box(0, 1, (1,), np.float32),
        })
        self.action_space = gym.spaces.Box(np.array([-0.1, 0.0]), np.array([0.1, 0.2]), dtype=np.float32)
        self.last_action = np.zeros(2)

    def _obs(self) -> dict:
        image = np.zeros((8, 8, 3), np.uint8)
        image[..., 1] = 200
        return {"z_goal": self.goal, "a_position": self.position, "top": image, "debug": np.zeros(1, np.float32)}

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.position = self.np_random.uniform(-0.5, 0.5, 2)
        self.goal = self.position + 0.2
        return self._obs(), {}

    def step(self, action):
        self.last_action = np.array(action, np.float64)
        self.position = self.position + action
        success = bool(np.linalg.norm(self.goal - self.position) < 0.05)
        return self._obs(), float(success), success, False, {"is_success": success}


gym.register(id="RobotRlTestTwoSensorReach-v0", entry_point=_TwoSensorReach, max_episode_steps=30)


def test_registered_as_gym_env() -> None:
    env = ENVS.make("gym", GymEnvConfig(env_id="Pendulum-v1"), seed=0)
    assert isinstance(env, GymAdapter) and env.max_episode_steps == 200 and "Pendulum" in env.task


def test_box_observation_and_action_rescaling_match_the_raw_env() -> None:
    env = GymAdapter(GymEnvConfig(env_id="Pendulum-v1", seed=3))
    raw = gym.make("Pendulum-v1")
    assert env.obs_spec.keys() == ["state"] and env.obs_spec.fields["state"].shape == (3,)
    assert env.action_spec.low == (-1.0,) and env.action_spec.high == (1.0,)  # Pendulum's torque is [-2, 2]
    obs = env.reset()
    raw_obs, _ = raw.reset(seed=3)
    np.testing.assert_allclose(obs["state"], raw_obs.astype(np.float32))
    for policy_action, torque in ((1.0, 2.0), (-0.5, -1.0), (0.25, 0.5)):
        result = env.step(np.array([policy_action], np.float32))
        raw_obs, raw_reward, *_ = raw.step(np.array([torque], np.float32))
        env.obs_spec.check(result.obs)
        np.testing.assert_allclose(result.obs["state"], raw_obs.astype(np.float32), rtol=1e-6)
        assert result.reward == pytest.approx(raw_reward) and result.success is False


def test_keeping_the_envs_own_action_bounds() -> None:
    env = GymAdapter(GymEnvConfig(env_id="Pendulum-v1", rescale_actions=False))
    assert env.action_spec.low == (-2.0,) and env.action_spec.high == (2.0,)


def test_dict_observation_with_image_and_vector_from_a_third_party_wrapper() -> None:
    cfg = GymEnvConfig(**RENDERED_INVERTED_PENDULUM, key_map={"pixels": "front"}, seed=0)
    env = GymAdapter(cfg)
    assert env.obs_spec.keys() == ["images/front", "state"]
    assert env.obs_spec.fields["images/front"].shape == (64, 64, 3)
    assert env.obs_spec.fields["state"].shape == (4,)
    raw = gym.wrappers.AddRenderObservation(gym.make("InvertedPendulum-v5", render_mode="rgb_array", width=64,
                                                     height=64), render_only=False)
    obs = env.reset()
    raw_obs, _ = raw.reset(seed=0)
    env.obs_spec.check(obs)
    np.testing.assert_allclose(obs["state"], raw_obs["state"].astype(np.float32))
    # Same scene from gymnasium's own renderer (a second GL context may differ by a few edge pixels).
    assert np.abs(obs["images/front"].astype(int) - raw_obs["pixels"]).mean() < 1.0
    assert obs["images/front"].std() > 5  # the pole and rail are drawn, not a blank frame
    result = env.step(np.array([0.5], np.float32))
    raw_obs, *_ = raw.step(np.array([1.5], np.float32))  # InvertedPendulum's force range is [-3, 3]
    np.testing.assert_allclose(result.obs["state"], raw_obs["state"].astype(np.float32), rtol=1e-6)
    assert env.render("front").shape == (64, 64, 3) and env.render("front", 32).shape == (32, 32, 3)
    env.close()


def test_image_only_box_observation() -> None:
    cfg = GymEnvConfig(**{**RENDERED_INVERTED_PENDULUM, "wrapper_kwargs": {}}, image_key="side")
    env = GymAdapter(cfg)
    assert env.obs_spec.keys() == ["images/side"]
    obs = env.reset()
    env.obs_spec.check(obs)
    env.close()


def test_dict_vectors_concatenate_in_sorted_order_and_success_from_info() -> None:
    env = GymAdapter(GymEnvConfig(env_id="RobotRlTestTwoSensorReach-v0", key_map={"debug": ""}, seed=5))
    assert env.obs_spec.keys() == ["images/top", "state"] and env.obs_spec.fields["state"].shape == (4,)
    assert env.control_hz == 20 and env.max_episode_steps == 30
    obs = env.reset()
    inner = env.env.unwrapped
    np.testing.assert_allclose(obs["state"], np.concatenate([inner.position, inner.goal]).astype(np.float32))
    assert (obs["images/top"][..., 1] == 200).all()
    first = env.step(np.array([1.0, 0.5], np.float32))  # rescaled onto [-0.1, 0.1] x [0, 0.2]
    np.testing.assert_allclose(inner.last_action, [0.1, 0.15], rtol=1e-6)
    assert not first.success
    result = env.step(np.array([1.0, -0.5], np.float32))  # (+0.1, +0.05) more lands on the goal
    assert result.success and result.terminated and result.reward == 1.0


def test_truncation_limits_and_bad_actions() -> None:
    env = GymAdapter(GymEnvConfig(env_id="Pendulum-v1", max_episode_steps=3))
    assert env.max_episode_steps == 3
    env.reset(seed=0)
    results = [env.step(np.zeros(1, np.float32)) for _ in range(3)]
    assert [r.truncated for r in results] == [False, False, True]
    for bad in (np.array([np.nan]), np.array([np.inf]), np.zeros(2)):
        with pytest.raises(ValueError):
            env.step(bad.astype(np.float32))


def test_unsupported_spaces_are_rejected() -> None:
    with pytest.raises(ValueError, match="continuous Box"):
        GymAdapter(GymEnvConfig(env_id="CartPole-v1"))
