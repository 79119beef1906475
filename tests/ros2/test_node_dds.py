"""The real rclpy robot env against a fake ros2_control written with cyclonedds, over DDS on loopback.

Commands follow the actions through the safety layer; staleness, the watchdog and the e-stop hold the robot;
non-finite actions never reach the controller.
"""
from __future__ import annotations

import threading
import time

import numpy as np
import pytest

pytest.importorskip("rclpy", reason="ROS 2 tests need rclpy: run `make test-ros`")
pytest.importorskip("cyclonedds", reason="needs cyclonedds: run `make test-ros`")

from ros_rig import FakeRobot, node_config, wait_for  # noqa: E402
from robot_rl.hardware.ros2.robot_env import RosRobotEnv  # noqa: E402

pytestmark = pytest.mark.ros


def positions(msg) -> np.ndarray:
    if hasattr(msg, "points"):
        return np.array(msg.points[-1].positions)
    if hasattr(msg, "pose"):
        p = msg.pose.position
        return np.array([p.x, p.y, p.z])
    return np.array(msg.data)


@pytest.fixture
def rig(rclpy_node, request):
    mode = getattr(request, "param", "joint_trajectory")
    cfg = node_config(mode)
    robot = FakeRobot(cfg.topics.command, mode)
    env = RosRobotEnv(cfg, rclpy_node)
    yield env, robot
    env.close()
    robot.close()


@pytest.mark.parametrize("rig", ["joint_trajectory", "forward_position", "cartesian_pose"], indirect=True)
def test_commands_follow_the_actions_through_the_limits(rig) -> None:
    env, robot = rig
    obs = env.reset()  # waits for discovery + fresh sensors, then moves home
    env.obs_spec.check(obs)
    assert obs["images/front"].shape == (16, 16, 3)
    n_before = len(robot.received())
    action = np.zeros(env.action_spec.shape, np.float32)
    action[0] = 1.0
    targets = []
    for _ in range(6):
        result = env.step(action)
        targets.append(env.limiter.target.copy())
        env.obs_spec.check(result.obs)
        assert not result.truncated and not result.terminated
    wait_for(lambda: len(robot.received()) >= n_before + 6, what="the six commands at the fake controller")
    got = [positions(m) for m in robot.received()[n_before:n_before + 6]]
    assert np.allclose(got, targets)  # exactly what the limiter let through, in order
    steps = np.diff(np.array([positions(robot.received()[n_before - 1]), *got])[:, 0])
    cap = (env.cfg.safety.max_ee_speed if env.cartesian else env.cfg.safety.max_joint_speed) * env.period
    assert (steps > 0).all() and steps.max() <= min(cap, env.scale) + 1e-9
    last = robot.received()[-1]
    if env.cfg.command.mode == "joint_trajectory":
        assert tuple(last.joint_names) == env.cfg.arm_joints
        assert last.points[0].time_from_start.nanosec == pytest.approx(50_000_000, abs=1)
    if env.cfg.command.mode == "cartesian_pose":
        q = last.pose.orientation
        assert (q.w, q.x, q.y, q.z) == (0.0, 1.0, 0.0, 0.0) and last.header.frame_id == "panda_link0"
    # the state reports what the fake controller measures
    wait_for(lambda: True)
    if not env.cartesian:
        assert np.allclose(result.obs["state"][14:21], robot.measured_q(), atol=0.05)


def test_stale_camera_holds_and_truncates(rig) -> None:
    env, robot = rig
    env.reset()
    env.step(np.zeros(7, np.float32))
    robot.publish_images = False
    wait_for(lambda: env.cache.stale(env.cfg.safety.sensor_timeout_s), what="the cameras to go stale")
    out = {}
    stepper = threading.Thread(target=lambda: out.setdefault("r", env.step(np.ones(7, np.float32))))
    stepper.start()
    wait_for(lambda: env.holds.get("stale", 0) >= 2, what="holds while the cameras are silent")
    n = len(robot.received())
    wait_for(lambda: len(robot.received()) > n, what="a hold command")
    assert np.allclose(positions(robot.received()[-1]), robot.measured_q(), atol=0.02)  # holds where it is
    assert stepper.is_alive()  # the step waits for fresh sensors instead of acting on stale ones
    robot.publish_images = True
    stepper.join(5)
    assert out["r"].truncated and not out["r"].terminated  # the pause cut the episode


def test_watchdog_holds_when_no_action_arrives(rig) -> None:
    env, robot = rig
    env.reset()
    for _ in range(3):
        env.step(np.ones(7, np.float32))
    n = len(robot.received())
    time.sleep(0.6)  # the actor stalls for longer than watchdog_timeout_s (0.3 s)
    assert env.guard.counts["watchdog"] == 1
    hold = robot.received()[n:]
    assert len(hold) == 1 and np.allclose(positions(hold[0]), robot.measured_q(), atol=0.02)


def test_estop_latches_a_hold_until_released(rig) -> None:
    env, robot = rig
    env.reset()
    env.step(np.zeros(7, np.float32))
    robot.estop(True)
    wait_for(lambda: env.guard.estopped, what="the e-stop to reach the node")
    before = robot.measured_q()
    out = {}
    stepper = threading.Thread(target=lambda: out.setdefault("r", env.step(np.ones(7, np.float32))))
    stepper.start()
    time.sleep(0.5)
    assert stepper.is_alive() and np.allclose(robot.measured_q(), before, atol=0.01)  # the robot did not move
    assert all(np.allclose(positions(m), before, atol=0.01) for m in robot.received()[-3:])
    robot.estop(False)
    stepper.join(5)
    assert out["r"].truncated
    moved = env.step(np.ones(7, np.float32))
    assert not moved.truncated
    wait_for(lambda: positions(robot.received()[-1])[0] > before[0] + 0.01, what="motion after the release")


def test_non_finite_actions_never_reach_the_controller(rig) -> None:
    env, robot = rig
    env.reset()
    for bad in (np.full(7, np.nan, np.float32), np.array([np.inf, *[0] * 6], np.float32), np.zeros(3, np.float32)):
        env.step(bad)
    env.step(np.ones(7, np.float32))
    wait_for(lambda: len(robot.received()) > 4, what="commands")
    assert all(np.isfinite(positions(m)).all() for m in robot.received())
    assert env.guard.counts["non_finite"] == 3
