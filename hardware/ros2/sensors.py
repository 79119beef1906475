"""Observation assembly from ROS sensor data: pure numpy, no ROS (the node feeds it decoded messages).

The ``state`` vector has the twin's layout (``robot_rl.sim.panda_pick_cube``, 21 entries): TCP position (3),
TCP quaternion w, x, y, z (4, sign kept continuous around the pointing-down home), TCP linear and angular
velocity (3 + 3, finite differences of the two newest pose samples), gripper opening (sum of finger joint
positions) and the arm joint positions. Images are ``images/<camera>``: uint8 HxWx3, centre-cropped to a
square and resized (nearest neighbour) to the spec's size.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from robot_rl.specs import ActionSpec, ArraySpec, ObsSpec

HOME_QUAT = np.array([0.0, 1.0, 0.0, 0.0])  # the twin's pointing-down reference (w, x, y, z)


@dataclass
class Sample:
    value: Any
    stamp: float
    """Sender's time stamp (s, ROS time), from the message header; the arrival time when it had none."""
    received: float
    """Local monotonic arrival time (s)."""
    stamped: bool = False
    """Whether ``stamp`` came from a header (a zero header stamp counts as none)."""


class SensorCache:
    """Newest sample per sensor (plus the previous pose for velocities); thread-safe.

    A sample's age is the larger of its header-stamp age (``stamp_clock() - stamp``, the ROS clock the stamps
    are on) and its arrival age (``clock() - received``): a driver that keeps re-sending old data is stale by its
    stamps, and a sensor that stops is stale by arrival even if its clock runs ahead of ours. Messages with a
    zero stamp are judged on arrival alone."""

    def __init__(self, required: Sequence[str], clock: Callable[[], float] = time.monotonic,
                 stamp_clock: Callable[[], float] = time.time) -> None:
        self.required = tuple(required)
        self.clock, self.stamp_clock = clock, stamp_clock
        self._lock = threading.Lock()
        self._latest: dict[str, Sample] = {}
        self._previous_pose: Sample | None = None
        self.received = {name: 0 for name in required}

    def put(self, name: str, value: Any, stamp: float | None = None) -> None:
        """Store ``value``; ``stamp`` is its header stamp (s) or None/0 when it has none."""
        now = self.clock()
        stamped = stamp is not None and stamp > 0.0
        with self._lock:
            if name == "ee_pose" and "ee_pose" in self._latest:
                self._previous_pose = self._latest["ee_pose"]
            self._latest[name] = Sample(value, float(stamp) if stamped else now, now, stamped)
            self.received[name] = self.received.get(name, 0) + 1

    def stale(self, max_age_s: float) -> list[str]:
        """Required sensors never received (``name (missing)``) or older than ``max_age_s`` (see the class)."""
        now, stamp_now = self.clock(), self.stamp_clock()
        with self._lock:
            out = []
            for name in self.required:
                sample = self._latest.get(name)
                if sample is None:
                    out.append(f"{name} (missing)")
                    continue
                arrival_age = now - sample.received
                stamp_age = stamp_now - sample.stamp if sample.stamped else -np.inf
                if stamp_age > max_age_s and stamp_age >= arrival_age:
                    out.append(f"{name} ({stamp_age * 1e3:.0f} ms old by its header stamp)")
                elif arrival_age > max_age_s:
                    out.append(f"{name} ({arrival_age * 1e3:.0f} ms old)")
            return out

    def snapshot(self) -> tuple[dict[str, Sample], Sample | None]:
        with self._lock:
            return dict(self._latest), self._previous_pose

    def get(self, name: str) -> Any:
        with self._lock:
            sample = self._latest.get(name)
        if sample is None:
            raise KeyError(f"no {name} received yet")
        return sample.value


def canonical_quat(q_wxyz: np.ndarray) -> np.ndarray:
    q = np.asarray(q_wxyz, np.float64)
    return -q if float(q @ HOME_QUAT) < 0.0 else q


