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


# ---------------------------------------------------------------- nested Dict, success, render, names, expert
import lab_reach_env  # noqa: E402  (registers LabReach-v0: the README's third-party-style env)

LAB = dict(env_id="LabReach-v0", success_key="succeed", action_names=("dx", "dy", "dz", "grip"))


class _Layouts(gym.Env):
    """Every leaf kind the flattening rule handles, nested: channels-first, grey and RGBA images, Discrete."""

    def __init__(self) -> None:
        self.observation_space = gym.spaces.Dict({
            "cams": gym.spaces.Dict({"chw": gym.spaces.Box(0, 255, (3, 6, 5), np.uint8),
                                     "grey": gym.spaces.Box(0, 255, (6, 5, 1), np.uint8),
                                     "rgba": gym.spaces.Box(0, 255, (6, 5, 4), np.uint8)}),
            "mode": gym.spaces.Discrete(3, start=1),
            "flags": gym.spaces.MultiBinary(2),
            "joints": gym.spaces.Dict({"q": gym.spaces.Box(-1, 1, (2, 2), np.float32)}),
        })
        self.action_space = gym.spaces.Box(-1, 1, (1,), np.float32)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        cams = {"chw": np.arange(90, dtype=np.uint8).reshape(3, 6, 5),
                "grey": np.full((6, 5, 1), 7, np.uint8), "rgba": np.full((6, 5, 4), 9, np.uint8)}
        return {"cams": cams, "mode": 2, "flags": np.array([1, 0], np.int8),
                "joints": {"q": np.array([[0.1, 0.2], [0.3, 0.4]], np.float32)}}, {}

    def step(self, action):
        return self.reset()[0], 0.0, False, False, {}


gym.register(id="RobotRlTestLayouts-v0", entry_point=_Layouts, max_episode_steps=5)


def test_nested_dict_flattening_rule_and_kwargs() -> None:
    env = GymAdapter(GymEnvConfig(**LAB, kwargs={"pixels": True, "image_size": 16, "start_spread": 0.01}, seed=1))
    assert env.obs_spec.keys() == ["images/front", "images/wrist", "state"]  # cameras keep their own key
    assert env.state_layout == [("robot/gripper", 0, 1), ("robot/pos", 1, 4), ("target", 4, 7)]
    obs = env.reset()
    env.obs_spec.check(obs)
    inner = env.env.unwrapped
    assert inner.start_spread == 0.01 and inner.size == 16  # kwargs reached the constructor
    np.testing.assert_allclose(obs["state"], np.r_[0.0, inner.pos, inner.goal].astype(np.float32))
    np.testing.assert_array_equal(obs["images/wrist"], inner._frame("wrist"))
    renamed = GymAdapter(GymEnvConfig(**LAB, kwargs={"pixels": True, "image_size": 16},
                                      key_map={"pixels/wrist": "hand", "robot": ""}))
    assert renamed.obs_spec.keys() == ["images/front", "images/hand", "state"]
    assert renamed.state_layout == [("target", 0, 3)]  # the whole robot/ subtree dropped


def test_image_layouts_discrete_and_multibinary_leaves() -> None:
    env = GymAdapter(GymEnvConfig(env_id="RobotRlTestLayouts-v0"))
    assert env.obs_spec.keys() == ["images/chw", "images/grey", "images/rgba", "state"]
    assert env.state_layout == [("flags", 0, 2), ("joints/q", 2, 6), ("mode", 6, 9)]
    obs = env.reset()
    env.obs_spec.check(obs)
    raw = env.last_raw_obs["cams"]
    np.testing.assert_array_equal(obs["images/chw"], raw["chw"].transpose(1, 2, 0))
    assert (obs["images/grey"] == 7).all() and (obs["images/rgba"] == 9).all()
    np.testing.assert_allclose(obs["state"], [1, 0, 0.1, 0.2, 0.3, 0.4, 0, 1, 0])  # Discrete(3, start=1) = 2


def test_flattening_errors_name_the_path() -> None:
    with pytest.raises(ValueError, match="not observation paths.*robot/pos"):
        GymAdapter(GymEnvConfig(**LAB, key_map={"robot/typo": ""}))
    with pytest.raises(ValueError, match="not an image"):
        GymAdapter(GymEnvConfig(**LAB, key_map={"robot/pos": "cam"}))
    with pytest.raises(ValueError, match="pixels/front.*pixels/wrist.*images/front"):
        GymAdapter(GymEnvConfig(**LAB, kwargs={"pixels": True}, key_map={"pixels/wrist": "front"}))
    with pytest.raises(ValueError, match="action_names has 2 names"):
        GymAdapter(GymEnvConfig(env_id="LabReach-v0", action_names=("dx", "grip")))


def _drive_to_goal(env: GymAdapter) -> list:
    env.reset()
    results = [env.step(np.array([1.0, 0, 0, -1.0], np.float32)) for _ in range(12)]
    return results + [env.step(np.array([0, 0, 0, 1.0], np.float32))]


def test_custom_success_key_and_success_function() -> None:
    results = _drive_to_goal(GymAdapter(GymEnvConfig(**LAB, kwargs={"start_spread": 0.0})))
    assert [r.success for r in results] == [False] * 12 + [True] and results[-1].terminated
    # The default keys (is_success/success) never see this env's info["succeed"].
    default = _drive_to_goal(GymAdapter(GymEnvConfig(env_id="LabReach-v0", kwargs={"start_spread": 0.0})))
    assert not any(r.success for r in default) and default[-1].terminated
    # A success function decides from the env itself: here "x beyond 0.5", true long before the env's own.
    hooked = _drive_to_goal(GymAdapter(GymEnvConfig(env_id="LabReach-v0", kwargs={"start_spread": 0.0},
                                                    success_fn=f"{__name__}:beyond_half")))
    assert [r.success for r in hooked][:7] == [False] * 5 + [True] * 2


