"""Independent readers: every message the node publishes decodes with ``rosbags`` (its own CDR code), and the
episode bags (MCAP) read back with ``rosbags``' rosbag2 reader."""
from __future__ import annotations

import os

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


def test_episode_bag_mcap_has_what_rosbag2_writes(tmp_path, monkeypatch) -> None:
    """Messages serialized by rosbags (an independent CDR writer). Channel metadata ``topic_type_hash`` (checked against rosbags' own RIHS01 computation), one schema per
    type, the ``rosbag2`` metadata record, ``publish_time`` from header stamps, per-channel sequence numbers and
    ``/tf_static`` offered transient-local; read with the ``mcap`` reader and with ``rosbags``."""
    import json

    import yaml
    from mcap.reader import make_reader
    from rosbags.rosbag2 import Reader
    from rosbags.typesys.stores.ros2_jazzy import (builtin_interfaces__msg__Time as Time,
                                                   geometry_msgs__msg__Quaternion as Quaternion,
                                                   geometry_msgs__msg__Transform as Transform,
                                                   geometry_msgs__msg__TransformStamped as TransformStamped,
                                                   geometry_msgs__msg__Vector3 as Vector3,
                                                   sensor_msgs__msg__Image as Image,
                                                   sensor_msgs__msg__JointState as JointState,
                                                   std_msgs__msg__Float32MultiArray as Float32MultiArray,
                                                   std_msgs__msg__Header as Header,
                                                   std_msgs__msg__MultiArrayLayout as Layout,
                                                   tf2_msgs__msg__TFMessage as TFMessage)

    from robot_rl.hardware.ros2.bag import EpisodeBag

    ts = typestore()
    # tf2_msgs is not on PyPI: lay out its rosidl install files (.msg + .json) as a ROS install has them
    share = tmp_path / "ros" / "share" / "tf2_msgs" / "msg"
    share.mkdir(parents=True)
    (share / "TFMessage.msg").write_text("geometry_msgs/TransformStamped[] transforms\n")
    (share / "TFMessage.json").write_text(json.dumps({"type_hashes": [
        {"type_name": "tf2_msgs/msg/TFMessage", "hash_string": ts.hash_rihs01("tf2_msgs/msg/TFMessage")}]}))
    monkeypatch.setenv("AMENT_PREFIX_PATH", f"{tmp_path / 'ros'}:{os.environ.get('AMENT_PREFIX_PATH', '')}")

    topics = {"/joint_states": ("sensor_msgs/msg/JointState", "best_effort"),
              "/cameras/front/image_raw": ("sensor_msgs/msg/Image", "best_effort"),
              "/cameras/wrist/image_raw": ("sensor_msgs/msg/Image", "best_effort"),
              "/robot_rl/action": ("std_msgs/msg/Float32MultiArray", "reliable"),
              "/tf_static": ("tf2_msgs/msg/TFMessage", "reliable")}
    bag = EpisodeBag(topics)
    t0 = 1_700_000_000_000_000_000
    f64 = np.array([0.1])
    for i in range(3):
        js = JointState(Header(Time(1_600_000_000 + i, 250), "base"), ["a"], f64 * i, np.zeros(0), np.zeros(0))
        bag.add("/joint_states", t0 + i * 10_000_000, bytes(ts.serialize_cdr(js, "sensor_msgs/msg/JointState")))
        for k, cam in enumerate(("front", "wrist")):
            image = Image(Header(Time(1_600_000_000 + i, 500 + k), cam), 1, 2, "rgb8", 0, 6,
                          np.arange(6, dtype=np.uint8))
            bag.add(f"/cameras/{cam}/image_raw", t0 + i * 10_000_000 + 1 + k,
                    bytes(ts.serialize_cdr(image, "sensor_msgs/msg/Image")))
        action = Float32MultiArray(Layout([], 0), np.array([0.5], np.float32))
        bag.add("/robot_rl/action", t0 + i * 10_000_000 + 5,
                bytes(ts.serialize_cdr(action, "std_msgs/msg/Float32MultiArray")))
    tf = TFMessage(transforms=[TransformStamped(Header(Time(1_600_000_000, 7), "panda_link0"), "camera",
                                                Transform(Vector3(0.1, 0.0, 0.5), Quaternion(0.0, 0.0, 0.0, 1.0)))])
    bag.add("/tf_static", t0 - 1, bytes(ts.serialize_cdr(tf, "tf2_msgs/msg/TFMessage")))
    path = bag.write(tmp_path / "episode_000001")

    with open(path / "episode_000001_0.mcap", "rb") as f:
        reader = make_reader(f)
        summary = reader.get_summary()
        schemas = {s.name for s in summary.schemas.values()}
        assert len(summary.schemas) == len(schemas) == 4  # Image once for both cameras
        channels = {c.topic: c for c in summary.channels.values()}
        for topic, (type_name, _) in topics.items():
            assert channels[topic].metadata["topic_type_hash"] == ts.hash_rihs01(type_name), topic
            assert summary.schemas[channels[topic].schema_id].name == type_name
        durability = {t: yaml.safe_load(c.metadata["offered_qos_profiles"])[0]["durability"]
                      for t, c in channels.items()}
        assert durability["/tf_static"] == 1 and durability["/joint_states"] == 2  # transient-local / volatile
        records = list(reader.iter_metadata())
        assert [r.name for r in records] == ["rosbag2"]
        assert records[0].metadata["serialized_metadata"] == (path / "metadata.yaml").read_text()
        seqs: dict[str, list[int]] = {}
        for _, channel, message in reader.iter_messages(log_time_order=True):
            seqs.setdefault(channel.topic, []).append(message.sequence)
            type_name = topics[channel.topic][0]
            if type_name in ("sensor_msgs/msg/JointState", "sensor_msgs/msg/Image"):
                stamp = ts.deserialize_cdr(message.data, type_name).header.stamp
                assert message.publish_time == stamp.sec * 10**9 + stamp.nanosec != message.log_time
            else:  # no header of its own (TFMessage, Float32MultiArray): the receive time
                assert message.publish_time == message.log_time
        assert seqs == {"/tf_static": [0], "/joint_states": [0, 1, 2], "/cameras/front/image_raw": [0, 1, 2],
                        "/cameras/wrist/image_raw": [0, 1, 2], "/robot_rl/action": [0, 1, 2]}
    with Reader(path) as reader:
        conns = {c.topic: c for c in reader.connections}
        assert conns["/tf_static"].digest == ts.hash_rihs01("tf2_msgs/msg/TFMessage")
        assert conns["/tf_static"].ext.offered_qos_profiles[0].durability.name == "TRANSIENT_LOCAL"
        assert sum(1 for _ in reader.messages()) == 13
