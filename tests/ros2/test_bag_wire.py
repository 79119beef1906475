"""Independent readers: every message the node publishes decodes with ``rosbags`` (its own CDR code), and the
episode bags (MCAP) read back with ``rosbags``' rosbag2 reader."""
from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("rclpy", reason="ROS 2 tests need rclpy: run `make test-ros`")
pytest.importorskip("rosbags", reason="needs rosbags: run `make test-ros`")
pytest.importorskip("cyclonedds", reason="needs cyclonedds: run `make test-ros`")

from ros_rig import FakeRobot, node_config, wait_for  # noqa: E402
from robot_rl.hardware.ros2.robot_env import RosRobotEnv  # noqa: E402

pytestmark = pytest.mark.ros


def typestore():
    from rosbags.typesys import Stores, get_typestore

    return get_typestore(Stores.ROS2_JAZZY)


@pytest.mark.parametrize("mode", ["joint_trajectory", "forward_position", "cartesian_pose"])
def test_published_commands_decode_with_rosbags(rclpy_node, mode: str) -> None:
    from robot_rl.hardware.ros2 import ros_io

    cfg = node_config(mode, **{"topics.gripper_command": "/gripper_controller/commands"})
    robot = FakeRobot(cfg.topics.command, mode)
    raw: dict[str, list[bytes]] = {cfg.topics.command: [], cfg.topics.gripper_command: []}
    for topic, kind in ((cfg.topics.command, mode), (cfg.topics.gripper_command, "gripper")):
        rclpy_node.create_subscription(ros_io.message_type(kind), topic, raw[topic].append,
                                       ros_io.qos_profile("reliable", 100), raw=True)
    env = RosRobotEnv(cfg, rclpy_node)
    try:
        env.reset()
        wait_for(lambda: len(raw[cfg.topics.command]) > 0 or env.cartesian is not None, what="discovery")
        n0 = len(raw[cfg.topics.command])
        action = np.zeros(env.action_spec.shape, np.float32)
        action[1], action[-1] = -1.0, 1.0  # move along axis 2, close the gripper
        for _ in range(3):
            env.step(action)
        target = env.limiter.target.copy()
        wait_for(lambda: len(raw[cfg.topics.command]) >= n0 + 3, what="raw commands")
    finally:
        env.close()
        robot.close()
    ts = typestore()
    type_name = {"joint_trajectory": "trajectory_msgs/msg/JointTrajectory",
                 "forward_position": "std_msgs/msg/Float64MultiArray",
                 "cartesian_pose": "geometry_msgs/msg/PoseStamped"}[mode]
    last = ts.deserialize_cdr(raw[cfg.topics.command][n0 + 2], type_name)  # the third step's command
    if mode == "joint_trajectory":
        assert list(last.joint_names) == list(cfg.arm_joints) and np.allclose(last.points[0].positions, target)
    elif mode == "forward_position":
        assert np.allclose(last.data, target)
    else:
        p = last.pose.position
        assert np.allclose([p.x, p.y, p.z], target) and last.header.frame_id == "panda_link0"
    grip = ts.deserialize_cdr(raw[cfg.topics.gripper_command][-1], "std_msgs/msg/Float64MultiArray")
    assert list(grip.data) == [cfg.command.gripper_closed]


def test_episode_bags_read_back_with_rosbags(rclpy_node, tmp_path) -> None:
    from rosbags.rosbag2 import Reader

    cfg = node_config("joint_trajectory", bag_dir=str(tmp_path / "bags"))
    robot = FakeRobot(cfg.topics.command, "joint_trajectory")
    env = RosRobotEnv(cfg, rclpy_node)
    try:
        env.reset()
        for _ in range(5):
            env.step(np.full(7, 0.5, np.float32))
        env.reset()  # ends episode 1: its bag is written
    finally:
        env.close()
        robot.close()
    bags = sorted((tmp_path / "bags").iterdir())
    assert bags[0].name == "episode_000001"  # (episode 2, cut short by close(), holds what arrived before it)
    ts = typestore()
    counts: dict[str, int] = {}
    with Reader(bags[0]) as reader:
        assert reader.duration > 0
        types = {c.topic: c.msgtype for c in reader.connections}
        assert types["/joint_trajectory_controller/joint_trajectory"] == "trajectory_msgs/msg/JointTrajectory"
        assert types["/cameras/front/image_raw"] == "sensor_msgs/msg/Image"
        for connection, _, data in reader.messages():
            msg = ts.deserialize_cdr(data, connection.msgtype)
            counts[connection.topic] = counts.get(connection.topic, 0) + 1
            if connection.topic == "/cameras/front/image_raw":
                assert msg.encoding == "rgb8" and msg.data.size == msg.height * msg.step
                assert np.array_equal(msg.data, robot.image)
            if connection.topic == "/robot_rl/action":
                assert np.allclose(msg.data, 0.5)
            if connection.topic == "/joint_states":
                assert list(msg.name[:7]) == list(cfg.arm_joints)
    assert counts.get("/robot_rl/action") == 5, counts
    assert counts["/robot_rl/action"] == 5 and counts["/robot_rl/reward"] == 5
    assert counts["/joint_trajectory_controller/joint_trajectory"] >= 5
    assert counts["/joint_states"] > 5 and counts["/cameras/wrist/image_raw"] >= 2
    # the schema embedded for Foxglove carries the dependent definitions too
    with Reader(bags[0]) as reader:
        conn = next(c for c in reader.connections if c.topic == "/joint_trajectory_controller/joint_trajectory")
        assert "MSG: trajectory_msgs/JointTrajectoryPoint" in conn.msgdef.data
        assert "MSG: builtin_interfaces/Duration" in conn.msgdef.data