def beyond_half(env, obs, reward, terminated, info) -> bool:
    assert isinstance(info, dict) and isinstance(reward, float) and isinstance(terminated, bool)
    return bool(obs["robot"]["pos"][0] > 0.5 and env.unwrapped.pos[0] > 0.5)


def test_missing_success_key_is_warned_about(caplog) -> None:
    env = GymAdapter(GymEnvConfig(env_id="LabReach-v0", success_key="sucess"))
    env.reset()
    with caplog.at_level("WARNING", logger="robot_rl.sim.gym"):
        env.step(np.zeros(4, np.float32))
        env.step(np.zeros(4, np.float32))
    warnings = [r for r in caplog.records if "sucess" in r.getMessage()]
    assert len(warnings) == 1 and "succeed" in warnings[0].getMessage()  # once, listing the real keys


def test_per_camera_render_selection() -> None:
    cfg = dict(**LAB, kwargs={"render_mode": "rgb_array", "image_size": 16}, render_cameras=("front", "wrist"))
    env = GymAdapter(GymEnvConfig(**cfg))
    env.reset()
    env.step(np.array([0.5, 0.5, 0, 1], np.float32))
    inner = env.env.unwrapped
    np.testing.assert_array_equal(env.render("wrist"), inner._frame("wrist"))
    np.testing.assert_array_equal(env.render("front"), inner._frame("front"))
    np.testing.assert_array_equal(env.render("side"), inner._frame("front"))  # unknown camera: the first
    assert env.render("front", size=8).shape == (8, 8, 3)
    chosen = GymAdapter(GymEnvConfig(**{**cfg, "render_camera": "wrist"}))
    chosen.reset()
    np.testing.assert_array_equal(chosen.render("front"), chosen.env.unwrapped._frame("front"))
    np.testing.assert_array_equal(chosen.render("side"), chosen.env.unwrapped._frame("wrist"))
    with pytest.raises(ValueError, match="2 frames but env.render_cameras names 1"):
        bad = GymAdapter(GymEnvConfig(**{**cfg, "render_cameras": ("front",)}))
        bad.reset()
        bad.render("front")


def test_no_render_mode_raises_render_unavailable() -> None:
    from robot_rl.sim.gym_adapter import RenderUnavailable

    env = GymAdapter(GymEnvConfig(env_id="Pendulum-v1"))
    env.reset()
    with pytest.raises(RenderUnavailable, match="render_mode=rgb_array"):
        env.render("front")


def test_action_names_let_the_discrete_gripper_policy_and_teleop_find_the_gripper() -> None:
    from robot_rl.config import load_config
    from robot_rl.hardware.teleop.operator import grip_index
    from robot_rl.registry import POLICIES

    env = GymAdapter(GymEnvConfig(**LAB))
    assert env.action_spec.names == ("dx", "dy", "dz", "grip") and grip_index(env.action_spec) == 3
    cfg = load_config(["env=gym", "policy.discrete_gripper=true"])
    policy = POLICIES.make(cfg.policy.name, cfg.policy, env.obs_spec, env.action_spec)
    assert policy.continuous_dim == 3
    action = policy.act(env.reset(), deterministic=True)
    assert action.shape == (4,) and action[3] in tuple(cfg.policy.gripper_commands)
    unnamed = GymAdapter(GymEnvConfig(env_id="LabReach-v0"))
    with pytest.raises(ValueError, match="grip"):
        POLICIES.make(cfg.policy.name, cfg.policy, unnamed.obs_spec, unnamed.action_spec)


def test_scripted_expert_hook_records_demos(tmp_path) -> None:
    from robot_rl.config import load_config
    from robot_rl.demos import generate_demos
    from robot_rl.episode_store import EpisodeStore

    assert not hasattr(GymAdapter(GymEnvConfig(**LAB)), "expert")  # only a configured expert is one
    cfg = load_config(["env=gym", "env.module=lab_reach_env", "env.env_id=LabReach-v0", "env.success_key=succeed",
                       "env.expert=lab_reach_env:ReachExpert", "+env.kwargs.start_spread=0.3"])
    stats = generate_demos(cfg, 3, tmp_path / "demos")
    assert stats["episodes"] == 3 and stats["successes"] == 3
    for episode in EpisodeStore(tmp_path / "demos").episodes():
        assert episode.success and episode.action[-1, 3] == 1.0 and np.abs(episode.action).max() <= 1.0
    with pytest.raises(ValueError, match="has no 'Nope'"):
        GymAdapter(GymEnvConfig(**LAB, expert="lab_reach_env:Nope"))


def test_expert_actions_in_env_units_are_mapped_to_the_policy_space() -> None:
    env = GymAdapter(GymEnvConfig(env_id="RobotRlTestTwoSensorReach-v0"))  # bounds [-0.1, 0.1] x [0, 0.2]
    np.testing.assert_allclose(env.to_policy_action([0.1, 0.05]), [1.0, -0.5])
    np.testing.assert_allclose(env.to_policy_action([0.5, -1.0]), [1.0, -1.0])  # clipped into the bounds
