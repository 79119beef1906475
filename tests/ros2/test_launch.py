"""The real ``ros2 launch robot_rl sim.launch.py`` / ``real.launch.py`` end to end, as a ROS user starts us.

ROS 2 Jazzy's launch system (from ``$ROOT/../shared/ros2-launch``) resolves the package through the ament index
of ``.venv-ros`` (the pip route: ``pip install -e .[ros2]``), starts the node executables from
``<prefix>/lib/robot_rl``, and the actor streams to a learner process over CurveZMQ. The learner exits by itself
once STEPS transitions arrived; then SIGINT to ``ros2 launch`` (Ctrl-C) must stop every node cleanly.
"""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

pytest.importorskip("rclpy", reason="ROS 2 tests need rclpy: run `make test-ros`")
pytest.importorskip("cyclonedds", reason="needs cyclonedds (the fake ros2_control): run `make test-ros`")

from launch_rig import (assert_clean_exits, kill_group, launch_env, require_ros2_launch, ros2_launch,  # noqa: E402
                        sigint_and_wait, start_learner)
from ros_rig import FakeRobot  # noqa: E402

pytestmark = pytest.mark.ros
STEPS = 20
PREFIX = Path(sys.prefix)  # .venv-ros: robot_rl installed there by pip (editable)


def _run(tmp_path: Path, launch_file: str, extra_args: dict[str, str], nodes: tuple[str, ...]) -> str:
    require_ros2_launch()
    learner = start_learner(tmp_path, STEPS)
    arguments = {"learner_host": "127.0.0.1", "train_config": str(learner.run_dir / "config_learner.yaml"),
                 "keys_dir": str(learner.keys), "actor_id": "robot1", "key_name": "robot1", **extra_args}
    log = tmp_path / "launch.log"
    launch = ros2_launch(launch_file, arguments, launch_env(PREFIX), tmp_path, log)
    try:
        try:
            rc_learner = learner.proc.wait(timeout=300)  # exits by itself once STEPS transitions were ingested
        except Exception:
            raise AssertionError("no transitions reached the learner:\n" + log.read_text()[-5000:] + "\n"
                                 + learner.log_text()[-3000:])
        assert launch.poll() is None, "ros2 launch ended by itself:\n" + log.read_text()[-5000:]
        rc_launch = sigint_and_wait(launch)
    finally:
        kill_group(launch)
        if learner.proc.poll() is None:
            learner.proc.kill()
    text = log.read_text(errors="replace")
    assert rc_learner == 0, learner.log_text()[-4000:]
    assert rc_launch == 0, text[-5000:]
    assert_clean_exits(text, nodes)
    return text


def test_sim_launch_streams_to_the_learner_and_stops_cleanly_on_sigint(tmp_path: Path) -> None:
    text = _run(tmp_path, "sim.launch.py", {}, ("robot_rl_twin_node", "robot_rl_actor_node"))
    flat = " ".join(text.split())
    assert "'transport/rejected': 0.0" in flat, flat[-3000:]  # the actor's summary, printed as it stopped


def test_real_launch_against_fake_ros2_control(tmp_path: Path) -> None:
    params = tmp_path / "site.yaml"  # a site's params file: real.yaml's defaults, no bags, the fake's topics
    params.write_text("robot_rl_actor:\n  ros__parameters:\n    bag_dir: \"\"\n    topics:\n"
                      "      gripper_command: \"\"\n")
    robot = FakeRobot("/cartesian_target", "cartesian_pose")
    try:
        _run(tmp_path, "real.launch.py", {"params_file": str(params)}, ("robot_rl_actor_node",))
        commands = robot.received()
    finally:
        robot.close()
    assert len(commands) > STEPS  # the actor's targets reached the fake controller as PoseStamped commands
