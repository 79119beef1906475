"""rosbag2 (MCAP or sqlite3) recordings of the robot node's topics -> our episode store
(``robot-rl data import-bag BAG_DIR OUT``), read with ``rosbags`` (pure Python: no ROS install needed).

One bag is one episode (the node writes ``<bag_dir>/episode_<n>``; a teleoperation recording with ``ros2 bag
record`` works too). Topics, cameras, image size, joints, command mode and control rate come from the node's
parameter file (:class:`~robot_rl.hardware.ros2.config.RobotNodeConfig`), and observations are assembled by the
node's own code (``assemble_state``, ``camera_image``), so imported episodes match live ones and carry the
robot run's spec hash.

Steps: when the bag holds ``/robot_rl/action`` (the node records each action it sent), one step per action,
observed from the newest sensor messages at that moment, with ``/robot_rl/reward``. Otherwise (a plain
recording) the sensors are resampled to ``control_hz``: at each tick the newest message of each sensor, and the
action that moves the commanded target from one tick to the next (``(target[k+1] - target[k]) / action_scale``,
clipped to [-1, 1]; gripper +1 = closed); ``topics.success`` (True) ends the episode with reward 1.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from robot_rl.datasets.common import DatasetError, atomic_output_dir
from robot_rl.episode_store import EpisodeStore
from robot_rl.specs import SpecError, spec_hash
from robot_rl.types import Episode

log = logging.getLogger("robot_rl.datasets")
ACTION_TOPIC, REWARD_TOPIC = "/robot_rl/action", "/robot_rl/reward"


@dataclass
class Series:
    """One topic's messages in log-time order."""

    times: list[int] = field(default_factory=list)
    """Log (receive) time of each message, ns."""
    values: list[Any] = field(default_factory=list)

    def newest(self, t_ns: int) -> int:
        """Index of the newest message logged at or before ``t_ns``; -1 when none."""
        return int(np.searchsorted(np.asarray(self.times), t_ns, side="right")) - 1


def find_bags(bag_dir: str | Path) -> list[Path]:
    """``bag_dir`` itself when it is a bag (has ``metadata.yaml``), else its bag subdirectories, sorted."""
    bag_dir = Path(bag_dir)
    if (bag_dir / "metadata.yaml").is_file():
        return [bag_dir]
    bags = sorted(p for p in bag_dir.iterdir() if (p / "metadata.yaml").is_file()) if bag_dir.is_dir() else []
    if not bags:
        raise DatasetError(f"{bag_dir}: no rosbag2 bag (a directory with metadata.yaml) here or one level down")
    return bags


def _stamp(msg: Any) -> float:
    return float(msg.header.stamp.sec) + 1e-9 * float(msg.header.stamp.nanosec)


def _read(bag: Path, topics: set[str]) -> dict[str, Series]:
    from rosbags.rosbag2 import Reader
    from rosbags.typesys import Stores, get_typestore

    store = get_typestore(Stores.ROS2_JAZZY)  # the standard messages the node uses (same across distros)
    out: dict[str, Series] = {}
    try:
        with Reader(bag) as reader:
            conns = [c for c in reader.connections if c.topic in topics]
            for conn, t_ns, raw in reader.messages(connections=conns):
                try:
                    msg = store.deserialize_cdr(raw, conn.msgtype)
                except Exception as e:
                    raise DatasetError(f"{bag}: a {conn.msgtype} message on {conn.topic} at {t_ns} ns does not "
                                       f"decode: {e}") from e
                series = out.setdefault(conn.topic, Series())
                series.times.append(int(t_ns))
                series.values.append(msg)
    except DatasetError:
        raise
    except Exception as e:  # rosbags' own errors: a truncated mcap, a broken metadata.yaml
        raise DatasetError(f"{bag}: unreadable bag: {e}") from e
    return out


