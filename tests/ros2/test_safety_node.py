"""robot_rl_safety_node's logic over real DDS, in-process: targets on /robot_rl/target are followed at the speed
limit, a NaN target holds, the e-stop latches until the reset service (the fake ros2_control in cyclonedds sees
the commands). ``test_launch.py`` kills the actor under ``ros2 launch`` to check the watchdog hold across
processes."""
from __future__ import annotations

import copy
import threading
import time

import numpy as np
import pytest

pytest.importorskip("rclpy", reason="ROS 2 tests need rclpy: run `make test-ros`")
pytest.importorskip("cyclonedds", reason="needs cyclonedds (the fake ros2_control): run `make test-ros`")

from ros_rig import FakeRobot, SpinningNode, node_config, wait_for  # noqa: E402

pytestmark = pytest.mark.ros


def _x(robot: FakeRobot) -> list[float]:
    return [c.pose.position.x for c in robot.received()]


def test_safety_node_follows_targets_holds_on_nan_and_latches_the_estop(rclpy_node) -> None:
    from robot_rl.hardware.ros2 import ros_io
    from robot_rl.hardware.ros2.safety_node import SafetyNode, target_msg

    cfg = node_config("cartesian_pose", command_hz=100.0, **{"topics.gripper_command": ""})
    robot = FakeRobot(cfg.topics.command, "cartesian_pose")
    safety = SafetyNode(rclpy_node, cfg)
    stop = threading.Event()
    loop = threading.Thread(target=safety.run, args=(stop,), daemon=True)
    loop.start()
    pub = rclpy_node.create_publisher(ros_io.message_type("gripper"), cfg.topics.target,
                                      ros_io.qos_profile("reliable", 10))
    reset = rclpy_node.create_client(ros_io.message_type("trigger"), "~/reset_estop")

    def send(target, seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:  # at the policy rate (20 Hz in node_config)
            pub.publish(target_msg(np.asarray(target, np.float64), None, time.time() - 0.005))
            time.sleep(0.05)

    try:
        wait_for(lambda: len(robot.received()) > 10, 10.0, "hold commands before any target")
        start = np.array(_x(robot)[-1:] + [0.05, 0.3])
        send(start + [0.1, 0.0, 0.0], 1.0)  # 10 cm ahead: followed at <= max_ee_speed (0.3 m/s) per axis
        xs = np.array(_x(robot))
        assert xs[-1] > start[0] + 0.05, xs[-20:]
        assert np.abs(np.diff(xs)).max() <= 0.3 / 100.0 + 1e-9  # one speed-limited step per command
        # a NaN target: hold (the command converges and stays)
        send([np.nan, np.nan, np.nan], 0.6)
        held = _x(robot)[-10:]
        assert safety.guard.counts["non_finite"] >= 1 and np.ptp(held) < 1e-9, held
        # e-stop: latched; targets are not followed, even after the input is released
        robot.estop(True)
        wait_for(lambda: safety.guard.estopped, 5.0, "e-stop latched")
        robot.estop(False)
        send(start + [0.15, 0.0, 0.0], 0.6)
        latched = _x(robot)[-10:]
        assert np.ptp(latched) < 1e-9 and safety.guard.estopped, latched
        assert reset.wait_for_service(timeout_sec=5.0)
        future = reset.call_async(ros_io.message_type("trigger").Request())
        wait_for(future.done, 5.0, "reset_estop response")
        assert future.result().success, future.result().message
        send(start + [0.15, 0.0, 0.0], 0.6)
        assert _x(robot)[-1] > latched[-1] + 0.02  # moving again after the reset
        # commands kept flowing at command_hz throughout (holds included)
        stats = safety.stats()
        assert stats["commands"] >= 0.5 * 100.0 * 3.0
        # frame -> command from the stamp the targets carry (5 ms old when sent), the first command after each
        assert 5.0 <= stats["frame_to_command_p50_ms"] < 200.0
    finally:
        stop.set()
        loop.join(2.0)
        robot.close()


def test_the_actor_reflects_the_safety_nodes_estop_latch_and_owns_none(rclpy_node) -> None:
    """One latch per robot, in the node that owns the command stream: with ``via_safety_node`` the actor has no
    ``~/reset_estop`` and no e-stop subscription; it pauses the policy while robot_rl_safety_node's latch (on
    ``topics.estop_latched``) is set, resumes when that node's reset releases it, and holds while the safety node
    is silent."""
    from robot_rl.hardware.ros2 import ros_io
    from robot_rl.hardware.ros2.robot_env import RosRobotEnv
    from robot_rl.hardware.ros2.safety_node import SafetyNode

    cfg = node_config("joint_trajectory", command_hz=100.0, **{"command.via_safety_node": True})
    robot = FakeRobot(cfg.topics.command, "joint_trajectory")
    safety_ros = SpinningNode("robot_rl_safety")  # in a context of its own, as in its own process
    safety = SafetyNode(safety_ros.node, cfg)
    stop = threading.Event()
    loop = threading.Thread(target=safety.run, args=(stop,), daemon=True)
    loop.start()
    env = RosRobotEnv(cfg, rclpy_node)
    reset = rclpy_node.create_client(ros_io.message_type("trigger"), "/robot_rl_safety/reset_estop")
    try:
        env.reset()
        env.step(np.zeros(7, np.float32))
        names = dict(rclpy_node.get_service_names_and_types())
        assert "/robot_rl_actor/reset_estop" not in names and env._reset_estop_srv is None
        robot.estop(True)
        wait_for(lambda: safety.guard.estopped and env.guard.estopped, 5.0, "the latch reflected in the actor")
        out = {}
        stepper = threading.Thread(target=lambda: out.setdefault("r", env.step(np.ones(7, np.float32))))
        stepper.start()
        robot.estop(False)
        time.sleep(0.5)
        assert stepper.is_alive() and env.guard.estopped  # paused: the input's False does not release anything
        assert reset.wait_for_service(timeout_sec=5.0)
        future = reset.call_async(ros_io.message_type("trigger").Request())
        wait_for(future.done, 5.0, "reset_estop response")
        assert future.result().success, future.result().message
        stepper.join(5.0)
        assert not stepper.is_alive() and out["r"].truncated and not env.guard.estopped
        assert not env.step(np.ones(7, np.float32)).truncated  # the policy runs again
        # the safety node goes silent (gone): the actor holds on its stale latch state
        stop.set()
        loop.join(2.0)
        safety_ros.stop_node()
        wait_for(lambda: any(s.startswith("safety_node") for s in env.cache.stale(cfg.safety.sensor_timeout_s)),
                 5.0, "the safety node's state to go stale")
    finally:
        stop.set()
        env.close()
        safety_ros.close()
        robot.close()


def test_target_wire_v2_carries_the_frame_stamp_and_refuses_v1() -> None:
    from std_msgs.msg import Float64MultiArray, MultiArrayDimension

    from robot_rl.hardware.ros2.safety_node import decode_target, target_msg

    target, grip, stamp = decode_target(target_msg(np.array([0.1, 0.2, 0.3]), 0.04, 1234.5), 3)
    assert np.allclose(target, [0.1, 0.2, 0.3]) and grip == 0.04 and stamp == 1234.5
    assert decode_target(target_msg(np.zeros(3), None), 3)[1:] == (None, None)  # a hold: no grip, no frame
    old = Float64MultiArray(data=[0.1, 0.2, 0.3, 0.04])
    old.layout.dim = [MultiArrayDimension(label="robot_rl_target_v1", size=3, stride=4)]
    with pytest.raises(ValueError, match="robot_rl_target_v2"):
        decode_target(old, 3)


def test_a_prepared_command_goes_out_as_is_or_is_redone_for_an_input_that_came_after_it(rclpy_node) -> None:
    """``command_prepare_s``: the command for a deadline is computed before it. Nothing new by the deadline: that
    very message is sent, stamped with the deadline. A target that came in between is served by the command at
    the deadline (computed again, the limits applied once, from the state before the prepared one); so is an
    e-stop, which turns it into a hold."""
    from std_msgs.msg import Bool

    from robot_rl.hardware.ros2.safety_node import SafetyNode, target_msg

    cfg = node_config("cartesian_pose", command_hz=100.0, **{"topics.gripper_command": ""})
    safety = SafetyNode(rclpy_node, cfg)
    ros_now = lambda: rclpy_node.get_clock().now().nanoseconds * 1e-9  # noqa: E731
    here = np.array([0.5, 0.0, 0.3])

    def sense() -> None:  # fresh sensors: the robot stands at `here`
        safety.cache.put("ee_pose", (here, np.array([1.0, 0.0, 0.0, 0.0])), ros_now())
        safety.cache.put("joint_states", (list(cfg.arm_joints), np.zeros(len(cfg.arm_joints))), ros_now())

    sense()
    safety.limiter.reset(here)
    safety._on_target(target_msg(here + [0.1, 0.0, 0.0], None))
    deadline = time.monotonic() + 0.0015
    prepared = safety._prepare(deadline)
    target, hold, msg = safety._at_deadline(prepared, deadline)[:3]
    assert msg is prepared.msg and hold is None and safety.recomputed == 0
    assert target[0] > here[0]  # towards the target
    stamp = msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9
    assert abs(stamp - (ros_now() + deadline - time.monotonic())) < 0.002  # the deadline, not when it was built

    # the next command is prepared; then a target the other way arrives before its deadline
    reference = copy.deepcopy(safety.limiter)  # the limiter as it stands before the next command
    deadline += 0.01
    sense()
    prepared = safety._prepare(deadline)
    back = here - [0.1, 0.0, 0.0]
    safety._on_target(target_msg(back, None))
    target, hold, msg = safety._at_deadline(prepared, deadline)[:3]
    assert safety.recomputed == 1 and msg is not prepared.msg and hold is None
    np.testing.assert_array_equal(target, reference(back, here))  # one limiter step from before the prepared one
    assert prepared.target[0] > target[0]
    assert msg.pose.position.x == pytest.approx(target[0])

    # an e-stop between preparation and deadline: the command that goes out is the hold
    deadline += 0.01
    sense()
    prepared = safety._prepare(deadline)
    assert prepared.hold is None
    safety._on_estop(Bool(data=True))
    target, hold, msg = safety._at_deadline(prepared, deadline)[:3]
    assert hold == "estop" and safety.recomputed == 2 and safety.limiter.holding


def test_the_command_loop_refuses_a_node_built_with_another_clock(rclpy_node) -> None:
    """``run`` paces on ``time.monotonic`` and ``tick`` reads deadlines on the node's clock: a simulated clock
    (tick-driven tests) would command at times the interpolator never saw, so the loop refuses to start."""
    from robot_rl.hardware.ros2.safety_node import SafetyNode

    cfg = node_config("cartesian_pose", command_hz=100.0, **{"topics.gripper_command": ""})
    safety = SafetyNode(rclpy_node, cfg, clock=lambda: 0.0)
    with pytest.raises(ValueError, match="time.monotonic"):
        safety.run(threading.Event())
    assert safety.sent == 0


def test_a_stall_of_the_command_stream_is_counted_and_warned_about(rclpy_node, caplog) -> None:
    """Gaps between consecutive commands of more than STALL_PERIODS command periods (the node itself stalled:
    a GC pause, a blocking DDS write) are counted with the longest, and warned about once per second; a pause
    while there was nothing to send (startup) is not a gap."""
    from robot_rl.hardware.ros2.safety_node import STALL_PERIODS, SafetyNode

    cfg = node_config("cartesian_pose", command_hz=100.0, **{"topics.gripper_command": ""})
    safety = SafetyNode(rclpy_node, cfg)
    period = safety.period
    with caplog.at_level("WARNING", logger="robot_rl.ros2.safety_node"):
        t = 100.0
        for _ in range(5):  # on time
            safety.note_send(t)
            t += period
        t += 0.33  # a 0.34 s gap, as the Fast DDS write stall of README's Limits
        safety.note_send(t)
        safety.note_send(t + 0.99 * STALL_PERIODS * period)  # just inside the bound: not a stall
        safety._last_send = None  # a loop iteration with nothing to send
        safety.note_send(t + 10.0)
    stats = safety.stats()
    assert stats["command_stalls"] == 1.0
    assert stats["command_stall_max_ms"] == pytest.approx((0.33 + period) * 1e3)
    stalls = [r.getMessage() for r in caplog.records if "command stream stalled" in r.getMessage()]
    assert len(stalls) == 1 and "340 ms" in stalls[0] and "33 command periods" in stalls[0]


def test_the_safety_node_maps_no_fast_dds_shared_memory_with_a_robot_cells_discovery(tmp_path) -> None:
    """The real node, started with SUBNET discovery as on a robot PC, maps no Fast DDS shared-memory segment
    (shared memory's port opening stalled the command stream, README Limits; the rule's cases are in
    tests/hardware/test_dds_transport.py)."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    node_env = {k: v for k, v in os.environ.items() if not k.startswith(("FASTDDS_", "FASTRTPS_"))
                and k not in ("ROS_LOCALHOST_ONLY", "RMW_IMPLEMENTATION")}
    node_env["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "SUBNET"  # this test runs in its own network namespace (lo only)
    proc = subprocess.Popen([sys.executable, "-m", "robot_rl.hardware.ros2.safety_node", "--ros-args",
                             "-r", "__node:=robot_rl_safety_shm_probe", "-p", "topics.gripper_command:=''"],
                            env=node_env, stdout=open(tmp_path / "node.log", "wb"), stderr=subprocess.STDOUT)
    try:
        log_path = tmp_path / "node.log"
        wait_for(lambda: "commanding" in log_path.read_text(errors="replace"), timeout=30.0)
        maps = Path(f"/proc/{proc.pid}/maps").read_text()
        assert "UDPv4 only" in log_path.read_text(errors="replace")
        assert "/dev/shm/fastrtps" not in maps, [line for line in maps.splitlines() if "/dev/shm" in line]
    finally:
        proc.terminate()
        proc.wait(timeout=15)
