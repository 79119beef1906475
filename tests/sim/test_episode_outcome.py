"""Where a Panda twin episode stopped (``episode_outcome``), and how ``robot-rl eval`` reports it."""
from __future__ import annotations

import numpy as np
import pytest

from robot_rl.evaluate import describe_failures, run_episodes
from robot_rl.sim.panda_config import PandaPickCubeConfig

mujoco = pytest.importorskip("mujoco")

from robot_rl.sim.panda_pick_cube import PandaPickCube, PandaPickPlaceCube  # noqa: E402


@pytest.fixture(scope="module")
def env() -> PandaPickCube:
    env = PandaPickCube(PandaPickCubeConfig(obs="state"))
    yield env
    env.close()


class _Aim:
    """Moves the TCP to the cube's centre shifted ``offset_y`` (m), closes there and stays (never lifts): the
    aim error of a policy that has not learnt where the cube is, with ``offset_y`` = 0 a grasp without a lift."""

    def __init__(self, offset_y: float) -> None:
        self.offset = np.array([0.0, offset_y, 0.0])

    def reset(self) -> None:
        self.closing = False

    def act(self, obs, deterministic: bool = True) -> np.ndarray:
        state = obs["state"]
        error = state[21:24] + self.offset - state[0:3]  # (3,) cube centre (+ offset) minus TCP, m
        self.closing = self.closing or bool(np.linalg.norm(error) < 0.01)
        return np.array([*np.clip(error / 0.025, -1.0, 1.0), 1.0 if self.closing else -1.0], np.float32)


def _episode(env, policy, seed: int) -> tuple[bool, dict]:
    obs = env.reset(seed=seed)
    policy.reset()
    for _ in range(env.max_episode_steps):
        result = env.step(policy.act(obs))
        obs = result.obs
        if result.terminated or result.truncated:
            break
    return result.success, env.episode_outcome()


class _Expert:
    def __init__(self, env) -> None:
        self.env = env

    def reset(self) -> None:
        self.expert = self.env.expert()

    def act(self, obs, deterministic: bool = True) -> np.ndarray:
        return self.expert.act(obs)


def test_each_failure_is_named_by_the_furthest_stage_it_reached(env) -> None:
    success, outcome = _episode(env, _Expert(env), seed=3)
    assert success and outcome["stage"] == "success"
    assert outcome["closes"] == 1 and outcome["nearest_close_xy_m"] < 0.005 and outcome["max_lift_m"] > 0.1

    class Still:
        def reset(self) -> None:
            pass

        def act(self, obs, deterministic: bool = True) -> np.ndarray:
            return np.array([0.0, 0.0, 0.0, -1.0], np.float32)

    success, outcome = _episode(env, Still(), seed=3)
    assert not success
    assert outcome == {"stage": "never_closed", "closes": 0, "nearest_close_xy_m": None, "max_lift_m": 0.0}

    success, outcome = _episode(env, _Aim(0.08), seed=3)  # closes 8 cm beside the cube: the fingers miss it
    assert not success and outcome["stage"] == "closed_off_object"
    assert outcome["closes"] == 1 and 0.06 < outcome["nearest_close_xy_m"] < 0.09

    success, outcome = _episode(env, _Aim(0.0), seed=3)  # closes on it and never lifts
    assert not success and outcome["stage"] == "held_not_lifted"
    assert outcome["nearest_close_xy_m"] < 0.005 and outcome["max_lift_m"] < 0.1


def test_a_start_from_a_snapshot_is_a_new_episode(env) -> None:
    env.reset(seed=3)
    snapshot = env.get_state()
    _episode(env, _Aim(0.08), seed=3)
    env.set_state(snapshot)
    assert env.episode_outcome()["stage"] == "never_closed"


def test_pick_and_place_reports_where_the_cube_ended() -> None:
    env = PandaPickPlaceCube()
    try:
        success, outcome = _episode(env, _Expert(env), seed=1)
        assert success and outcome["stage"] == "success" and outcome["cube_to_target_m"] < 0.02
        success, outcome = _episode(env, _Aim(0.0), seed=1)  # holds it where it lay, away from the target
        assert not success and outcome["stage"] == "held_not_placed" and outcome["cube_to_target_m"] >= 0.05
    finally:
        env.close()


def test_eval_counts_the_stages_and_names_the_failures(env) -> None:
    result = run_episodes(env, _Aim(0.08), episodes=2, seed=0)
    assert result["success_rate"] == 0.0 and result["outcomes"] == {"closed_off_object": 2}
    assert [r["outcome"]["stage"] for r in result["per_episode"]] == ["closed_off_object"] * 2
    line = describe_failures(result)
    assert line.startswith("failures by stage: closed_off_object 2 (closed a median ")
    assert line.endswith(" cm from the object)")
    assert describe_failures(run_episodes(env, _Expert(env), episodes=1, seed=3)) is None  # no failure: no line