class _Sensors:
    """The node's observation at any log time, from the recorded sensor messages."""

    def __init__(self, bag: Path, cfg: Any, series: dict[str, Series]) -> None:
        from robot_rl.hardware.ros2.sensors import compose_chain

        self.bag, self.cfg, topics = bag, cfg, cfg.topics
        self.joints = self._need(series, topics.joint_states)
        if topics.ee_pose_source == "topic":
            poses = self._need(series, topics.ee_pose)
            self.pose = Series(poses.times, [((m.pose.position.x, m.pose.position.y, m.pose.position.z),
                                              (m.pose.orientation.w, m.pose.orientation.x, m.pose.orientation.y,
                                               m.pose.orientation.z), _stamp(m)) for m in poses.values])
        else:  # tf: compose base -> ee after every tf message, as the node does
            merged = sorted([(t, m) for name in ("/tf", "/tf_static") for t, m in
                             zip(series.get(name, Series()).times, series.get(name, Series()).values)],
                            key=lambda x: x[0])
            edges: dict[str, tuple[str, np.ndarray, np.ndarray]] = {}
            self.pose = Series()
            for t, msg in merged:
                for tf in msg.transforms:
                    tr, q = tf.transform.translation, tf.transform.rotation
                    edges[tf.child_frame_id] = (tf.header.frame_id, np.array([tr.x, tr.y, tr.z]),
                                                np.array([q.w, q.x, q.y, q.z]))
                try:
                    pos, quat = compose_chain(edges, topics.base_frame, topics.ee_frame)
                except KeyError:
                    continue
                self.pose.times.append(t)
                self.pose.values.append((tuple(pos), tuple(quat), _stamp(msg.transforms[-1])))
            if not self.pose.times:
                raise DatasetError(f"{bag}: /tf never links {topics.base_frame} to {topics.ee_frame}")
        suffix = "/compressed" if topics.compressed_images else ""
        self.cameras = {c: self._need(series, t + suffix) for c, t in zip(topics.cameras, topics.camera_topics)}
        self._image_cache: dict[tuple[str, int], np.ndarray] = {}

    def _need(self, series: dict[str, Series], topic: str) -> Series:
        if topic not in series or not series[topic].times:
            raise DatasetError(f"{self.bag}: no messages on {topic} (a sensor of the configured robot node)")
        return series[topic]

    def start_ns(self) -> int:
        """First log time at which every sensor has a message."""
        return max(s.times[0] for s in (self.joints, self.pose, *self.cameras.values()))

    def end_ns(self) -> int:
        return max(s.times[-1] for s in (self.joints, self.pose, *self.cameras.values()))

    def measured(self, t_ns: int) -> np.ndarray:
        """The commanded quantity's measurement: TCP position (Cartesian mode) or arm joint positions."""
        from robot_rl.hardware.ros2.sensors import joint_vector

        if self.cfg.command.mode == "cartesian_pose":
            return np.asarray(self.pose.values[self.pose.newest(t_ns)][0], np.float64)
        msg = self.joints.values[self.joints.newest(t_ns)]
        return joint_vector(list(msg.name), np.asarray(msg.position, np.float64), self.cfg.arm_joints)

    def observe(self, t_ns: int) -> dict[str, np.ndarray]:
        from robot_rl.hardware.ros2.sensors import Sample, assemble_state, camera_configs, camera_image

        j, p = self.joints.newest(t_ns), self.pose.newest(t_ns)
        if j < 0 or p < 0 or any(s.newest(t_ns) < 0 for s in self.cameras.values()):
            raise DatasetError(f"{self.bag}: at {t_ns} ns not every sensor has reported yet")
        msg = self.joints.values[j]
        pos, quat, stamp = self.pose.values[p]
        pose = Sample((np.asarray(pos), np.asarray(quat)), stamp, 0.0)
        prev = None
        if p > 0:
            ppos, pquat, pstamp = self.pose.values[p - 1]
            prev = Sample((np.asarray(ppos), np.asarray(pquat)), pstamp, 0.0)
        try:
            state = assemble_state((list(msg.name), np.asarray(msg.position, np.float64)), pose, prev,
                                   self.cfg.arm_joints, self.cfg.gripper_joints)
        except (KeyError, ValueError) as e:
            raise DatasetError(f"{self.bag}: at {t_ns} ns: {e}") from e
        obs = {"state": state}
        for cam, series in self.cameras.items():
            i = series.newest(t_ns)
            if (cam, i) not in self._image_cache:
                self._image_cache[(cam, i)] = camera_image(self._decode(series.values[i], cam),
                                                           camera_configs(self.cfg)[cam], cam)
            obs[f"images/{cam}"] = self._image_cache[(cam, i)]
        return obs

    def _decode(self, msg: Any, cam: str) -> np.ndarray:
        from robot_rl.hardware.ros2.sensors import image_to_array

        try:
            if self.cfg.topics.compressed_images:
                import cv2

                image = cv2.imdecode(np.asarray(msg.data, np.uint8), cv2.IMREAD_COLOR)
                if image is None:
                    raise ValueError("compressed image does not decode")
                return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
            return image_to_array(msg.encoding, msg.height, msg.width, msg.step, np.asarray(msg.data, np.uint8))
        except ValueError as e:
            raise DatasetError(f"{self.bag}: camera {cam!r}: {e}") from e


