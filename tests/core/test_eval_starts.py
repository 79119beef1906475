"""Where a policy fails: per-episode start vectors from `run_episodes`, the distance of failures and successes to
the nearest demo start, and the start map."""
from __future__ import annotations

import logging

import numpy as np
import pytest

from robot_rl.eval_starts import demo_start_vectors, plot_start_map, start_report
from robot_rl.evaluate import run_episodes

NAMES = ["x", "y", "z"]


def _records(starts, success):
    return [{"seed": i, "success": bool(s), "return": float(s), "steps": 10, "start": list(map(float, p))}
            for i, (p, s) in enumerate(zip(starts, success))]


def test_report_measures_distances_in_start_spread_units_over_the_varying_dims():
    # x in {-1, 1} (std 1), y in {-2, 2} (std 2), z constant (left out). One demo at (-1, -2, 0).
    starts = [(-1, -2, 0), (-1, 2, 0), (1, -2, 0), (1, 2, 0)]
    success = [True, True, False, False]
    report = start_report(_records(starts, success), [np.array([-1.0, -2.0, 0.0])], NAMES)
    assert report["episodes"] == 4 and report["failures"] == 2 and report["varying_dims"] == ["x", "y"]
    # Scaled distances to the demo: 0, 2, 2, sqrt(8). Successes {0, 2} -> 1; failures {2, sqrt 8}.
    assert report["demos"] == 1
    assert report["nearest_demo_distance"]["success_median"] == pytest.approx(1.0)
    assert report["nearest_demo_distance"]["failure_median"] == pytest.approx((2 + np.sqrt(8)) / 2)


def test_nearest_of_several_demos_and_all_successes():
    starts = [(0, 0, 0), (4, 0, 0), (0, 4, 0), (4, 4, 0)]  # std 2 in x and y
    demos = [np.array([0.0, 0.0, 0.0]), np.array([4.0, 4.0, 0.0])]
    report = start_report(_records(starts, [True] * 4), demos)
    assert report["varying_dims"] == ["start[0]", "start[1]"]  # no names: indices
    assert report["nearest_demo_distance"]["success_median"] == pytest.approx(1.0)  # 0, 2, 2, 0
    assert report["nearest_demo_distance"]["failure_median"] is None


def test_demo_starts_of_another_length_are_left_out_with_a_warning(caplog):
    records = _records([(0, 0, 0), (1, 1, 0)], [True, False])
    with caplog.at_level(logging.WARNING, logger="robot_rl.eval"):
        report = start_report(records, [np.zeros(28), np.zeros(3)], NAMES)
    assert report["demos"] == 1 and "1 of 2 demo start vectors" in caplog.text
    assert start_report(records, [np.zeros(28)])  # no usable demo: still the episode summary
    assert "nearest_demo_distance" not in start_report(records, [np.zeros(28)])


def test_records_without_starts_give_no_report_and_no_map(tmp_path, caplog):
    records = [{"seed": 0, "success": True, "return": 1.0, "steps": 3}]
    assert start_report(records) == {}
    with caplog.at_level(logging.WARNING, logger="robot_rl.eval"):
        assert plot_start_map(records, tmp_path / "m.png") is None
    assert not (tmp_path / "m.png").exists() and "no start map" in caplog.text
    with pytest.raises(ValueError, match="differ in length"):
        start_report(_records([(0, 0), (1, 1, 1)], [True, True]))


def test_map_is_written_over_the_two_dims_that_vary_most(tmp_path):
    rng = np.random.default_rng(0)
    starts = np.c_[rng.uniform(-1, 1, 30), rng.uniform(-5, 5, 30), rng.uniform(-3, 3, 30)]
    path = plot_start_map(_records(starts, starts[:, 1] > 0), tmp_path / "sub" / "m.png",
                          [np.zeros(3)], NAMES)
    assert path == tmp_path / "sub" / "m.png" and path.stat().st_size > 1000
    one_dim = plot_start_map(_records([(0, 0, 0), (0, 1, 0)], [True, False]), tmp_path / "one.png")
    assert one_dim is not None and one_dim.stat().st_size > 0


class _Hold:
    """Holds the hand still with the gripper open: every episode of the twin truncates."""

    def reset(self) -> None:
        pass

    def act(self, obs, deterministic: bool = True) -> np.ndarray:
        return np.array([0.0, 0.0, 0.0, -1.0], np.float32)


