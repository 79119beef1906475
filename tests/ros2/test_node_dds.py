"""The real rclpy robot env against a fake ros2_control written with cyclonedds, over DDS on loopback.

Commands follow the actions through the safety layer; staleness (by header stamp), non-finite sensor values, the
watchdog and the e-stop (released only by the ``~/reset_estop`` service) hold the robot; non-finite actions never
reach the controller.
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
    assert env.guard.counts["watchdog"] == 1  # one stall
    hold = [positions(m) for m in robot.received()[n:]]
    assert len(hold) >= 2  # commanded every tick while stalled, converging at no more than max speed
    steps = np.abs(np.diff(np.array([positions(robot.received()[n - 1]), *hold]), axis=0))
    assert steps.max() <= env.limiter.max_step + 1e-9
    assert np.allclose(hold[-1], robot.measured_q(), atol=0.02) and np.allclose(hold[-1], hold[-2])  # still
    n = len(robot.received())
    env.step(np.ones(7, np.float32))  # the next action ends the hold
    wait_for(lambda: len(robot.received()) > n, what="the step's command")
    n = len(robot.received())
    time.sleep(0.15)
    assert len(robot.received()) == n  # no more watchdog holds after an action (until the next stall)


def reset_estop(node) -> tuple[bool, str]:
    from std_srvs.srv import Trigger

    client = node.create_client(Trigger, "/robot_rl_actor/reset_estop")
    try:
        assert client.wait_for_service(timeout_sec=5.0), "no ~/reset_estop service"
        future = client.call_async(Trigger.Request())
        wait_for(future.done, what="the reset_estop response")
        return future.result().success, future.result().message
    finally:
        node.destroy_client(client)


def test_estop_latches_a_hold_until_reset_by_the_service(rig) -> None:
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
    ok, why = reset_estop(env.node)
    assert not ok and "still active" in why  # refused while the e-stop input still reads True
    robot.estop(False)
    wait_for(lambda: not env.guard.estop_input, what="the released e-stop input")
    time.sleep(0.3)
    assert stepper.is_alive() and env.guard.estopped  # regression: a False on the topic released the latch
    ok, why = reset_estop(env.node)
    assert ok and "released after" in why and env.guard.counts["estop_reset"] == 1
    stepper.join(5)
    assert out["r"].truncated
    moved = env.step(np.ones(7, np.float32))
    assert not moved.truncated
    wait_for(lambda: positions(robot.received()[-1])[0] > before[0] + 0.01, what="motion after the reset")


def test_non_finite_sensor_values_hold_the_robot_and_the_node_keeps_running(rig) -> None:
    """Regression: a NaN joint position raised out of step() (assemble_state) and out of the watchdog's hold."""
    env, robot = rig
    env.reset()
    env.step(np.zeros(7, np.float32))
    robot.nan_joint = 2  # a broken encoder: every joint_states message now carries a NaN arm joint
    time.sleep(2 * env.cfg.safety.sensor_timeout_s)  # long enough for the last valid joint state to go stale
    out, held = {}, env.holds.get("stale", 0)

    def step() -> None:
        try:
            out["r"] = env.step(np.ones(7, np.float32))
        except Exception as e:  # noqa: BLE001 (reported by the assertion below)
            out["error"] = e
    stepper = threading.Thread(target=step)
    stepper.start()
    wait_for(lambda: "error" in out or env.holds.get("stale", 0) >= held + 2, what="holds on NaN joint states")
    assert "error" not in out, f"step raised {out.get('error')!r}"
    assert stepper.is_alive()  # waiting for valid sensors, not acting and not dead
    dropped = env.guard.counts["bad_sensor"]
    assert dropped > 5  # counted (and logged at most once a second)
    wait_for(lambda: env.guard.counts["bad_sensor"] > dropped + 5, what="the executor to keep running")
    robot.nan_joint = None
    stepper.join(5)
    assert not stepper.is_alive() and out["r"].truncated
    assert np.isfinite(out["r"].obs["state"]).all()
    assert all(np.isfinite(positions(m)).all() for m in robot.received())
    assert not env.step(np.zeros(7, np.float32)).truncated  # back to normal


def test_old_header_stamps_are_stale(rig) -> None:
    """Regression: staleness used the arrival time, so a driver re-sending old data looked fresh."""
    env, robot = rig
    env.reset()
    env.step(np.zeros(7, np.float32))
    robot.stamp_offset_s = -2.0  # messages keep arriving, but their stamps say they were measured 2 s ago
    wait_for(lambda: any("header stamp" in s for s in env.cache.stale(env.cfg.safety.sensor_timeout_s)),
             what="old stamps to count as stale")
    out, held = {}, env.holds.get("stale", 0)
    stepper = threading.Thread(target=lambda: out.setdefault("r", env.step(np.ones(7, np.float32))))
    stepper.start()
    wait_for(lambda: env.holds.get("stale", 0) >= held + 2, what="holds on old data")
    assert stepper.is_alive()
    robot.stamp_offset_s = 0.0
    stepper.join(5)
    assert out["r"].truncated


def test_non_finite_actions_never_reach_the_controller(rig) -> None:
    env, robot = rig
    env.reset()
    for bad in (np.full(7, np.nan, np.float32), np.array([np.inf, *[0] * 6], np.float32), np.zeros(3, np.float32)):
        env.step(bad)
    env.step(np.ones(7, np.float32))
    wait_for(lambda: len(robot.received()) > 4, what="commands")
    assert all(np.isfinite(positions(m)).all() for m in robot.received())
    assert env.guard.counts["non_finite"] == 3