def _command_target(msg: Any, mode: str) -> np.ndarray:
    if mode == "cartesian_pose":
        p = msg.pose.position
        return np.array([p.x, p.y, p.z])
    if mode == "joint_trajectory":
        return np.asarray(msg.points[0].positions, np.float64)
    return np.asarray(msg.data, np.float64)


def bag_episode(bag: Path, cfg: Any, episode_id: int, control_hz: float | None = None,
                actor_id: str = "rosbag") -> Episode:
    """One bag -> one episode (see the module docstring for how steps are found)."""
    from robot_rl.hardware.ros2.sensors import node_specs

    obs_spec, action_spec = node_specs(cfg)
    topics = cfg.topics
    wanted = {topics.joint_states, topics.ee_pose, "/tf", "/tf_static", topics.command, topics.gripper_command,
              topics.success, ACTION_TOPIC, REWARD_TOPIC}
    wanted |= {t + ("/compressed" if topics.compressed_images else "") for t in topics.camera_topics}
    series = _read(bag, wanted)
    sensors = _Sensors(bag, cfg, series)
    meta: dict[str, Any] = {"source": "rosbag2", "bag": str(bag)}
    if ACTION_TOPIC in series:  # recorded by our node: its own steps
        acts = series[ACTION_TOPIC]
        rewards = series.get(REWARD_TOPIC, Series())
        if len(rewards.values) < len(acts.values):
            raise DatasetError(f"{bag}: {len(acts.values)} actions but {len(rewards.values)} rewards on "
                               f"{REWARD_TOPIC}")
        times = [t for t in acts.times if t >= sensors.start_ns()]
        if not times:
            raise DatasetError(f"{bag}: no action after every sensor has reported")
        skip = len(acts.times) - len(times)
        action = np.stack([np.asarray(m.data, np.float32) for m in acts.values[skip:]])
        reward = np.asarray([float(m.data[0]) for m in rewards.values[skip:len(acts.values)]], np.float32)
        tick_times = times + [rewards.times[len(acts.values) - 1]]
        meta["steps_from"] = ACTION_TOPIC
    else:  # a plain recording: resample to the control rate, actions from the commanded targets
        hz = float(control_hz or cfg.control_hz)
        period = int(round(1e9 / hz))
        start, end = sensors.start_ns(), sensors.end_ns()
        tick_times = list(range(start, end + 1, period))
        if len(tick_times) < 2:
            raise DatasetError(f"{bag}: under one control period ({1 / hz:.3f} s) of sensor data")
        if topics.command not in series:
            raise DatasetError(f"{bag}: no {ACTION_TOPIC} and no commands on {topics.command}: the actions "
                               "cannot be recovered")
        cmds, mode = series[topics.command], cfg.command.mode
        scale = cfg.command.action_scale if mode == "cartesian_pose" else cfg.command.joint_action_scale

        def target(t: int) -> np.ndarray:
            i = cmds.newest(t)
            return _command_target(cmds.values[i], mode) if i >= 0 else sensors.measured(t)

        targets = [target(t) for t in tick_times]
        move = np.clip(np.diff(np.stack(targets), axis=0) / scale, -1.0, 1.0)
        columns = [move]
        if topics.gripper_command:
            grips = series.get(topics.gripper_command, Series())
            middle = 0.5 * (cfg.command.gripper_open + cfg.command.gripper_closed)
            closed_is_low = cfg.command.gripper_closed < cfg.command.gripper_open
            grip = []
            for t in tick_times[1:]:
                i = grips.newest(t)
                value = float(grips.values[i].data[0]) if i >= 0 else cfg.command.gripper_open
                grip.append(1.0 if (value <= middle) == closed_is_low else -1.0)
            columns.append(np.asarray(grip)[:, None])
        action = np.concatenate(columns, axis=1).astype(np.float32)
        reward = np.zeros(len(action), np.float32)
        succ = series.get(topics.success, Series())
        success_times = [t for t, m in zip(succ.times, succ.values) if m.data]
        if success_times:  # the episode ends at the first tick at or after the success signal
            k = int(np.searchsorted(np.asarray(tick_times[1:]), success_times[0]))
            if k < len(action):
                action, reward = action[:k + 1], reward[:k + 1]
                reward[-1] = 1.0
                tick_times = tick_times[:k + 2]
        meta.update(steps_from="resampled", control_hz=hz)
    steps = len(action)
    obs = [sensors.observe(t) for t in tick_times]
    frames = {k: np.stack([o[k] for o in obs]) for k in obs_spec.fields}
    success_at = np.flatnonzero(reward > 0)
    if success_at.size:  # the node ends an episode at success: anything after it is not part of the episode
        steps = int(success_at[0]) + 1
        action, reward = action[:steps], reward[:steps]
        frames = {k: v[:steps + 1] for k, v in frames.items()}
    terminated = np.zeros(steps, bool)
    truncated = np.zeros(steps, bool)
    if success_at.size:
        terminated[-1] = True
    else:
        truncated[-1] = True
    episode = Episode(frames=frames, action=action.reshape(steps, *action_spec.shape), policy_action=action.copy(),
                      reward=reward, terminated=terminated, truncated=truncated, intervened=np.zeros(steps, bool),
                      actor_id=actor_id, episode_id=episode_id, spec_hash=spec_hash(obs_spec, action_spec),
                      success=bool(success_at.size), task=cfg.task, meta=meta)
    try:
        episode.to_batch().check(obs_spec, action_spec)
    except SpecError as e:
        raise DatasetError(f"{bag}: {e}") from e
    return episode


def import_bags(bag_dir: str | Path, out: str | Path, cfg: Any, control_hz: float | None = None,
                actor_id: str = "rosbag") -> dict[str, Any]:
    """Every bag under ``bag_dir`` -> one episode each in a new store ``out`` (atomically)."""
    from robot_rl.hardware.ros2.sensors import node_specs

    bags = find_bags(bag_dir)
    steps = 0
    with atomic_output_dir(out) as tmp:
        store = EpisodeStore(tmp, fsync=False)
        for i, bag in enumerate(bags):
            episode = bag_episode(bag, cfg, i, control_hz, actor_id)
            store.write(episode)
            steps += len(episode)
        hash_ = spec_hash(*node_specs(cfg))
        (tmp / "import.json").write_text(json.dumps({"source": str(bag_dir), "bags": [str(b) for b in bags],
                                                     "spec_hash": hash_, "steps": steps}, indent=1))
    return {"episodes": len(bags), "steps": steps, "spec_hash": hash_, "out": str(out)}