def test_run_episodes_records_each_start_on_the_twin(tmp_path):
    from robot_rl.sim.panda_config import PandaPickCubeConfig, RandomizationConfig
    from robot_rl.sim.panda_pick_cube import PandaPickCube

    env = PandaPickCube(PandaPickCubeConfig(obs="state", max_episode_steps=3,
                                            randomization=RandomizationConfig(object_xy_range=0.05)))
    result = run_episodes(env, _Hold(), episodes=3, seed=7)
    expected = []
    for seed in (7, 8, 9):
        env.reset(seed=seed)
        expected.append(env.start_features())
    assert [r["seed"] for r in result["per_episode"]] == [7, 8, 9]
    assert all(r["steps"] == 3 and r["success"] is False for r in result["per_episode"])
    np.testing.assert_allclose([r["start"] for r in result["per_episode"]], expected)
    assert env.start_feature_names()[:2] == ["cube x", "cube y"] and len(env.start_feature_names()) == 7
    assert start_report(result["per_episode"], names=env.start_feature_names())["varying_dims"] == ["cube x",
                                                                                                     "cube y"]
    env.close()


def test_demo_start_vectors_read_an_episode_store(tmp_path):
    from robot_rl.episode_store import EpisodeStore
    from robot_rl.sim.point_reach import PointReach
    from robot_rl.types import Episode, Transition

    assert demo_start_vectors(tmp_path / "missing") == [] and demo_start_vectors("") == []
    env, store = PointReach(), EpisodeStore(tmp_path / "demos")
    for episode_id, meta in enumerate(({"start_features": [0.1, 0.2]}, None)):
        obs = env.reset(seed=episode_id)
        step = Transition(obs, np.zeros(2, np.float32), 0.0, obs, False, True, "expert", episode_id, 0)
        store.write(Episode.from_transitions([step], "h", success=True, meta=meta))
    starts = demo_start_vectors(tmp_path / "demos")
    # The recorded start_features where the expert stored them; else the first observation's low-dim part.
    np.testing.assert_allclose(starts[0], [0.1, 0.2])
    np.testing.assert_allclose(starts[1], np.concatenate([np.ravel(v) for _, v in sorted(env.reset(seed=1).items())]))


def test_recorded_starts_read_only_the_meta_where_the_expert_stored_the_start(tmp_path, monkeypatch, caplog):
    """Where each demo started is one meta field: reading it must not load the episodes' arrays (camera frames
    of every demo, once per evaluation), and an episode of another spec is not counted."""
    from robot_rl.demos import recorded_starts
    from robot_rl.episode_store import EpisodeStore
    from robot_rl.types import Episode, Transition

    store = EpisodeStore(tmp_path / "demos")
    obs = {"state": np.zeros(3, np.float32), "image": np.zeros((8, 8, 3), np.uint8)}
    for episode_id, (meta, spec) in enumerate((({"start_features": [0.3, -0.1]}, "h"), (None, "h"),
                                              ({"start_features": [9.0, 9.0]}, "other"))):
        step = Transition(obs, np.zeros(2, np.float32), 0.0, obs, False, True, "expert", episode_id, 0)
        store.write(Episode.from_transitions([step], spec, success=True, meta=meta))

    def no_arrays(*args, **kwargs):
        raise OSError("the episode's arrays were read")

    monkeypatch.setattr(EpisodeStore, "read", staticmethod(no_arrays))
    with caplog.at_level("ERROR", logger="robot_rl.demos"):
        starts = recorded_starts(tmp_path / "demos", spec_hash="h")
    # Episode 0 from its meta alone; episode 1 (no stored start) needs its frames, whose read fails here:
    # skipped with an error naming it, not a lost evaluation; episode 2 is of another spec.
    assert len(starts) == 1
    np.testing.assert_allclose(starts[0], [0.3, -0.1])
    assert "expert-00000001" in caplog.text and "were read" in caplog.text
    monkeypatch.undo()
    assert [len(s) for s in recorded_starts(tmp_path / "demos", spec_hash="h")] == [2, 3]
    assert len(recorded_starts(tmp_path / "demos")) == 3