def quat_mul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    aw, ax, ay, az = a
    bw, bx, by, bz = b
    return np.array([aw * bw - ax * bx - ay * by - az * bz, aw * bx + ax * bw + ay * bz - az * by,
                     aw * by - ax * bz + ay * bw + az * bx, aw * bz + ax * by - ay * bx + az * bw])


def quat_rotate(q: np.ndarray, v: np.ndarray) -> np.ndarray:
    return quat_mul(quat_mul(q, np.array([0.0, *v])), q * np.array([1.0, -1, -1, -1]))[1:]


def angular_velocity(q0: np.ndarray, q1: np.ndarray, dt: float) -> np.ndarray:
    """World-frame angular velocity taking orientation ``q0`` to ``q1`` in ``dt`` seconds (rad/s)."""
    dq = quat_mul(q1, q0 * np.array([1.0, -1, -1, -1]))
    if dq[0] < 0:
        dq = -dq
    s = np.linalg.norm(dq[1:])
    if s < 1e-12:
        return np.zeros(3)
    return dq[1:] / s * (2.0 * np.arctan2(s, dq[0])) / dt


def compose_chain(edges: Mapping[str, tuple[str, np.ndarray, np.ndarray]], base: str, child: str
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Pose (xyz, quat wxyz) of ``child`` in ``base`` from tf edges ``child -> (parent, xyz, quat)``."""
    pos, quat = np.zeros(3), np.array([1.0, 0.0, 0.0, 0.0])
    frame, hops = child, 0
    while frame != base:
        if frame not in edges or hops > 64:
            raise KeyError(f"no tf chain from {base!r} to {child!r} (stuck at {frame!r})")
        parent, t, q = edges[frame]
        pos, quat = np.asarray(t) + quat_rotate(np.asarray(q), pos), quat_mul(np.asarray(q), quat)
        frame, hops = parent, hops + 1
    return pos, quat


_CHANNELS = {"rgb8": 3, "bgr8": 3, "rgba8": 4, "bgra8": 4, "mono8": 1, "8UC1": 1, "8UC3": 3}


def image_to_array(encoding: str, height: int, width: int, step: int, data: bytes | np.ndarray) -> np.ndarray:
    """A raw ``sensor_msgs/Image`` (rgb8, bgr8, rgba8, bgra8, mono8) as uint8 (H, W, 3) RGB (mono repeated into
    three channels; ``8UC3`` is read as bgr8, OpenCV's order); other encodings fail with the list above."""
    channels = _CHANNELS.get(encoding)
    if channels is None:
        raise ValueError(f"image encoding {encoding!r} not supported ({', '.join(_CHANNELS)})")
    buf = np.frombuffer(data, np.uint8) if not isinstance(data, np.ndarray) else data.view(np.uint8).reshape(-1)
    if buf.size < height * step or step < width * channels:
        raise ValueError(f"image data of {buf.size} bytes does not hold {height} rows of step {step}")
    rows = buf[:height * step].reshape(height, step)[:, :width * channels].reshape(height, width, channels)
    if channels == 1:
        return np.repeat(rows, 3, axis=2)
    rgb = rows[..., :3]
    return rgb[..., ::-1] if encoding.startswith("bgr") or encoding == "8UC3" else rgb


def decode_compressed_bytes(fmt: str, data: bytes | np.ndarray) -> np.ndarray:
    """A ``sensor_msgs/CompressedImage`` payload (JPEG or PNG, as image_transport's compressed plugin sends it)
    as uint8 (H, W, 3) RGB, through OpenCV's decoder. ``fmt`` is the message's ``format`` field (``jpeg``,
    ``rgb8; jpeg compressed bgr8``, ``png``...): colour payloads are BGR on the wire, mono ones are repeated."""
    import cv2

    buf = np.frombuffer(bytes(data) if isinstance(data, (list, bytearray)) else data, np.uint8) \
        if not isinstance(data, np.ndarray) else data.view(np.uint8).reshape(-1)
    if buf.size == 0:
        raise ValueError(f"empty compressed image (format {fmt!r})")
    image = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED)
    if image is None:
        raise ValueError(f"compressed image (format {fmt!r}, {buf.size} bytes) is not a JPEG or PNG OpenCV "
                         "can decode")
    if image.dtype != np.uint8:  # 16-bit PNG (depth cameras): not a colour camera image
        raise ValueError(f"compressed image decoded to {image.dtype}, expected 8-bit (format {fmt!r})")
    if image.ndim == 2:
        return np.repeat(image[:, :, None], 3, axis=2)
    if image.shape[2] == 4:
        return np.ascontiguousarray(cv2.cvtColor(image, cv2.COLOR_BGRA2RGB))
    return np.ascontiguousarray(image[..., ::-1])  # imdecode returns BGR


def decode_image_msg(msg: Any) -> np.ndarray:
    """A camera message as uint8 (H, W, 3) RGB at its native size: ``sensor_msgs/Image`` (rgb8, bgr8, mono8,
    rgba8, bgra8) or ``sensor_msgs/CompressedImage`` (JPEG/PNG; told apart by its ``format`` field). Cropping and
    resizing come after, per camera (``robot_rl.images.prepare_frame``). Bad input raises ValueError."""
    if hasattr(msg, "format"):
        return decode_compressed_bytes(str(msg.format), msg.data)
    data = msg.data
    data = bytes(data) if isinstance(data, (list, bytearray)) else data
    if getattr(msg, "is_bigendian", 0) and msg.encoding not in _CHANNELS:
        raise ValueError(f"big-endian {msg.encoding} images are not supported")
    return image_to_array(str(msg.encoding), int(msg.height), int(msg.width), int(msg.step), data)


def centre_square(height: int, width: int) -> tuple[int, int, int, int]:
    """The largest centred square ``(x, y, side, side)`` of a ``height`` x ``width`` frame."""
    side = min(height, width)
    return (width - side) // 2, (height - side) // 2, side, side


def camera_configs(cfg: Any) -> dict[str, Any]:
    """One :class:`robot_rl.images.CameraConfig` per camera of a ``RobotNodeConfig``: ``camera_crops`` (4 per
    camera, in ``topics.cameras`` order; None = centre square) and the spec's square ``image_size``."""
    from robot_rl.images import CameraConfig

    crops = tuple(cfg.camera_crops)
    out = {}
    for i, camera in enumerate(cfg.topics.cameras):
        crop = tuple(crops[4 * i:4 * i + 4]) if crops else None
        out[camera] = CameraConfig(crop=crop, size=(cfg.image_size, cfg.image_size))
    return out


def camera_image(image: np.ndarray, camera: Any, name: str) -> np.ndarray:
    """A decoded native frame (H, W, 3) as the policy's image, through the pixel route's per-camera function
    (:func:`robot_rl.images.prepare_camera`: crop, then OpenCV resize with area averaging when shrinking); a
    camera without a configured crop uses the frame's centre square (resolved per frame, as sizes may differ).
    A crop that does not fit the frame raises ``robot_rl.images.ImageError``."""
    from robot_rl.images import CameraConfig, prepare_camera

    if camera.crop is None:
        camera = CameraConfig(crop=centre_square(*image.shape[:2]), size=camera.size)
    return prepare_camera(image, camera, name)


def panda_obs_spec(cameras: Sequence[str], image_size: int, n_arm: int = 7) -> ObsSpec:
    """The twin's ``obs=pixels`` spec: state (14 + n_arm) + ``images/<camera>``."""
    fields = {"state": ArraySpec((14 + n_arm,), "float32")}
    for camera in cameras:
        fields[f"images/{camera}"] = ArraySpec((image_size, image_size, 3), "uint8")
    return ObsSpec(fields)


def node_specs(cfg: Any) -> tuple[ObsSpec, ActionSpec]:
    """Obs and action specs of the robot node for a :class:`~robot_rl.hardware.ros2.config.RobotNodeConfig`:
    the live env (``RosRobotEnv``) and bag import (``robot-rl data import-bag``) share them, so episodes
    imported from bags carry the spec hash of the robot's own run."""
    topics, n_arm = cfg.topics, len(cfg.arm_joints)
    cartesian = cfg.command.mode == "cartesian_pose"
    names = ("dx", "dy", "dz") if cartesian else tuple(f"d_{j}" for j in cfg.arm_joints)
    has_gripper = bool(topics.gripper_command)
    action_spec = ActionSpec((len(names) + int(has_gripper),), (-1.0,), (1.0,),
                             names + (("grip",) if has_gripper else ()))
    return panda_obs_spec(topics.cameras, cfg.image_size, n_arm), action_spec


def joint_vector(names: Sequence[str], positions: Sequence[float], wanted: Sequence[str]) -> np.ndarray:
    index = {n: i for i, n in enumerate(names)}
    missing = [n for n in wanted if n not in index]
    if missing:
        raise KeyError(f"joint_states lacks joints {missing}")
    return np.array([positions[index[n]] for n in wanted], np.float64)


def measured_position(cache: "SensorCache", cartesian: bool, arm_joints: Sequence[str], n: int) -> np.ndarray:
    """What the limiter compares a command with: the measured TCP position (cartesian modes) or the arm joints
    (n,); NaNs while that sensor has not reported yet (the limiter then stays put)."""
    try:
        if cartesian:
            return np.asarray(cache.get("ee_pose")[0], np.float64)
        names, positions = cache.get("joint_states")
        return joint_vector(names, positions, arm_joints)
    except KeyError:
        return np.full(n, np.nan)


def checked_joint_state(names: Sequence[str], positions: np.ndarray, required: Sequence[str]
                        ) -> tuple[list[str], np.ndarray]:
    """``(names, positions)`` unchanged if every ``required`` joint is present with a finite position, else
    ValueError (the message is dropped: a robot must never be commanded from a NaN). Other joints may be NaN."""
    names, positions = list(names), np.asarray(positions, np.float64)
    if len(names) != positions.shape[0]:
        raise ValueError(f"joint_states has {len(names)} names but {positions.shape[0]} positions")
    values = joint_vector(names, positions, required)
    if not np.isfinite(values).all():
        bad = [n for n, v in zip(required, values) if not np.isfinite(v)]
        raise ValueError(f"non-finite joint positions {bad}")
    return names, positions


def checked_pose(pos: np.ndarray, quat_wxyz: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(pos, quat)`` if finite with a unit-ish quaternion, else ValueError (the message is dropped)."""
    pos, quat = np.asarray(pos, np.float64), np.asarray(quat_wxyz, np.float64)
    if pos.shape != (3,) or quat.shape != (4,) or not (np.isfinite(pos).all() and np.isfinite(quat).all()):
        raise ValueError(f"non-finite or malformed pose {pos} {quat}")
    if abs(float(np.linalg.norm(quat)) - 1.0) > 0.1:
        raise ValueError(f"pose quaternion {quat} is not a unit quaternion")
    return pos, quat


def assemble_state(joints: tuple[Sequence[str], Sequence[float]], pose: Sample, previous_pose: Sample | None,
                   arm_joints: Sequence[str], gripper_joints: Sequence[str]) -> np.ndarray:
    """The 21-entry state vector (see the module docstring) from the newest joint states and poses."""
    names, positions = joints
    q = joint_vector(names, positions, arm_joints)
    grip = joint_vector(names, positions, gripper_joints).sum() if gripper_joints else 0.0
    pos, quat = pose.value
    lin, ang = np.zeros(3), np.zeros(3)
    if previous_pose is not None and pose.stamp - previous_pose.stamp > 1e-4:
        dt = pose.stamp - previous_pose.stamp
        lin = (np.asarray(pos) - np.asarray(previous_pose.value[0])) / dt
        ang = angular_velocity(np.asarray(previous_pose.value[1]), np.asarray(quat), dt)
    state = np.concatenate([pos, canonical_quat(np.asarray(quat)), lin, ang, [grip], q]).astype(np.float32)
    if not np.isfinite(state).all():
        raise ValueError(f"non-finite state assembled from sensors: {state}")
    return state
