"""rosbag2/MCAP import: bags written here with ``rosbags`` (CDR, MCAP storage, as ``ros2 bag record`` writes)
hold the robot node's topics; the import must rebuild the node's observations and actions."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("rosbags", reason="install the data extra: pip install -e .[data]")

from robot_rl.datasets.bag_import import import_bags  # noqa: E402
from robot_rl.datasets.common import DatasetError  # noqa: E402
from robot_rl.episode_store import EpisodeStore  # noqa: E402
from robot_rl.hardware.ros2.config import RobotNodeConfig, from_params  # noqa: E402
from robot_rl.hardware.ros2.sensors import Sample, assemble_state, centre_square, node_specs  # noqa: E402
from robot_rl.images import prepare_frame  # noqa: E402
from robot_rl.specs import spec_hash  # noqa: E402

ARM = [f"panda_joint{i}" for i in range(1, 8)]
FINGERS = ["panda_finger_joint1", "panda_finger_joint2"]
SENSOR_HZ, CAMERA_HZ, CONTROL_HZ = 50, 25, 10


def node_cfg() -> RobotNodeConfig:
    return from_params(RobotNodeConfig, {"topics.cameras": ["front"], "topics.camera_topics": ["/cam/front"],
                                         "image_size": 16, "control_hz": float(CONTROL_HZ)})


def camera_image(k: int) -> np.ndarray:
    """A 24x32 rgb8 frame whose content encodes its index k."""
    img = np.zeros((24, 32, 3), np.uint8)
    img[..., 0] = k * 7 % 256
    img[..., 1] = np.arange(32, dtype=np.uint8)[None, :] * 4
    img[..., 2] = 200
    return img


def tcp(t: float) -> tuple[np.ndarray, np.ndarray]:
    return np.array([0.45 + 0.05 * t, 0.02 * t, 0.25 - 0.03 * t]), np.array([0.0, 1.0, 0.0, 0.0])


def joints(t: float) -> np.ndarray:
    return np.concatenate([np.linspace(0, 1, 7) + 0.1 * t, [0.04, 0.04]])


def write_bag(path: Path, seconds: float, with_actions: bool, success_at: float | None = None,
              pose_via_tf: bool = False) -> dict:
    """A bag of the node's topics. Log time = header stamp (s since 0, offset by t0 in ns)."""
    from rosbags.rosbag2 import StoragePlugin, Writer
    from rosbags.typesys import Stores, get_typestore

    ts = get_typestore(Stores.ROS2_JAZZY)
    T = ts.types
    t0 = 1_700_000_000 * 10**9

    def header(t: float):
        ns = int(round(t * 1e9))
        return T["std_msgs/msg/Header"](stamp=T["builtin_interfaces/msg/Time"](sec=ns // 10**9, nanosec=ns % 10**9),
                                        frame_id="panda_link0")

    records = []
    sensor_s = seconds + (0.2 if with_actions else 0.0)  # the node observes once more after its last action
    for k in range(int(round(sensor_s * SENSOR_HZ)) + 1):
        t = k / SENSOR_HZ
        records.append(("/joint_states", "sensor_msgs/msg/JointState", t, T["sensor_msgs/msg/JointState"](
            header=header(t), name=ARM + FINGERS, position=joints(t), velocity=np.zeros(9), effort=np.zeros(9))))
        pos, quat = tcp(t)
        pose = T["geometry_msgs/msg/Pose"](position=T["geometry_msgs/msg/Point"](x=pos[0], y=pos[1], z=pos[2]),
                                           orientation=T["geometry_msgs/msg/Quaternion"](x=quat[1], y=quat[2],
                                                                                         z=quat[3], w=quat[0]))
        if pose_via_tf:  # base -> tcp as one dynamic transform
            tf = T["geometry_msgs/msg/TransformStamped"](
                header=header(t), child_frame_id="panda_hand_tcp", transform=T["geometry_msgs/msg/Transform"](
                    translation=T["geometry_msgs/msg/Vector3"](x=pos[0], y=pos[1], z=pos[2]),
                    rotation=pose.orientation))
            records.append(("/tf", "tf2_msgs/msg/TFMessage", t, T["tf2_msgs/msg/TFMessage"](transforms=[tf])))
        else:
            records.append(("/robot_rl/ee_pose", "geometry_msgs/msg/PoseStamped", t,
                            T["geometry_msgs/msg/PoseStamped"](header=header(t), pose=pose)))
    for k in range(int(round(sensor_s * CAMERA_HZ)) + 1):
        t = k / CAMERA_HZ
        img = camera_image(k)
        records.append(("/cam/front", "sensor_msgs/msg/Image", t, T["sensor_msgs/msg/Image"](
            header=header(t), height=24, width=32, encoding="rgb8", is_bigendian=0, step=96, data=img.reshape(-1))))
    actions = []
    for k in range(int(seconds * CONTROL_HZ)):
        t = 0.1 + k / CONTROL_HZ  # after the first sensor messages
        target, _ = tcp(t + 0.1)
        pose = T["geometry_msgs/msg/Pose"](position=T["geometry_msgs/msg/Point"](x=target[0], y=target[1],
                                                                                 z=target[2]),
                                           orientation=T["geometry_msgs/msg/Quaternion"](x=1.0, y=0.0, z=0.0, w=0.0))
        records.append(("/cartesian_target", "geometry_msgs/msg/PoseStamped", t + 0.001,
                        T["geometry_msgs/msg/PoseStamped"](header=header(t), pose=pose)))
        grip = 0.0 if t > seconds / 2 else 0.08
        records.append(("/gripper_controller/commands", "std_msgs/msg/Float64MultiArray", t + 0.001,
                        T["std_msgs/msg/Float64MultiArray"](layout=T["std_msgs/msg/MultiArrayLayout"](
                            dim=[], data_offset=0), data=np.array([grip]))))
        if with_actions:
            a = np.array([0.3, -0.2, 0.1 * k, 1.0 if grip == 0.0 else -1.0], np.float32)
            actions.append((t + 0.002, a))
            layout = T["std_msgs/msg/MultiArrayLayout"](dim=[], data_offset=0)
            records.append(("/robot_rl/action", "std_msgs/msg/Float32MultiArray", t + 0.002,
                            T["std_msgs/msg/Float32MultiArray"](layout=layout, data=a)))
            records.append(("/robot_rl/reward", "std_msgs/msg/Float32MultiArray", t + 0.099,
                            T["std_msgs/msg/Float32MultiArray"](layout=layout, data=np.array([0.0], np.float32))))
    if success_at is not None:
        records.append(("/robot_rl/success", "std_msgs/msg/Bool", success_at, T["std_msgs/msg/Bool"](data=True)))
    records.sort(key=lambda r: r[2])
    with Writer(path, version=8, storage_plugin=StoragePlugin.MCAP) as writer:
        conns = {}
        for topic, msgtype, t, msg in records:
            if topic not in conns:
                conns[topic] = writer.add_connection(topic, msgtype, typestore=ts)
            writer.write(conns[topic], t0 + int(round(t * 1e9)), ts.serialize_cdr(msg, msgtype))
    return {"t0": t0, "actions": actions}


def expected_obs(t: float, cfg: RobotNodeConfig) -> dict[str, np.ndarray]:
    """The node's observation at time t: newest samples at or before t, velocity from the previous pose."""
    k = int(np.floor(t * SENSOR_HZ + 1e-9))
    pose = Sample(tcp(k / SENSOR_HZ), k / SENSOR_HZ, 0.0)
    prev = Sample(tcp((k - 1) / SENSOR_HZ), (k - 1) / SENSOR_HZ, 0.0) if k > 0 else None
    state = assemble_state((ARM + FINGERS, joints(k / SENSOR_HZ)), pose, prev, cfg.arm_joints, cfg.gripper_joints)
    frame = camera_image(int(np.floor(t * CAMERA_HZ + 1e-9)))
    image = prepare_frame(frame, centre_square(*frame.shape[:2]), (cfg.image_size, cfg.image_size))
    return {"state": state, "images/front": image}


def test_node_bag_with_recorded_actions(tmp_path: Path) -> None:
    cfg = node_cfg()
    written = write_bag(tmp_path / "bags" / "episode_000001", 1.0, with_actions=True)
    write_bag(tmp_path / "bags" / "episode_000002", 0.6, with_actions=True)
    result = import_bags(tmp_path / "bags", tmp_path / "out", cfg)
    obs_spec, action_spec = node_specs(cfg)
    assert result["episodes"] == 2 and result["spec_hash"] == spec_hash(obs_spec, action_spec)
    episodes = list(EpisodeStore(tmp_path / "out").episodes(spec_hash=result["spec_hash"], skip_bad=False))
    ep = episodes[0]
    assert len(ep) == len(written["actions"]) == 10
    assert np.allclose(ep.action, np.stack([a for _, a in written["actions"]]))
    for k, (t, _) in enumerate(written["actions"]):
        exp = expected_obs(t, cfg)
        assert np.allclose(ep.frames["state"][k], exp["state"], atol=1e-5), k
        assert np.array_equal(ep.frames["images/front"][k], exp["images/front"]), k
    final = expected_obs(written["actions"][-1][0] + 0.097, cfg)  # observed before the last reward message
    assert np.allclose(ep.frames["state"][-1], final["state"], atol=1e-5)
    assert ep.truncated[-1] and not ep.terminated.any() and not ep.success


def test_plain_recording_is_resampled_to_the_control_rate(tmp_path: Path) -> None:
    cfg = node_cfg()
    write_bag(tmp_path / "teleop", 1.0, with_actions=False, success_at=0.85)
    import_bags(tmp_path / "teleop", tmp_path / "out", cfg)
    ep = next(EpisodeStore(tmp_path / "out").episodes(skip_bad=False))
    # ticks every 0.1 s from the first time every sensor reported (t = 0); success at 0.85 s ends step 8 -> 0.9 s
    assert len(ep) == 9 and ep.terminated[-1] and ep.reward[-1] == 1.0 and ep.success
    for k in range(len(ep) + 1):
        exp = expected_obs(k / CONTROL_HZ, cfg)
        assert np.allclose(ep.frames["state"][k], exp["state"], atol=1e-5), k
    # commanded TCP targets move by the TCP's own displacement per period (0.05 * 0.1 m in x, ...) / action_scale
    scale = cfg.command.action_scale
    expected_move = (tcp(0.1)[0] - tcp(0.0)[0]) / scale
    assert np.allclose(ep.action[2:, :3], np.clip(expected_move, -1, 1), atol=1e-4)
    assert (ep.action[ep.action[:, 3] > 0, 3] == 1.0).all() and ep.action[-1, 3] == 1.0  # gripper closed late
    assert ep.action[1, 3] == -1.0


def test_tcp_pose_from_tf(tmp_path: Path) -> None:
    cfg = from_params(RobotNodeConfig, {"topics.cameras": ["front"], "topics.camera_topics": ["/cam/front"],
                                        "image_size": 16, "topics.ee_pose_source": "tf"})
    written = write_bag(tmp_path / "bag", 0.5, with_actions=True, pose_via_tf=True)
    import_bags(tmp_path / "bag", tmp_path / "out", cfg)
    ep = next(EpisodeStore(tmp_path / "out").episodes(skip_bad=False))
    for k, (t, _) in enumerate(written["actions"]):
        assert np.allclose(ep.frames["state"][k], expected_obs(t, cfg)["state"], atol=1e-5), k


def test_bad_bags_are_clear_errors(tmp_path: Path) -> None:
    cfg = node_cfg()
    with pytest.raises(DatasetError, match="no rosbag2 bag"):
        import_bags(tmp_path, tmp_path / "out", cfg)
    write_bag(tmp_path / "b" / "episode_1", 0.5, with_actions=True)
    other = from_params(RobotNodeConfig, {"topics.cameras": ["side"], "topics.camera_topics": ["/cam/side"],
                                          "image_size": 16})
    with pytest.raises(DatasetError, match=r"episode_1: no messages on /cam/side"):
        import_bags(tmp_path / "b", tmp_path / "out", other)
    mcap = next((tmp_path / "b" / "episode_1").glob("*.mcap"))
    mcap.write_bytes(mcap.read_bytes()[:200])
    with pytest.raises(DatasetError, match="episode_1"):
        import_bags(tmp_path / "b", tmp_path / "out", cfg)
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out.partial-*"))
