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

from robot_rl.specs import ArraySpec, ObsSpec

HOME_QUAT = np.array([0.0, 1.0, 0.0, 0.0])  # the twin's pointing-down reference (w, x, y, z)


@dataclass
class Sample:
    value: Any
    stamp: float
    """Sender's time stamp (s), from the message header; falls back to the arrival time."""
    received: float
    """Local monotonic arrival time (s): staleness is judged on this clock."""


class SensorCache:
    """Newest sample per sensor (plus the previous pose for velocities); thread-safe."""

    def __init__(self, required: Sequence[str], clock: Callable[[], float] = time.monotonic) -> None:
        self.required = tuple(required)
        self.clock = clock
        self._lock = threading.Lock()
        self._latest: dict[str, Sample] = {}
        self._previous_pose: Sample | None = None
        self.received = {name: 0 for name in required}

    def put(self, name: str, value: Any, stamp: float | None = None) -> None:
        now = self.clock()
        with self._lock:
            if name == "ee_pose" and "ee_pose" in self._latest:
                self._previous_pose = self._latest["ee_pose"]
            self._latest[name] = Sample(value, now if stamp is None else stamp, now)
            self.received[name] = self.received.get(name, 0) + 1

    def stale(self, max_age_s: float) -> list[str]:
        """Required sensors never received (``name (missing)``) or older than ``max_age_s``."""
        now = self.clock()
        with self._lock:
            out = []
            for name in self.required:
                sample = self._latest.get(name)
                if sample is None:
                    out.append(f"{name} (missing)")
                elif now - sample.received > max_age_s:
                    out.append(f"{name} ({(now - sample.received) * 1e3:.0f} ms old)")
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


def image_to_array(encoding: str, height: int, width: int, step: int, data: bytes | np.ndarray) -> np.ndarray:
    """A raw ``sensor_msgs/Image`` (rgb8, bgr8, rgba8, bgra8) as uint8 (H, W, 3) RGB; other encodings fail."""
    channels = {"rgb8": 3, "bgr8": 3, "rgba8": 4, "bgra8": 4}.get(encoding)
    if channels is None:
        raise ValueError(f"image encoding {encoding!r} not supported (rgb8, bgr8, rgba8, bgra8)")
    buf = np.frombuffer(data, np.uint8) if not isinstance(data, np.ndarray) else data.view(np.uint8).reshape(-1)
    if buf.size < height * step or step < width * channels:
        raise ValueError(f"image data of {buf.size} bytes does not hold {height} rows of step {step}")
    rows = buf[:height * step].reshape(height, step)[:, :width * channels].reshape(height, width, channels)
    rgb = rows[..., :3]
    return rgb[..., ::-1] if encoding.startswith("bgr") else rgb


def resize_square(image: np.ndarray, size: int) -> np.ndarray:
    """Centre-crop to a square, then resize to ``size`` x ``size`` with the project's one image path
    (:func:`robot_rl.images.prepare_frame`: OpenCV, area averaging when shrinking; contiguous copy)."""
    from robot_rl.images import prepare_frame

    h, w = image.shape[:2]
    side = min(h, w)
    return prepare_frame(image, ((w - side) // 2, (h - side) // 2, side, side), (size, size))


def panda_obs_spec(cameras: Sequence[str], image_size: int, n_arm: int = 7) -> ObsSpec:
    """The twin's ``obs=pixels`` spec: state (14 + n_arm) + ``images/<camera>``."""
    fields = {"state": ArraySpec((14 + n_arm,), "float32")}
    for camera in cameras:
        fields[f"images/{camera}"] = ArraySpec((image_size, image_size, 3), "uint8")
    return ObsSpec(fields)


def joint_vector(names: Sequence[str], positions: Sequence[float], wanted: Sequence[str]) -> np.ndarray:
    index = {n: i for i, n in enumerate(names)}
    missing = [n for n in wanted if n not in index]
    if missing:
        raise KeyError(f"joint_states lacks joints {missing}")
    return np.array([positions[index[n]] for n in wanted], np.float64)


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
