"""Every randomization knob changes the model or the data, is reproducible for a seed and off by default."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from robot_rl.sim.panda_config import PandaPickCubeConfig, PandaPickPlaceCubeConfig, RandomizationConfig

mujoco = pytest.importorskip("mujoco")

from robot_rl.sim.panda_pick_cube import PandaPickCube, PandaPickPlaceCube  # noqa: E402
from robot_rl.sim.randomization import ActionDelay  # noqa: E402

KNOB_VALUES = {
    "object_xy_range": 0.05, "object_yaw_range": 0.3, "friction_range": 0.3, "mass_range": 0.5,
    "camera_pos_range": 0.03, "camera_fovy_range": 5.0, "light_range": 0.3, "colour_range": 0.15,
    "action_delay_steps": 2, "state_noise_std": 0.01,
}


def _model_snapshot(env: PandaPickCube) -> dict[str, np.ndarray]:
    m = env.model
    return {"geom_friction": m.geom_friction.copy(), "body_mass": m.body_mass.copy(),
            "body_inertia": m.body_inertia.copy(), "cam_pos": m.cam_pos.copy(), "cam_fovy": m.cam_fovy.copy(),
            "light_diffuse": m.light_diffuse.copy(), "light_dir": m.light_dir.copy(),
            "geom_rgba": m.geom_rgba.copy(), "cube_pose": env.cube_pose()}


# Which snapshot entries a knob must change (and all others must stay nominal).
CHANGED_BY = {
    "object_xy_range": {"cube_pose"}, "object_yaw_range": {"cube_pose"}, "friction_range": {"geom_friction"},
    "mass_range": {"body_mass", "body_inertia"}, "camera_pos_range": {"cam_pos"}, "camera_fovy_range": {"cam_fovy"},
    "light_range": {"light_diffuse", "light_dir"}, "colour_range": {"geom_rgba"},
}


def test_all_knobs_are_covered_and_off_by_default() -> None:
    defaults = RandomizationConfig()
    assert set(KNOB_VALUES) == {f.name for f in dataclasses.fields(RandomizationConfig)}
    assert all(getattr(defaults, name) == 0 for name in KNOB_VALUES)
    assert PandaPickCubeConfig().randomization == defaults


@pytest.fixture(scope="module")
def nominal() -> dict[str, np.ndarray]:
    env = PandaPickCube(PandaPickCubeConfig())
    snapshots = [_model_snapshot(env) for _ in (env.reset(seed=1), env.reset(seed=2))]
    for key in snapshots[0]:  # the deterministic twin does not vary across seeds
        np.testing.assert_array_equal(snapshots[0][key], snapshots[1][key])
    return snapshots[0]


@pytest.mark.parametrize("knob", sorted(CHANGED_BY))
def test_model_knob_changes_only_its_fields(knob: str, nominal: dict[str, np.ndarray]) -> None:
    env = PandaPickCube(PandaPickCubeConfig(randomization=RandomizationConfig(**{knob: KNOB_VALUES[knob]})))
    env.reset(seed=1)
    first = _model_snapshot(env)
    for key, value in first.items():
        if key in CHANGED_BY[knob]:
            assert not np.allclose(value, nominal[key]), f"{knob} left {key} nominal"
        else:
            np.testing.assert_array_equal(value, nominal[key], err_msg=f"{knob} changed {key}")
    env.reset(seed=2)
    second = _model_snapshot(env)
    assert any(not np.array_equal(first[k], second[k]) for k in CHANGED_BY[knob])  # a new draw per episode
    env.reset(seed=1)
    again = _model_snapshot(env)
    for key in first:  # same seed, same draw: nothing compounds across resets
        np.testing.assert_array_equal(first[key], again[key])


def test_object_pose_knob_also_moves_the_place_target() -> None:
    env = PandaPickPlaceCube(PandaPickPlaceCubeConfig(randomization=RandomizationConfig(object_xy_range=0.05)))
    targets = [env.reset(seed=s)["state"][-3:].copy() for s in range(4)]
    assert len({tuple(t) for t in targets}) == 4
    for seed, target in enumerate(targets):
        obs = env.reset(seed=seed)
        assert np.linalg.norm(obs["state"][21:23] - target[:2]) >= 0.08  # target never under the cube
        np.testing.assert_allclose(env.model.geom_pos[env._target_geom, :2], target[:2])


def test_mass_knob_changes_the_dynamics() -> None:
    heavy = PandaPickCube(PandaPickCubeConfig(randomization=RandomizationConfig(mass_range=0.9)))
    heavy.reset(seed=0)
    nominal = PandaPickCube(PandaPickCubeConfig())
    nominal.reset(seed=0)
    assert heavy.model.body_mass[heavy._cube_body] != nominal.model.body_mass[nominal._cube_body]
    mujoco.mj_forward(heavy.model, heavy.data)
    mujoco.mj_forward(nominal.model, nominal.data)
    cube_dof = heavy._cube_qvel + 2  # vertical gravity load on the cube's free joint
    assert heavy.data.qfrc_bias[cube_dof] != pytest.approx(nominal.data.qfrc_bias[cube_dof])


@pytest.mark.parametrize("knob", ["camera_pos_range", "camera_fovy_range", "light_range", "colour_range"])
def test_visual_knobs_change_the_images(knob: str) -> None:
    def frame(randomization: RandomizationConfig) -> np.ndarray:
        env = PandaPickCube(PandaPickCubeConfig(obs="pixels", randomization=randomization))
        obs = env.reset(seed=4)
        env.close()
        return obs["images/front"].astype(int)

    difference = np.abs(frame(RandomizationConfig(**{knob: KNOB_VALUES[knob]})) - frame(RandomizationConfig()))
    assert difference.mean() > 1.0


def test_action_delay_holds_actions_back_by_k_steps() -> None:
    delayed = PandaPickCube(PandaPickCubeConfig(randomization=RandomizationConfig(action_delay_steps=2)))
    prompt = PandaPickCube(PandaPickCubeConfig())
    up = np.array([0, 0, 1, -1], np.float32)
    still = np.array([0, 0, 0, -1], np.float32)
    start = delayed.reset(seed=0)["state"][2]
    prompt.reset(seed=0)
    actions = [up, up, still, still, still]
    delayed_z = [delayed.step(a).obs["state"][2] - start for a in actions]
    prompt_z = [prompt.step(a).obs["state"][2] - start for a in actions]
    assert abs(delayed_z[0]) < 2e-3 and abs(delayed_z[1]) < 2e-3  # the first two steps execute the idle action
    assert prompt_z[0] > 0.01
    assert delayed_z[4] > 0.04 and abs(delayed_z[4] - prompt_z[4]) < 0.01  # the same motion, two steps late
    queue = ActionDelay(1, np.zeros(2))
    assert np.array_equal(queue.push(np.ones(2)), np.zeros(2)) and np.array_equal(queue.push(np.zeros(2)), np.ones(2))
    with pytest.raises(ValueError):
        ActionDelay(-1, np.zeros(2))


def test_state_noise_perturbs_observations_only() -> None:
    noisy = PandaPickCube(PandaPickCubeConfig(randomization=RandomizationConfig(state_noise_std=0.01)))
    clean = PandaPickCube(PandaPickCubeConfig())
    residuals = [noisy.reset(seed=0)["state"] - clean.reset(seed=0)["state"]]
    action = np.array([0.3, -0.2, 0.1, -1], np.float32)
    for _ in range(5):
        residuals.append(noisy.step(action).obs["state"] - clean.step(action).obs["state"])
    residual = np.concatenate(residuals)
    assert 0.007 < residual.std() < 0.013 and abs(residual.mean()) < 0.003
    np.testing.assert_array_equal(noisy.data.qpos, clean.data.qpos)  # the physics is untouched
